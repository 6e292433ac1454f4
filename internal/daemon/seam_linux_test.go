package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/listener"
	"github.com/hotplugd/hotplugd/internal/logtest"
	"github.com/hotplugd/hotplugd/internal/looptest"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
	"golang.org/x/sys/unix"
)

// fakeSource is an event source a test feeds: what the netlink listener
// would deliver, without a kernel.
type fakeSource struct {
	events  chan uevent.Event
	overrun chan struct{}
	mu      sync.Mutex
	closed  bool
}

func newFakeSource() *fakeSource {
	return &fakeSource{events: make(chan uevent.Event), overrun: make(chan struct{})}
}

func (f *fakeSource) Run(ctx context.Context, h listener.Handler) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-f.events:
			h.Event(ev)
		case <-f.overrun:
			h.Overrun()
		}
	}
}

func (f *fakeSource) Source() uevent.Source { return uevent.SourceKernel }
func (f *fakeSource) Stats() listener.Stats { return listener.Stats{} }
func (f *fakeSource) Close() error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	return nil
}

// seam is a daemon on a fake source and the fixture sysfs, serving in
// the background, with its rules in a file the test may rewrite.
type seam struct {
	d      *daemon
	src    *fakeSource
	dir    string // the rules file, the state directory and the markers live here
	rules  string
	cancel context.CancelFunc
	done   chan error
	recs   func() []logtest.Record
}

// fixtureSys is the sysfs of the device package's tests: a USB stick, a
// loop device, lo.
const fixtureSys = "../device/testdata/sys"

func startSeam(t *testing.T, rulesYAML string, mod func(*Config)) *seam {
	t.Helper()
	s := &seam{src: newFakeSource(), dir: t.TempDir(), done: make(chan error, 1)}
	log, recs := logtest.New(t)
	s.recs = recs
	cfg := Config{
		RulesPath:   filepath.Join(s.dir, "rules.yaml"),
		Roots:       host.Roots{Sys: fixtureSys},
		StopTimeout: 2 * time.Second,
		Logger:      log,
		openSource: func(rules.Settings, host.Roots, *slog.Logger) (eventSource, error) {
			return s.src, nil
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	s.rules = cfg.RulesPath
	s.writeRules(t, rulesYAML)
	d, err := newDaemon(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.d = d
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- d.serve(ctx) }()
	t.Cleanup(func() {
		s.stop(t)
		d.close()
		for _, mi := range amMountsUnder(t, filepath.Join(s.dir, "media")) {
			unix.Unmount(mi.Mountpoint, unix.MNT_DETACH)
		}
	})
	return s
}

// writeRules writes the rules file; {{dir}} stands for the test's
// directory.
func (s *seam) writeRules(t *testing.T, yaml string) {
	t.Helper()
	yaml = "settings:\n  state_dir: " + filepath.Join(s.dir, "state") + "\n  mount_root: " + filepath.Join(s.dir, "media") +
		"\n  control: {socket: " + filepath.Join(s.dir, "control") + "}\n" + strings.ReplaceAll(yaml, "{{dir}}", s.dir)
	if err := os.WriteFile(s.rules, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (s *seam) send(t *testing.T, action, devpath, subsystem string, seqnum uint64, kv ...string) {
	t.Helper()
	props := []uevent.Property{{Key: "ACTION", Value: action}, {Key: "DEVPATH", Value: devpath},
		{Key: "SUBSYSTEM", Value: subsystem}, {Key: "SEQNUM", Value: fmt.Sprint(seqnum)}}
	for _, p := range kv {
		k, v, _ := strings.Cut(p, "=")
		props = append(props, uevent.Property{Key: k, Value: v})
	}
	ev, err := uevent.FromProps(props)
	if err != nil {
		t.Fatal(err)
	}
	ev.Source = uevent.SourceKernel
	select {
	case s.src.events <- ev:
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon does not take events")
	}
}

// stop cancels serve and returns how long it took to return.
func (s *seam) stop(t *testing.T) time.Duration {
	t.Helper()
	start := time.Now()
	s.cancel()
	select {
	case err, ok := <-s.done:
		if !ok {
			return 0 // stopped already
		}
		if err != nil {
			t.Errorf("serve: %v", err)
		}
		close(s.done)
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not return after its context ended")
	}
	return time.Since(start)
}

// waitContent waits until path holds at least one whole line and returns
// its content.
func waitContent(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(path)
		if err == nil && len(b) > 0 && b[len(b)-1] == '\n' {
			return string(b)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never appeared: %v", path, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSeamHandle: an event from the source goes through the rules and
// its run action runs with the event's properties.
func TestSeamHandle(t *testing.T) {
	s := startSeam(t, `
  coldplug: false
rules:
  - name: lo-change
    match: subsystem == "net" && action == "change" && env.INTERFACE == "lo"
    actions:
      - run: {argv: [/bin/sh, -c, 'echo "$HOTPLUG_SEQNUM $HOTPLUG_RULE" > {{dir}}/ran']}
`, nil)
	s.send(t, "change", "/devices/virtual/net/lo", "net", 41, "INTERFACE=lo")
	if got := waitContent(t, filepath.Join(s.dir, "ran")); got != "41 lo-change\n" {
		t.Errorf("the action saw %q", got)
	}
	s.stop(t)
	if n := s.d.handled.Load(); n != 1 {
		t.Errorf("handled %d events, want 1", n)
	}
	if ok, failed := s.d.actionsOK.Load(), s.d.actionsFailed.Load(); ok != 1 || failed != 0 {
		t.Errorf("actions %d ok, %d failed; want 1, 0", ok, failed)
	}
}

// TestSeamColdplug: at start every device of sysfs is fed as an "add"
// with source coldplug, and a live "add" of one of them in the coldplug
// window is handled once.
func TestSeamColdplug(t *testing.T) {
	s := startSeam(t, `
  coldplug: true
rules:
  - name: coldplugged
    match: action == "add" && subsystem == "net"
    actions:
      - run: {argv: [/bin/sh, -c, 'echo "$HOTPLUG_SOURCE" >> {{dir}}/{{ env.INTERFACE }}']}
`, nil)
	if got := waitContent(t, filepath.Join(s.dir, "lo")); got != "coldplug\n" {
		t.Errorf("lo's coldplug add ran with %q", got)
	}
	s.stop(t)
	if n := s.d.handled.Load(); n < 5 {
		t.Errorf("coldplug handled %d events; the fixture has more devices", n)
	}
}

// TestSeamReload: a good file replaces the rules; a broken one keeps
// them in force and says why in STATUS=.
func TestSeamReload(t *testing.T) {
	s := startSeam(t, `
  coldplug: false
rules:
  - name: old
    match: subsystem == "net"
    actions:
      - run: {argv: [/bin/sh, -c, 'echo old >> {{dir}}/ran-$HOTPLUG_SEQNUM']}
`, nil)
	s.writeRules(t, `
  coldplug: false
rules:
  - name: new
    match: subsystem == "net"
    actions:
      - run: {argv: [/bin/sh, -c, 'echo new >> {{dir}}/ran-$HOTPLUG_SEQNUM']}
`)
	s.d.reload()
	s.send(t, "change", "/devices/virtual/net/lo", "net", 1)
	if got := waitContent(t, filepath.Join(s.dir, "ran-1")); got != "new\n" {
		t.Errorf("after a good reload the event ran %q", got)
	}
	s.writeRules(t, "rules:\n  - name: broken\n    match: nope\n")
	s.d.reload()
	if st := s.d.status(); !strings.Contains(st, "last error: reload failed") || !strings.Contains(st, "unknown name nope") {
		t.Errorf("STATUS= after a broken reload: %q", st)
	}
	s.send(t, "change", "/devices/virtual/net/lo", "net", 2)
	if got := waitContent(t, filepath.Join(s.dir, "ran-2")); got != "new\n" {
		t.Errorf("after a broken reload the event ran %q, want the rules in force", got)
	}
}

// TestSeamResync: an overrun makes the daemon compare sysfs with what it
// heard: a device that appeared meanwhile gets an "add", a device heard
// of that is gone a "remove", all with source resync. A device present at
// start, with coldplug off, gets nothing; nor does a module heard of,
// which sysfs keeps outside /devices.
func TestSeamResync(t *testing.T) {
	sys := copyFixture(t)
	s := startSeam(t, `
  coldplug: false
rules:
  - name: resync
    match: source == "resync"
    actions:
      - run: {argv: [/bin/sh, -c, 'echo "$HOTPLUG_ACTION" >> {{dir}}/"$(basename "$HOTPLUG_DEVPATH")"']}
`, func(c *Config) { c.Roots.Sys = sys })
	s.send(t, "add", "/devices/virtual/block/gone", "block", 7)
	s.send(t, "add", "/module/usb_storage", "module", 8)
	if !(controlHandlers{s.d}).Settle(t.Context(), 10*time.Second).Settled { // heard of, then lost
		t.Fatal("the daemon did not settle")
	}
	addDevice(t, sys, "devices/virtual/net/new0", "net", "INTERFACE=new0\nIFINDEX=9\n")
	overrun(t, s)
	if got := waitContent(t, filepath.Join(s.dir, "gone")); got != "remove\n" {
		t.Errorf("the vanished device got %q, want remove", got)
	}
	if got := waitContent(t, filepath.Join(s.dir, "new0")); got != "add\n" {
		t.Errorf("the device that appeared got %q, want add", got)
	}
	s.stop(t)
	for _, name := range []string{"lo", "usb_storage", "sdb1"} {
		if b, err := os.ReadFile(filepath.Join(s.dir, name)); err == nil {
			t.Errorf("%s got %q from the resync, want nothing", name, b)
		}
	}
}

// overrun makes the fake source report an overrun.
func overrun(t *testing.T, s *seam) {
	t.Helper()
	select {
	case s.src.overrun <- struct{}{}:
	case <-time.After(10 * time.Second):
		t.Fatal("the overrun was not taken")
	}
}

// copyFixture copies the fixture sysfs, so a test can add devices.
func copyFixture(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sys")
	if out, err := exec.Command("cp", "-a", fixtureSys, dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	return dir
}

// addDevice makes a device directory with a uevent file and a subsystem
// link, as the kernel does when a device appears.
func addDevice(t *testing.T, sys, rel, subsystem, uevent string) {
	t.Helper()
	dir := filepath.Join(sys, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "uevent"), []byte(uevent), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(sys, "class", subsystem), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(sys, "class", subsystem), filepath.Join(dir, "subsystem")); err != nil {
		t.Fatal(err)
	}
}

// TestSeamStopKillsActions: SIGTERM lets running actions finish until
// the stop deadline, then kills them; serve returns soon after.
func TestSeamStopKillsActions(t *testing.T) {
	s := startSeam(t, `
  coldplug: false
rules:
  - name: slow
    match: subsystem == "net"
    actions:
      - run: {argv: [/bin/sh, -c, 'echo > {{dir}}/started; exec sleep 60'], timeout: 5m}
`, func(c *Config) { c.StopTimeout = 200 * time.Millisecond })
	s.send(t, "change", "/devices/virtual/net/lo", "net", 1)
	waitContent(t, filepath.Join(s.dir, "started"))
	if took := s.stop(t); took > 5*time.Second {
		t.Errorf("stop took %v with a 200ms deadline", took)
	}
	if n := s.d.actionsFailed.Load(); n != 1 {
		t.Errorf("%d actions failed, want the killed one", n)
	}
}

// TestSeamOrder: events of one device run one after the other in
// arrival order while an unrelated device's events go on.
func TestSeamOrder(t *testing.T) {
	s := startSeam(t, `
  coldplug: false
rules:
  - name: log
    match: subsystem == "net"
    actions:
      - run: {argv: [/bin/sh, -c, 'if [ "$HOTPLUG_INTERFACE" = slow ] && [ "$HOTPLUG_SEQNUM" = 1 ]; then while [ ! -e {{dir}}/go ]; do sleep 0.01; done; fi; echo "$HOTPLUG_SEQNUM" >> {{dir}}/$HOTPLUG_INTERFACE']}
`, nil)
	s.send(t, "change", "/devices/virtual/net/slow", "net", 1, "INTERFACE=slow")
	s.send(t, "change", "/devices/virtual/net/slow", "net", 2, "INTERFACE=slow")
	s.send(t, "change", "/devices/virtual/net/fast", "net", 3, "INTERFACE=fast")
	if got := waitContent(t, filepath.Join(s.dir, "fast")); got != "3\n" {
		t.Errorf("fast got %q", got)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "slow")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("slow's events ran before the first finished: %v", err)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(s.dir, "slow"))
		if string(b) == "1\n2\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slow: %q, want 1 then 2", b)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSeamSingleInstance: a second daemon on the same state_dir exits
// with a clear error instead of racing the first on its state file.
func TestSeamSingleInstance(t *testing.T) {
	need(t, os.Geteuid() == 0, "root: mounting, and with it the state directory, needs it")
	s := startSeam(t, "  coldplug: false\nrules: []\n", nil)
	cfg := s.d.cfg
	_, err := newDaemon(cfg)
	if !errors.Is(err, mount.ErrLocked) || !strings.Contains(err.Error(), filepath.Join(s.dir, "state")) {
		t.Errorf("second daemon: %v, want %v naming the state directory", err, mount.ErrLocked)
	}
}

// TestSeamReloadRefusesUnsafePath: a reload through a path someone else
// could change is refused and the rules in force stay, in both symlink
// layouts: a file below a user's directory, and root's symlink leading
// into one.
func TestSeamReloadRefusesUnsafePath(t *testing.T) {
	need(t, os.Geteuid() == 0, "root, to hand directories to uid 1000")
	top := t.TempDir()
	os.Chmod(top, 0o755)
	user, safe := filepath.Join(top, "user"), filepath.Join(top, "safe")
	for _, d := range []string{filepath.Join(user, "sub"), filepath.Join(user, "conf"), safe} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	const yaml = `
  coldplug: false
rules:
  - name: old
    match: subsystem == "net"
    actions:
      - run: {argv: [/bin/sh, -c, 'echo ran > {{dir}}/ran-$HOTPLUG_SEQNUM']}
`
	for i, layout := range []struct {
		name, path string
		unsafe     func(t *testing.T)
	}{
		{"file below a user's directory", filepath.Join(user, "sub", "rules.yaml"), func(t *testing.T) {
			if err := os.Chown(user, 1000, 1000); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink into a user's directory", filepath.Join(top, "conf", "rules.yaml"), func(t *testing.T) {
			if err := os.Remove(filepath.Join(top, "conf")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(user, "conf"), filepath.Join(top, "conf")); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(user, 1000, 1000); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(layout.name, func(t *testing.T) {
			os.Chown(user, 0, 0)
			if i == 1 {
				os.Symlink(safe, filepath.Join(top, "conf"))
			}
			s := startSeam(t, yaml, func(c *Config) { c.RulesPath = layout.path })
			if i == 1 {
				copyTo(t, filepath.Join(safe, "rules.yaml"), filepath.Join(user, "conf", "rules.yaml"))
			}
			layout.unsafe(t)
			s.d.reload()
			if st := s.d.status(); !strings.Contains(st, "reload failed: refusing "+layout.path) {
				t.Errorf("STATUS= after reloading through an unsafe path: %q", st)
			}
			s.send(t, "change", "/devices/virtual/net/lo", "net", 1)
			if got := waitContent(t, filepath.Join(s.dir, "ran-1")); got != "ran\n" {
				t.Errorf("the rules in force ran %q", got)
			}
		})
	}
}

func copyTo(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSeamStuckWorker: an event whose action outlives every timeout
// (here one that ignores SIGTERM, with a grace longer than its budget)
// shows in STATUS=, and once every worker is stuck the watchdog is not
// fed, so systemd restarts the daemon.
func TestSeamStuckWorker(t *testing.T) {
	dir, err := os.MkdirTemp("", "hpwd") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", sock)
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", fmt.Sprint(os.Getpid()))

	s := startSeam(t, `
  coldplug: false
  workers: 1
rules:
  - name: stubborn
    match: subsystem == "net"
    actions:
      - run: {argv: [/bin/sh, -c, 'trap "" TERM; echo > {{dir}}/started; sleep 30'], timeout: 100ms}
`, func(c *Config) { c.StopTimeout = 100 * time.Millisecond })
	s.d.inflight.slack = 200 * time.Millisecond
	pings := func(window time.Duration) int {
		n := 0
		buf := make([]byte, 4096)
		for end := time.Now().Add(window); time.Now().Before(end); {
			conn.SetReadDeadline(end)
			m, err := conn.Read(buf)
			if err != nil {
				break
			}
			if strings.Contains(string(buf[:m]), "WATCHDOG=1") {
				n++
			}
		}
		return n
	}
	if n := pings(500 * time.Millisecond); n == 0 {
		t.Fatal("no watchdog ping while idle")
	}
	s.send(t, "change", "/devices/virtual/net/lo", "net", 1)
	waitContent(t, filepath.Join(s.dir, "started"))
	time.Sleep(400 * time.Millisecond) // past 100ms + 200ms
	if st := s.d.status(); !strings.Contains(st, "1 worker stuck past their deadline") {
		t.Errorf("STATUS= with a stuck worker: %q", st)
	}
	pings(50 * time.Millisecond) // those sent before the deadline passed
	if n := pings(600 * time.Millisecond); n != 0 {
		t.Errorf("%d watchdog pings with every worker stuck, want none", n)
	}
}

// TestSeamUnkillableAction: an action asleep in the kernel (reading a
// stalled disk) does not die of SIGKILL; its worker is freed all the
// same, the device's next event is handled, and STATUS= counts the
// process left behind until it is gone.
func TestSeamUnkillableAction(t *testing.T) {
	dev := looptest.Stall(t)
	s := startSeam(t, `
  coldplug: false
rules:
  - name: stuck
    match: subsystem == "net" && seqnum == 1
    actions:
      - run: {argv: [`+strings.Join(dev.ReadArgv(), ", ")+`], timeout: 200ms}
  - name: next
    match: subsystem == "net" && seqnum == 2
    actions:
      - run: {argv: [/bin/sh, -c, 'echo > {{dir}}/next']}
`, nil)
	s.d.deps.Runner.Grace = 200 * time.Millisecond // before any event: read per action
	s.send(t, "change", "/devices/virtual/net/lo", "net", 1)
	s.send(t, "change", "/devices/virtual/net/lo", "net", 2)
	waitContent(t, filepath.Join(s.dir, "next"))
	if st := s.d.status(); !strings.Contains(st, "1 process left behind, alive after SIGKILL") {
		t.Errorf("STATUS= with a process left behind: %q", st)
	}
	dev.Resume()
	for deadline := time.Now().Add(10 * time.Second); strings.Contains(s.d.status(), "alive after SIGKILL"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("STATUS= still says %q after the disk answered", s.d.status())
		}
	}
}
