package listener

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

func TestMain(m *testing.M) {
	if child := os.Getenv(childEnv); child != "" {
		os.Exit(runChild(child))
	}
	goleak.VerifyTestMain(m)
}

// childEnv makes the test binary run a helper (see runChild) instead of the
// tests, for checks that need another uid.
const childEnv = "HOTPLUGD_LISTENER_TEST_CHILD"

// fakeConn plays back msgs, then reports errClosed, or with block set
// waits for close first.
type fakeConn struct {
	msgs   []fakeMsg
	block  bool
	once   sync.Once
	done   chan struct{}
	closes int
	mu     sync.Mutex
}

type fakeMsg struct {
	b   []byte
	s   sender
	err error
}

func newFakeConn(block bool, msgs ...fakeMsg) *fakeConn {
	return &fakeConn{msgs: msgs, block: block, done: make(chan struct{})}
}

func (f *fakeConn) receive() ([]byte, sender, error) {
	if len(f.msgs) > 0 {
		m := f.msgs[0]
		f.msgs = f.msgs[1:]
		return m.b, m.s, m.err
	}
	if f.block {
		<-f.done
	}
	return nil, sender{}, errClosed
}

func (f *fakeConn) close() error {
	f.mu.Lock()
	f.closes++
	f.mu.Unlock()
	f.once.Do(func() { close(f.done) })
	return nil
}

// recorder is a Handler that remembers what it was given.
type recorder struct {
	mu     sync.Mutex
	events []uevent.Event
	calls  []string // "event SEQNUM" or "overrun", in order
}

func (r *recorder) Event(ev uevent.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	r.calls = append(r.calls, "event "+strconv.FormatUint(ev.Seqnum, 10))
}

func (r *recorder) Overrun() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "overrun")
}

// kernelMsg is a net lo change as the kernel sends it, captured on this
// machine's kernel (6.18) with the given SEQNUM.
func kernelMsg(seqnum int) []byte {
	return []byte("change@/devices/virtual/net/lo\x00ACTION=change\x00DEVPATH=/devices/virtual/net/lo\x00" +
		"SUBSYSTEM=net\x00SYNTH_UUID=0\x00INTERFACE=lo\x00IFINDEX=1\x00SEQNUM=" + strconv.Itoa(seqnum) + "\x00")
}

// udevMsg wraps properties (NUL-terminated) in udevd's group-2 header:
// "libudev\0", magic 0xfeedcafe big-endian, then header size, properties
// offset and length in host order, then filter hashes and bloom (zero).
func udevMsg(magic uint32, props string) []byte {
	b := make([]byte, 40, 40+len(props))
	copy(b, "libudev\x00")
	binary.BigEndian.PutUint32(b[8:], magic)
	binary.NativeEndian.PutUint32(b[12:], 40)
	binary.NativeEndian.PutUint32(b[16:], 40)
	binary.NativeEndian.PutUint32(b[20:], uint32(len(props)))
	return append(b, props...)
}

const udevLoProps = "UDEV_DATABASE_VERSION=1\x00ACTION=change\x00DEVPATH=/devices/virtual/net/lo\x00SUBSYSTEM=net\x00" +
	"SYNTH_UUID=0\x00INTERFACE=lo\x00IFINDEX=1\x00SEQNUM=842\x00USEC_INITIALIZED=1554491\x00"

var (
	fromKernel = sender{port: 0, hasCreds: true, uid: 0}
	fromUdevd  = sender{port: 812, groups: 2, hasCreds: true, uid: 0, pid: 812}
)

func TestChecks(t *testing.T) {
	tests := []struct {
		name  string
		group uint32
		b     []byte
		s     sender
		want  Stats // Received is always 1
	}{
		{"kernel lo change", groupKernel, kernelMsg(1), fromKernel, Stats{Accepted: 1}},
		{"udevd lo change", groupUdev, udevMsg(0xfeedcafe, udevLoProps), fromUdevd, Stats{Accepted: 1}},
		{"truncated before anything else", groupKernel, kernelMsg(1),
			sender{truncated: true, port: 99}, Stats{DroppedTruncated: 1}},
		{"forged kernel event from a userspace port", groupKernel, kernelMsg(1),
			sender{port: 4242, hasCreds: true}, Stats{DroppedSender: 1}},
		{"sender checked before credentials", groupKernel, kernelMsg(1),
			sender{port: 4242, uid: 1000, hasCreds: true}, Stats{DroppedSender: 1}},
		{"kernel port without credentials", groupKernel, kernelMsg(1),
			sender{}, Stats{DroppedCreds: 1}},
		{"kernel port with uid 1000", groupKernel, kernelMsg(1),
			sender{hasCreds: true, uid: 1000}, Stats{DroppedCreds: 1}},
		{"udev group from uid 1000", groupUdev, udevMsg(0xfeedcafe, udevLoProps),
			sender{port: 5, groups: 2, hasCreds: true, uid: 1000}, Stats{DroppedCreds: 1}},
		{"udev message sent to our port only", groupUdev, udevMsg(0xfeedcafe, udevLoProps),
			sender{port: 812, groups: 0, hasCreds: true}, Stats{DroppedSender: 1}},
		{"libudev message on the kernel group", groupKernel, udevMsg(0xfeedcafe, udevLoProps),
			fromKernel, Stats{DroppedUdevHeader: 1}},
		{"kernel message on the udev group", groupUdev, kernelMsg(1),
			fromUdevd, Stats{DroppedUdevHeader: 1}},
		{"udev group with a wrong magic", groupUdev, udevMsg(0xcafefeed, udevLoProps),
			fromUdevd, Stats{DroppedUdevHeader: 1}},
		{"udev group with a bare prefix", groupUdev, []byte("libudev\x00"),
			fromUdevd, Stats{DroppedUdevHeader: 1}},
		{"kernel devpath outside /devices", groupKernel,
			[]byte("add@/../etc\x00ACTION=add\x00DEVPATH=/../etc\x00SUBSYSTEM=block\x00SEQNUM=1\x00"),
			fromKernel, Stats{DroppedParse: 1}},
		{"kernel message not NUL-terminated", groupKernel, kernelMsg(1)[:20], fromKernel, Stats{DroppedParse: 1}},
		{"empty message", groupKernel, nil, fromKernel, Stats{DroppedParse: 1}},
		{"udev properties malformed", groupUdev, udevMsg(0xfeedcafe, "ACTION=change\x00garbage\x00"),
			fromUdevd, Stats{DroppedParse: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &recorder{}
			l := newListener(newFakeConn(false, fakeMsg{b: tt.b, s: tt.s}), tt.group, testLogger(t))
			if err := l.Run(context.Background(), r); err != nil {
				t.Fatalf("Run: %v", err)
			}
			tt.want.Received = 1
			if diff := cmp.Diff(tt.want, l.Stats()); diff != "" {
				t.Errorf("Stats (-want +got):\n%s", diff)
			}
			if got := uint64(len(r.events)); got != tt.want.Accepted {
				t.Fatalf("delivered %d events, want %d", got, tt.want.Accepted)
			}
			if len(r.events) == 1 {
				ev := r.events[0]
				if ev.DevPath != "/devices/virtual/net/lo" || ev.Source != l.Source() {
					t.Errorf("delivered %+v, want lo from %s", ev, l.Source())
				}
			}
		})
	}
}

func TestOverrunIsNotFatal(t *testing.T) {
	c := newFakeConn(false,
		fakeMsg{b: kernelMsg(1), s: fromKernel},
		fakeMsg{err: errOverrun},
		fakeMsg{b: kernelMsg(5), s: fromKernel},
	)
	r := &recorder{}
	l := newListener(c, groupKernel, testLogger(t))
	if err := l.Run(context.Background(), r); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if diff := cmp.Diff([]string{"event 1", "overrun", "event 5"}, r.calls); diff != "" {
		t.Errorf("handler calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(Stats{Received: 2, Accepted: 2, Overruns: 1}, l.Stats()); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
}

func TestReceiveErrorEndsRun(t *testing.T) {
	c := newFakeConn(false, fakeMsg{err: os.NewSyscallError("recvmsg", syscall.EBADF)})
	l := newListener(c, groupKernel, testLogger(t))
	err := l.Run(context.Background(), &recorder{})
	if !errors.Is(err, syscall.EBADF) {
		t.Fatalf("Run = %v, want an error wrapping EBADF", err)
	}
	if c.closes == 0 {
		t.Error("socket not closed after Run returned")
	}
}

func TestStop(t *testing.T) {
	for _, how := range []string{"cancel", "Close"} {
		t.Run(how, func(t *testing.T) {
			c := newFakeConn(true, fakeMsg{b: kernelMsg(1), s: fromKernel})
			l := newListener(c, groupKernel, testLogger(t))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := &recorder{}
			done := make(chan error, 1)
			go func() { done <- l.Run(ctx, r) }()
			waitFor(t, "the event", func() bool { return l.Stats().Accepted == 1 })
			if how == "cancel" {
				cancel()
			} else {
				l.Close()
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Run = %v, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after stop")
			}
			if err := l.Run(context.Background(), r); err == nil {
				t.Error("second Run returned nil, want an error")
			}
		})
	}
}

func TestDropLogRateLimited(t *testing.T) {
	h := &captureHandler{}
	forged := kernelMsg(7)
	msgs := make([]fakeMsg, 100)
	for i := range msgs {
		msgs[i] = fakeMsg{b: forged, s: sender{port: 4242, hasCreds: true}}
	}
	l := newListener(newFakeConn(false, msgs...), groupKernel, slog.New(h))
	if err := l.Run(context.Background(), &recorder{}); err != nil {
		t.Fatal(err)
	}
	if got := l.Stats().DroppedSender; got != 100 {
		t.Errorf("DroppedSender = %d, want 100", got)
	}
	recs := h.records()
	// All 100 drops happen well within one second.
	if len(recs) != 10 {
		t.Fatalf("%d log records for 100 drops, want 10 (the burst)", len(recs))
	}
	r := recs[0]
	if r.Level != slog.LevelDebug || r.Message != "dropped uevent" {
		t.Errorf("record %v %q, want a debug \"dropped uevent\"", r.Level, r.Message)
	}
	attrs := map[string]string{}
	r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
	if attrs["head"] != string(forged[:headLen]) || attrs["port"] != "4242" || attrs["reason"] != "sender is not the kernel" {
		t.Errorf("record attributes %q: want the message head, port 4242 and the reason", attrs)
	}
}

func TestDetectSource(t *testing.T) {
	dir := t.TempDir()
	if got := DetectSource(filepath.Join(dir, "missing")); got != uevent.SourceKernel {
		t.Errorf("no socket: %s, want kernel", got)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := DetectSource(file); got != uevent.SourceKernel {
		t.Errorf("regular file: %s, want kernel", got)
	}
	sock := filepath.Join(dir, "control")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	if got := DetectSource(sock); got != uevent.SourceUdev {
		t.Errorf("listening socket: %s, want udev", got)
	}
	ln.Close()
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("stale socket file gone: %v", err)
	}
	if got := DetectSource(sock); got != uevent.SourceKernel {
		t.Errorf("stale socket of a dead udevd: %s, want kernel", got)
	}
}

func TestCheckNetNS(t *testing.T) {
	mk := func(t *testing.T, self, init string) string {
		proc := t.TempDir()
		for pid, target := range map[string]string{"self": self, "1": init} {
			if target == "" {
				continue
			}
			if err := os.MkdirAll(filepath.Join(proc, pid, "ns"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, filepath.Join(proc, pid, "ns", "net")); err != nil {
				t.Fatal(err)
			}
		}
		return proc
	}
	tests := []struct {
		name, self, init string
		want             slog.Level // level of the one record expected; 0 for none
	}{
		{"same namespace", "net:[4026531833]", "net:[4026531833]", 0},
		{"other namespace", "net:[4026532301]", "net:[4026531833]", slog.LevelWarn},
		{"pid 1 unreadable", "net:[4026532301]", "", slog.LevelDebug},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &captureHandler{}
			checkNetNS(host.Roots{Proc: mk(t, tt.self, tt.init)}, slog.New(h))
			recs := h.records()
			switch {
			case tt.want == 0 && len(recs) != 0:
				t.Errorf("logged %q, want nothing", recs[0].Message)
			case tt.want != 0 && (len(recs) != 1 || recs[0].Level != tt.want):
				t.Errorf("logged %d records %v, want one at %v", len(recs), recs, tt.want)
			}
		})
	}
}

func TestNewRejectsUnknownSource(t *testing.T) {
	_, err := New(Config{Source: "kernell"}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), `"kernell"`) {
		t.Fatalf("New = %v, want an error naming the source", err)
	}
}

// BenchmarkHandle measures the checks and the parse of one message,
// without the kernel: what the listener adds to uevent.Parse.
func BenchmarkHandle(b *testing.B) {
	msg := []byte("add@/devices/virtual/block/loop0/loop0p1\x00ACTION=add\x00DEVPATH=/devices/virtual/block/loop0/loop0p1\x00" +
		"SUBSYSTEM=block\x00MAJOR=259\x00MINOR=0\x00DEVNAME=loop0p1\x00DEVTYPE=partition\x00DISKSEQ=21\x00PARTN=1\x00SEQNUM=864\x00")
	l := newListener(newFakeConn(false), groupKernel, slog.New(slog.DiscardHandler))
	var n countHandler
	b.ReportAllocs()
	for b.Loop() {
		l.handle(msg, fromKernel, &n)
	}
	if int(n) != b.N {
		b.Fatalf("accepted %d of %d", n, b.N)
	}
}

type countHandler int

func (c *countHandler) Event(uevent.Event) { *c++ }
func (c *countHandler) Overrun()           {}

// captureHandler is a slog.Handler that keeps every record, at any level.
type captureHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *captureHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *captureHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r.Clone())
	return nil
}
func (h *captureHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *captureHandler) WithGroup(string) slog.Handler      { return h }

func (h *captureHandler) records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.recs...)
}

// testLogger logs through t.Log, at debug level.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// waitFor polls cond for up to 10 seconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
