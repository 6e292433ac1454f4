package listener

// Integration tests against the real kernel. They need root (to write
// sysfs uevent files, set up loop devices and forge netlink messages);
// with CI=true a missing prerequisite fails the test instead of skipping
// it.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/looptest"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

const (
	loUevent  = "/sys/class/net/lo/uevent"
	loDevPath = "/devices/virtual/net/lo"
	udevd     = "/lib/systemd/systemd-udevd"
)

func inCI() bool {
	v, _ := strconv.ParseBool(os.Getenv("CI"))
	return v
}

// need skips the test when a prerequisite is missing, or fails it in CI.
func need(t testing.TB, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatalf("missing prerequisite (CI=true): %s", msg)
	}
	t.Skipf("missing prerequisite: %s", msg)
}

func needRoot(t testing.TB) {
	t.Helper()
	need(t, os.Geteuid() == 0, "root (euid is %d)", os.Geteuid())
	err := unix.Access(loUevent, unix.W_OK)
	need(t, err == nil, "writable %s: %v", loUevent, err)
}

func needCmd(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	need(t, err == nil, "%s: %v", name, err)
	return p
}

// newUUID returns a random UUID; the kernel passes a valid one written
// after the action to a uevent file back as SYNTH_UUID.
func newUUID(t testing.TB) string {
	var b [16]byte
	rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// triggerLo makes the kernel send a change uevent for lo carrying uuid.
func triggerLo(t testing.TB, uuid string) {
	t.Helper()
	if err := os.WriteFile(loUevent, []byte("change "+uuid), 0); err != nil {
		t.Fatalf("trigger lo: %v", err)
	}
}

// storm writes "change tag" to lo's uevent file n times, one write(2)
// each, through one open file.
func storm(tag string, n int) error {
	fd, err := unix.Open(loUevent, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	payload := []byte("change " + tag)
	for i := range n {
		if _, err := unix.Pwrite(fd, payload, 0); err != nil {
			return fmt.Errorf("write %d of %d: %w", i+1, n, err)
		}
	}
	return nil
}

// collector passes matching events to a channel; it never blocks Run.
type collector struct {
	match    func(uevent.Event) bool
	ch       chan uevent.Event
	overflow atomic.Int64
	overruns atomic.Int64
}

func newCollector(match func(uevent.Event) bool) *collector {
	return &collector{match: match, ch: make(chan uevent.Event, 4096)}
}

func (c *collector) Event(ev uevent.Event) {
	if !c.match(ev) {
		return
	}
	select {
	case c.ch <- ev:
	default:
		c.overflow.Add(1)
	}
}

func (c *collector) Overrun() { c.overruns.Add(1) }

// expect returns the first collected event that satisfies pred, waiting
// up to 10 seconds.
func (c *collector) expect(t testing.TB, what string, pred func(uevent.Event) bool) uevent.Event {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case ev := <-c.ch:
			if pred(ev) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no %s within 10s (collector overflow %d)", what, c.overflow.Load())
		}
	}
}

// start opens a listener and runs it until the test ends.
func start(t testing.TB, cfg Config, h Handler) *Listener {
	t.Helper()
	l, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, h) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
		t.Logf("listener stats: %+v", l.Stats())
	})
	return l
}

func TestLoChange(t *testing.T) {
	needRoot(t)
	uuid := newUUID(t)
	c := newCollector(func(ev uevent.Event) bool { return ev.DevPath == loDevPath })
	l := start(t, Config{}, c)
	if l.Source() != uevent.SourceKernel {
		t.Fatalf("Source = %s, want kernel", l.Source())
	}
	triggerLo(t, uuid)
	ev := c.expect(t, "lo change", func(ev uevent.Event) bool { return ev.Get("SYNTH_UUID") == uuid })
	if ev.Action != "change" || ev.Subsystem != "net" || ev.Source != uevent.SourceKernel || ev.Seqnum == 0 ||
		ev.DevName != "" || ev.Get("ACTION") != "change" || ev.Get("INTERFACE") != "lo" || ev.Get("IFINDEX") != "1" {
		t.Errorf("event %+v: want a kernel change of net lo with a SEQNUM", ev)
	}
	// Other drop counters are not checked: any root process on the
	// machine (another package's test) may send to the group.
	if s := l.Stats(); s.Accepted == 0 || s.DroppedParse != 0 || s.DroppedTruncated != 0 {
		t.Errorf("Stats %+v: want the kernel's messages accepted", s)
	}
}

func TestLoopPartitions(t *testing.T) {
	needRoot(t)
	for _, c := range []string{"losetup", "sfdisk", "partx"} {
		needCmd(t, c)
	}
	// Attach's cleanup deletes the partitions, if still there, and
	// detaches the loop device.
	loop := looptest.Attach(t, looptest.Image(t, 32<<20, "label: dos\n,8MiB,L\n,8MiB,L\n"))
	dev, name := loop.Dev, loop.Name
	parent := "/devices/virtual/block/" + name
	c := newCollector(func(ev uevent.Event) bool { return strings.HasPrefix(ev.DevPath, parent+"/") })
	start(t, Config{}, c)

	for _, step := range []struct{ flag, action string }{{"-a", "add"}, {"-d", "remove"}} {
		if out, err := exec.Command("partx", step.flag, dev).CombinedOutput(); err != nil {
			t.Fatalf("partx %s %s: %v\n%s", step.flag, dev, err, out)
		}
		for _, p := range []string{"1", "2"} {
			part := name + "p" + p
			ev := c.expect(t, step.action+" of "+part, func(ev uevent.Event) bool {
				return ev.DevPath == parent+"/"+part && ev.Action == step.action
			})
			if ev.Subsystem != "block" || ev.DevType != "partition" || ev.DevName != part ||
				ev.Get("PARTN") != p || ev.Get("MAJOR") == "" || ev.Source != uevent.SourceKernel {
				t.Errorf("%s event %+v: want block partition %s", step.action, ev, part)
			}
		}
	}
}

// TestForgedSenderDropped sends, as root, a well-formed uevent to the
// kernel group from a userspace socket: the attack of CVE-2009-1185.
func TestForgedSenderDropped(t *testing.T) {
	needRoot(t)
	forged, real := newUUID(t), newUUID(t)
	c := newCollector(func(ev uevent.Event) bool { return ev.DevPath == loDevPath })
	l := start(t, Config{}, c)

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	msg := "change@" + loDevPath + "\x00ACTION=change\x00DEVPATH=" + loDevPath + "\x00SUBSYSTEM=net\x00SYNTH_UUID=" +
		forged + "\x00INTERFACE=lo\x00IFINDEX=1\x00SEQNUM=1\x00"
	if _, err := uevent.Parse([]byte(msg)); err != nil {
		t.Fatalf("the forged message must be well-formed: %v", err)
	}
	before := l.Stats().DroppedSender
	if err := unix.Sendto(fd, []byte(msg), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: groupKernel}); err != nil {
		t.Fatalf("send to group 1: %v", err)
	}
	waitFor(t, "the forged message to be dropped", func() bool { return l.Stats().DroppedSender > before })

	triggerLo(t, real)
	ev := c.expect(t, "the real event", func(ev uevent.Event) bool {
		u := ev.Get("SYNTH_UUID")
		return u == real || u == forged
	})
	if ev.Get("SYNTH_UUID") == forged {
		t.Fatalf("forged event delivered: %+v", ev)
	}
	for len(c.ch) > 0 {
		if ev := <-c.ch; ev.Get("SYNTH_UUID") == forged {
			t.Fatalf("forged event delivered: %+v", ev)
		}
	}
}

// TestForgedMessages sends, as root, messages from a userspace socket to
// both groups, each failing one check, and checks the real socket path
// reports them: MSG_TRUNC, the sender port, SCM_CREDENTIALS (root may
// claim another uid) and the libudev header.
func TestForgedMessages(t *testing.T) {
	needRoot(t)
	uuid := newUUID(t)
	ours := func(ev uevent.Event) bool { return ev.Get("SYNTH_UUID") == uuid }
	kc := newCollector(ours)
	kernel := start(t, Config{Source: "kernel"}, kc)
	uc := newCollector(ours)
	udev := start(t, Config{Source: "udev"}, uc)

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	// send multicasts to group, or with group 0 sends to port alone.
	send := func(group, port, uid uint32, msg []byte) {
		t.Helper()
		oob := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uid, Gid: uid})
		var mask uint32
		if group != 0 {
			mask = 1 << (group - 1)
		}
		to := &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: mask, Pid: port}
		if _, err := unix.SendmsgN(fd, msg, oob, to, 0); err != nil {
			t.Fatalf("send to group %d port %d: %v", group, port, err)
		}
	}
	props := "ACTION=change\x00DEVPATH=" + loDevPath + "\x00SUBSYSTEM=net\x00SYNTH_UUID=" + uuid + "\x00SEQNUM=1\x00"
	kernelFmt := []byte("change@" + loDevPath + "\x00" + props)
	udevFmt := udevMsg(0xfeedcafe, props)
	for _, m := range [][]byte{kernelFmt, udevFmt} {
		if _, err := uevent.Parse(m); err != nil {
			t.Fatalf("forged messages must be well-formed: %v", err)
		}
	}
	huge := append(bytes.Repeat([]byte("A"), bufSize+1000), 0)

	truncated := func(s Stats) uint64 { return s.DroppedTruncated }
	badSender := func(s Stats) uint64 { return s.DroppedSender }
	badCreds := func(s Stats) uint64 { return s.DroppedCreds }
	badHeader := func(s Stats) uint64 { return s.DroppedUdevHeader }
	steps := []struct {
		name        string
		group, port uint32 // port: unicast to the listener when group is 0
		uid         uint32
		msg         []byte
		l           *Listener
		counter     func(Stats) uint64
	}{
		{"longer than the buffer", groupKernel, 0, 0, huge, kernel, truncated},
		{"kernel group from a userspace port", groupKernel, 0, 0, kernelFmt, kernel, badSender},
		{"unicast to the kernel listener", 0, portOf(t, kernel), 0, kernelFmt, kernel, badSender},
		{"unicast to the udev listener", 0, portOf(t, udev), 0, udevFmt, udev, badSender},
		{"udev group claiming uid 1000", groupUdev, 0, 1000, udevFmt, udev, badCreds},
		{"udev group without the libudev header", groupUdev, 0, 0, kernelFmt, udev, badHeader},
		{"udev group with a wrong magic", groupUdev, 0, 0, udevMsg(0xfeedcaff, props), udev, badHeader},
	}
	for _, st := range steps {
		before := st.counter(st.l.Stats())
		send(st.group, st.port, st.uid, st.msg)
		waitFor(t, st.name+" to be counted", func() bool { return st.counter(st.l.Stats()) == before+1 })
	}
	// The udev group trusts root, as libudev does: only CAP_NET_ADMIN
	// can multicast to it, and udevd runs as root.
	send(groupUdev, 0, 0, udevFmt)
	ev := uc.expect(t, "the root-sent udev message", ours)
	if ev.Source != uevent.SourceUdev {
		t.Errorf("source %s, want udev", ev.Source)
	}
	for _, c := range []*collector{kc, uc} {
		for len(c.ch) > 0 {
			t.Errorf("forged message delivered: %+v", <-c.ch)
		}
	}
}

// portOf returns the netlink port id the kernel gave l's socket.
func portOf(t *testing.T, l *Listener) uint32 {
	t.Helper()
	var sa unix.Sockaddr
	var err error
	if cerr := l.conn.(*netlinkConn).rc.Control(func(fd uintptr) { sa, err = unix.Getsockname(int(fd)) }); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*unix.SockaddrNetlink).Pid
}

// startUdevd runs systemd-udevd until the returned stop is called or the
// test ends, and removes /run/udev after it. When a udevd already
// answers, it is used and left alone.
func startUdevd(t *testing.T) (stop func()) {
	t.Helper()
	_, err := os.Stat(udevd)
	need(t, err == nil, "%s (Debian package udev): %v", udevd, err)
	udevadm := needCmd(t, "udevadm")
	if DetectSource(UdevControl(host.Default())) == uevent.SourceUdev {
		t.Log("a udevd is already running; using it")
		return func() {}
	}
	logf, err := os.Create(filepath.Join(t.TempDir(), "udevd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(udevd)
	cmd.Stdout, cmd.Stderr = logf, logf
	waited := make(chan error, 1)
	var once sync.Once
	stop = func() {
		once.Do(func() {
			defer func() {
				logf.Close()
				if err := os.RemoveAll("/run/udev"); err != nil {
					t.Errorf("remove /run/udev: %v", err)
				}
			}()
			if cmd.Process == nil {
				return
			}
			// udevd serves one control connection at a time: retry
			// while it is busy, then fall back to SIGTERM and SIGKILL.
			for range 3 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				out, err := exec.CommandContext(ctx, udevadm, "control", "--exit").CombinedOutput()
				cancel()
				if err == nil {
					break
				}
				t.Logf("udevadm control --exit: %v: %s", err, out)
				time.Sleep(100 * time.Millisecond)
			}
			for _, sig := range []os.Signal{nil, syscall.SIGTERM, os.Kill} {
				if sig != nil {
					t.Logf("udevd still running; sending %v", sig)
					cmd.Process.Signal(sig)
				}
				select {
				case <-waited:
					return
				case <-time.After(5 * time.Second):
				}
			}
			t.Errorf("udevd (pid %d) did not exit", cmd.Process.Pid)
		})
	}
	t.Cleanup(stop)
	t.Cleanup(func() {
		if t.Failed() {
			log, _ := os.ReadFile(logf.Name())
			t.Logf("udevd log:\n%s", log)
		}
	})
	if err := cmd.Start(); err != nil {
		t.Fatalf("start udevd: %v", err)
	}
	go func() { waited <- cmd.Wait() }()
	// Ready when it answers a ping, not merely when the socket exists.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := exec.CommandContext(ctx, udevadm, "control", "--ping", "--timeout=2").Run()
		cancel()
		if err == nil {
			break
		}
		select {
		case err := <-waited:
			waited <- err
			t.Fatalf("udevd exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("udevd does not answer udevadm control --ping after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return stop
}

func TestUdevSource(t *testing.T) {
	needRoot(t)
	stop := startUdevd(t)

	if got := DetectSource(UdevControl(host.Default())); got != uevent.SourceUdev {
		t.Fatalf("DetectSource with udevd running = %s, want udev", got)
	}
	auto, err := New(Config{Source: "auto"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := auto.Source(); got != uevent.SourceUdev {
		t.Errorf("auto with udevd running picked %s, want udev", got)
	}
	auto.Close()

	uuid := newUUID(t)
	c := newCollector(func(ev uevent.Event) bool { return ev.DevPath == loDevPath })
	l := start(t, Config{Source: "udev"}, c)
	triggerLo(t, uuid)
	ev := c.expect(t, "udev's lo change", func(ev uevent.Event) bool { return ev.Get("SYNTH_UUID") == uuid })
	_, usec := ev.Lookup("USEC_INITIALIZED")
	_, dbver := ev.Lookup("UDEV_DATABASE_VERSION")
	if ev.Source != uevent.SourceUdev || ev.Action != "change" || ev.Subsystem != "net" || !(usec || dbver) {
		t.Errorf("event %+v: want a udev change of lo with udev's properties", ev)
	}
	if s := l.Stats(); s.DroppedParse != 0 || s.Accepted == 0 {
		t.Errorf("Stats %+v: want udevd's messages accepted", s)
	}

	stop()
	if _, err := os.Stat("/run/udev"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("/run/udev left after stopping udevd: %v", err)
	}
	if got := DetectSource(UdevControl(host.Default())); got != uevent.SourceKernel {
		t.Errorf("DetectSource without udevd = %s, want kernel", got)
	}
	auto, err = New(Config{Source: "auto"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := auto.Source(); got != uevent.SourceKernel {
		t.Errorf("auto without udevd picked %s, want kernel", got)
	}
	auto.Close()
}

func TestAutoWithControlPath(t *testing.T) {
	l, err := New(Config{Source: "auto", Roots: host.Roots{Run: t.TempDir()}}, testLogger(t))
	if err != nil {
		if errors.Is(err, syscall.EPROTONOSUPPORT) || errors.Is(err, syscall.EAFNOSUPPORT) {
			need(t, false, "netlink uevent sockets: %v", err)
		}
		t.Fatal(err)
	}
	defer l.Close()
	if l.Source() != uevent.SourceKernel {
		t.Errorf("auto with no control socket picked %s, want kernel", l.Source())
	}
}

// stormCounter counts the events of one storm and checks their order.
type stormCounter struct {
	tag      string
	want     int64
	n        atomic.Int64
	last     uint64 // only touched by Run's goroutine
	disorder atomic.Int64
	overruns atomic.Int64
	done     chan struct{}
	doneAt   time.Time // set before done is closed

	// With gate set, the first event closes gated and waits for a
	// value on gate (or its closing) before the counting goes on.
	gate, gated chan struct{}
}

func newStormCounter(tag string, want int) *stormCounter {
	return &stormCounter{tag: tag, want: int64(want), done: make(chan struct{})}
}

func (s *stormCounter) Event(ev uevent.Event) {
	if ev.Get("SYNTH_UUID") != s.tag {
		return
	}
	if ev.Seqnum <= s.last {
		s.disorder.Add(1)
	}
	s.last = ev.Seqnum
	n := s.n.Add(1)
	if n == 1 && s.gate != nil {
		close(s.gated)
		<-s.gate
	}
	if n == s.want {
		s.doneAt = time.Now()
		close(s.done)
	}
}

func (s *stormCounter) Overrun() { s.overruns.Add(1) }

// wait waits until every event arrived, or none arrived for stall.
func (s *stormCounter) wait(stall time.Duration) bool {
	last, since := s.n.Load(), time.Now()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return true
		case now := <-tick.C:
			if n := s.n.Load(); n != last {
				last, since = n, now
			} else if now.Sub(since) > stall {
				return false
			}
		}
	}
}

func TestStorm(t *testing.T) {
	needRoot(t)
	const n = 100_000
	tag := newUUID(t)
	s := newStormCounter(tag, n)
	l := start(t, Config{}, s)
	begin := time.Now()
	if err := storm(tag, n); err != nil {
		t.Fatal(err)
	}
	wrote := time.Since(begin)
	s.wait(5 * time.Second)
	got := s.n.Load()
	t.Logf("%d writes in %v; received %d", n, wrote, got)
	if got != n {
		t.Errorf("received %d of %d events: %d lost", got, n, n-got)
	}
	if st := l.Stats(); st.Overruns != 0 || s.overruns.Load() != 0 || st.DroppedParse != 0 || st.DroppedTruncated != 0 {
		t.Errorf("Stats %+v, Overrun calls %d: want no overrun and no kernel message dropped", st, s.overruns.Load())
	}
	if d := s.disorder.Load(); d != 0 {
		t.Errorf("%d events out of SEQNUM order", d)
	}
}

// slowHandler blocks on the first event of tag until release is closed,
// so that the kernel overruns a small buffer meanwhile.
type slowHandler struct {
	tag, later string
	release    chan struct{}
	blocked    chan struct{}
	gotLater   chan struct{}
	tagged     atomic.Int64
	laterSeen  atomic.Int64
	overruns   atomic.Int64
}

func (h *slowHandler) Event(ev uevent.Event) {
	switch ev.Get("SYNTH_UUID") {
	case h.tag:
		if h.tagged.Add(1) == 1 {
			close(h.blocked)
			select {
			case <-h.release:
			case <-time.After(30 * time.Second):
			}
		}
	case h.later:
		if h.laterSeen.Add(1) == 1 {
			close(h.gotLater)
		}
	}
}

func (h *slowHandler) Overrun() { h.overruns.Add(1) }

func TestOverrunWithSmallBuffer(t *testing.T) {
	needRoot(t)
	const n = 2000
	h := &slowHandler{
		tag: newUUID(t), later: newUUID(t),
		release: make(chan struct{}), blocked: make(chan struct{}), gotLater: make(chan struct{}),
	}
	l := start(t, Config{RcvBuf: 4096}, h)
	var released bool
	release := func() {
		if !released {
			released = true
			close(h.release)
		}
	}
	defer release()

	triggerLo(t, h.tag)
	select {
	case <-h.blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("first event not received")
	}
	if err := storm(h.tag, n); err != nil {
		t.Fatal(err)
	}
	release()
	waitFor(t, "an overrun", func() bool { return l.Stats().Overruns > 0 })

	// The buffer holds a handful of messages, so events of other
	// processes may overrun it again and take the later event with them:
	// then it is sent again.
	for attempt := 1; ; attempt++ {
		overruns := l.Stats().Overruns
		triggerLo(t, h.later)
		select {
		case <-h.gotLater:
		case <-time.After(2 * time.Second):
			if now := l.Stats().Overruns; now > overruns && attempt < 5 {
				t.Logf("later event lost to another overrun (%d); again", now)
				continue
			}
			t.Fatal("event after the overrun not received")
		}
		break
	}
	if got := h.tagged.Load(); got >= n+1 {
		t.Errorf("received all %d storm events through a %d-byte buffer: no loss to detect", got, 4096)
	}
	if h.overruns.Load() == 0 {
		t.Error("Handler.Overrun not called")
	}
	t.Logf("received %d of %d storm events, overruns %d", h.tagged.Load(), n+1, l.Stats().Overruns)
}

// TestNonRootBufferFallback runs the test binary as nobody: without
// CAP_NET_ADMIN SO_RCVBUFFORCE fails, the listener falls back to SO_RCVBUF
// with a warning giving the size obtained, and still receives events.
func TestNonRootBufferFallback(t *testing.T) {
	needRoot(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary's own directory is private to root.
	dir, err := os.MkdirTemp("", "listener-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "listener.test")
	if err := copyFile(exe, bin); err != nil {
		t.Fatal(err)
	}
	uuid := newUUID(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), childEnv+"=nonroot", "HOTPLUGD_TEST_UUID="+uuid)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var errbuf bytes.Buffer
	cmd.Stderr = &errbuf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if sc.Text() == "READY" {
			triggerLo(t, uuid)
		}
	}
	err = cmd.Wait()
	t.Logf("child output:\n%s%s", out.String(), errbuf.String())
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	m := regexp.MustCompile(`level=WARN msg="cannot force the uevent receive buffer.*" requested=(\d+) obtained=(\d+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatal("no fallback warning with the size obtained")
	}
	if got, _ := strconv.Atoi(m[2]); got <= 0 || got >= DefaultRcvBuf {
		t.Errorf("obtained %d bytes, want a positive size below the %d requested", got, DefaultRcvBuf)
	}
	if !strings.Contains(out.String(), "EVENT change "+loDevPath+"\n") {
		t.Error("the non-root listener did not receive the lo change")
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// runChild runs a helper in a child process started by a test.
func runChild(kind string) int {
	if kind != "nonroot" {
		fmt.Println("unknown child", kind)
		return 2
	}
	fmt.Println("euid", os.Geteuid())
	uuid := os.Getenv("HOTPLUGD_TEST_UUID")
	l, err := New(Config{}, slog.New(slog.NewTextHandler(os.Stdout, nil)))
	if err != nil {
		fmt.Println("New:", err)
		return 1
	}
	c := newCollector(func(ev uevent.Event) bool { return ev.Get("SYNTH_UUID") == uuid })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, c) }()
	fmt.Println("READY")
	code := 0
	select {
	case ev := <-c.ch:
		fmt.Println("EVENT", ev.Action, ev.DevPath)
	case <-time.After(10 * time.Second):
		fmt.Println("TIMEOUT")
		code = 1
	}
	cancel()
	if err := <-done; err != nil {
		fmt.Println("Run:", err)
		code = 1
	}
	return code
}

// BenchmarkReceiveStorm writes b.N changes to lo's uevent file and
// measures how fast they are received and parsed, with the storm size of
// the issue:
//
//	go test -run '^$' -bench ReceiveStorm -benchtime 100000x ./internal/listener
//
// "live" reads while the storm is written, so its rate is bounded by the
// writer (the kernel emits uevents in the writer's write(2)); "backlog"
// holds the reader until the whole storm is queued in the receive buffer
// and then measures how fast the listener drains it: its own capacity.
func BenchmarkReceiveStorm(b *testing.B) {
	b.Run("live", func(b *testing.B) {
		needRoot(b)
		tag := newUUID(b)
		s := newStormCounter(tag, b.N)
		l := start(b, Config{}, s)
		b.ReportAllocs()
		b.ResetTimer()
		begin := time.Now()
		if err := storm(tag, b.N); err != nil {
			b.Fatal(err)
		}
		wrote := time.Since(begin)
		end := time.Now()
		if s.wait(time.Second) {
			end = s.doneAt
		}
		b.StopTimer()
		got := s.n.Load()
		b.ReportMetric(float64(got)/end.Sub(begin).Seconds(), "events/s")
		b.ReportMetric(float64(b.N)/wrote.Seconds(), "writes/s")
		b.ReportMetric(float64(int64(b.N)-got), "lost")
		b.ReportMetric(float64(l.Stats().Overruns), "overruns")
	})
	b.Run("backlog", func(b *testing.B) {
		needRoot(b)
		tag := newUUID(b)
		s := newStormCounter(tag, b.N+1)
		s.gate = make(chan struct{})
		s.gated = make(chan struct{})
		l := start(b, Config{}, s)
		defer close(s.gate) // also on failure; released twice is harmless below
		triggerLo(b, tag)
		<-s.gated
		if err := storm(tag, b.N); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.ResetTimer()
		begin := time.Now()
		s.gate <- struct{}{}
		end := time.Now()
		if s.wait(time.Second) {
			end = s.doneAt
		}
		b.StopTimer()
		got := s.n.Load() - 1
		b.ReportMetric(float64(got)/end.Sub(begin).Seconds(), "events/s")
		b.ReportMetric(float64(int64(b.N)-got), "lost")
		b.ReportMetric(float64(l.Stats().Overruns), "overruns")
	})
}
