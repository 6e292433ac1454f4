package listener

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/ratelimit"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// Defaults of Config.
const (
	// DefaultRcvBuf is the receive buffer asked for: big enough for a
	// storm of several hundred thousand uevents (each queued message costs
	// about 1 KiB of buffer) while the consumer is busy.
	DefaultRcvBuf = 128 << 20
)

// Netlink multicast groups of NETLINK_KOBJECT_UEVENT.
const (
	groupKernel = 1 // the kernel's uevents
	groupUdev   = 2 // udevd's re-broadcast of processed events
)

// Config says what to listen to. The zero value listens to the kernel with
// the default buffer.
type Config struct {
	// Source is "kernel" (also when empty), "udev" or "auto": udev when
	// udevd answers on its control socket, kernel otherwise (see
	// DetectSource).
	Source string
	// RcvBuf is the receive buffer size in bytes; 0 means DefaultRcvBuf.
	// Tests shrink it to provoke overruns.
	RcvBuf int
	// Roots are the host directories: procfs for the network namespace
	// check, the runtime root for udevd's control socket.
	Roots host.Roots
}

// UdevControl is udevd's control socket under roots.
func UdevControl(roots host.Roots) string { return roots.RunPath("udev", "control") }

// Handler receives what a Listener accepts. Its methods are called from the
// goroutine of Run, one at a time. A handler that blocks stops the reading:
// the kernel keeps queueing into the receive buffer and, once it is full,
// drops messages and reports an overrun.
type Handler interface {
	// Event is called with each accepted event.
	Event(uevent.Event)
	// Overrun is called when the kernel reported that messages were lost
	// (ENOBUFS). Events from before and after it arrive normally; what
	// was lost in between can only be recovered by re-reading sysfs.
	Overrun()
}

// Stats counts what a Listener has seen. Received is the number of
// messages read; each was either accepted or dropped for exactly one
// reason.
type Stats struct {
	Received          uint64 // messages read from the socket
	Accepted          uint64 // messages passed to the Handler
	DroppedTruncated  uint64 // longer than the receive buffer (MSG_TRUNC)
	DroppedSender     uint64 // kernel group: not sent by the kernel (port id ≠ 0); udev group: not multicast
	DroppedCreds      uint64 // no SCM_CREDENTIALS, or a uid other than 0
	DroppedUdevHeader uint64 // libudev header missing on the udev group, invalid, or present on the kernel group
	DroppedParse      uint64 // rejected by uevent.Parse
	Overruns          uint64 // ENOBUFS reports: messages lost in the kernel
}

// Dropped is the sum of the drop counters.
func (s Stats) Dropped() uint64 {
	return s.DroppedTruncated + s.DroppedSender + s.DroppedCreds + s.DroppedUdevHeader + s.DroppedParse
}

// sender is what the socket says about one message besides its bytes.
type sender struct {
	port      uint32 // netlink port id of the sender; 0 is the kernel
	groups    uint32 // group mask the message was multicast to; 0 for unicast
	hasCreds  bool   // an SCM_CREDENTIALS control message was attached
	uid       uint32 // its uid
	pid       int32  // its pid
	truncated bool   // MSG_TRUNC: the message was cut to fit the buffer
}

// conn is the socket as the Listener sees it: the seam for tests.
type conn interface {
	// receive blocks for the next message. The bytes are valid until the
	// next call. It returns errOverrun on ENOBUFS and errClosed once
	// close was called; it retries EINTR and EAGAIN itself.
	receive() ([]byte, sender, error)
	// close releases the socket and unblocks receive. It may be called
	// more than once and concurrently with receive.
	close() error
}

var (
	errClosed  = errors.New("listener closed")
	errOverrun = errors.New("receive buffer overrun (ENOBUFS)")
)

// udevPrefix starts every message udevd sends to group 2.
var udevPrefix = []byte("libudev\x00")

// counters are the live form of Stats.
type counters struct {
	received, accepted                                   atomic.Uint64
	truncated, sender, creds, udevHeader, parse, overrun atomic.Uint64
}

// Listener reads uevents from one netlink group.
type Listener struct {
	conn    conn
	group   uint32
	source  uevent.Source
	log     *slog.Logger
	stats   counters
	running atomic.Bool

	// Only touched by the goroutine of Run.
	dropLog    *ratelimit.Limiter
	overrunLog *ratelimit.Limiter
}

// New opens and binds the socket for cfg.Source, so events are queued from
// the moment it returns (readiness can be announced then), and warns on
// log when the process is not in the initial network namespace, where the
// kernel sends the uevents of most devices. Run reads them.
func New(cfg Config, log *slog.Logger) (*Listener, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	control := UdevControl(cfg.Roots)
	var src uevent.Source
	switch cfg.Source {
	case "", "kernel":
		src = uevent.SourceKernel
	case "udev":
		src = uevent.SourceUdev
		if DetectSource(control) != uevent.SourceUdev {
			log.Warn("source udev, but udevd does not answer on its control socket: no events until it runs", "control", control)
		}
	case "auto":
		src = DetectSource(control)
		log.Info("source auto", "source", string(src), "control", control)
	default:
		return nil, fmt.Errorf("listener: unknown source %q (want kernel, udev or auto)", cfg.Source)
	}
	group := uint32(groupKernel)
	if src == uevent.SourceUdev {
		group = groupUdev
	}
	rcvbuf := cfg.RcvBuf
	if rcvbuf <= 0 {
		rcvbuf = DefaultRcvBuf
	}
	c, err := open(group, rcvbuf, log)
	if err != nil {
		return nil, err
	}
	checkNetNS(cfg.Roots, log)
	return newListener(c, group, log), nil
}

// newListener wraps an open conn; tests pass fakes.
func newListener(c conn, group uint32, log *slog.Logger) *Listener {
	src := uevent.SourceKernel
	if group == groupUdev {
		src = uevent.SourceUdev
	}
	return &Listener{
		conn:       c,
		group:      group,
		source:     src,
		log:        log,
		dropLog:    &ratelimit.Limiter{Period: time.Second, Burst: 10},
		overrunLog: &ratelimit.Limiter{Period: time.Second, Burst: 5},
	}
}

// Source is the source the listener reads: kernel or udev.
func (l *Listener) Source() uevent.Source { return l.source }

// Stats returns a snapshot of the counters. It is safe to call at any
// time, also while Run runs.
func (l *Listener) Stats() Stats {
	c := &l.stats
	return Stats{
		Received:          c.received.Load(),
		Accepted:          c.accepted.Load(),
		DroppedTruncated:  c.truncated.Load(),
		DroppedSender:     c.sender.Load(),
		DroppedCreds:      c.creds.Load(),
		DroppedUdevHeader: c.udevHeader.Load(),
		DroppedParse:      c.parse.Load(),
		Overruns:          c.overrun.Load(),
	}
}

// Close closes the socket. Run closes it itself when it returns; Close is
// for a Listener that is not run, and makes a running Run return nil.
func (l *Listener) Close() error { return l.conn.close() }

// Run reads messages until ctx is cancelled or Close is called, and then
// returns nil; it passes each accepted event and each overrun to h. It
// returns an error only when the socket fails for good. A Listener runs
// once: the socket is closed when Run returns.
func (l *Listener) Run(ctx context.Context, h Handler) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("listener: Run called twice")
	}
	// Closing the socket is what unblocks the read.
	stop := context.AfterFunc(ctx, func() { l.conn.close() })
	defer func() {
		stop()
		l.conn.close()
	}()
	for {
		b, s, err := l.conn.receive()
		switch {
		case err == nil:
			l.handle(b, s, h)
		case errors.Is(err, errClosed):
			return nil
		case errors.Is(err, errOverrun):
			n := l.stats.overrun.Add(1)
			if ok, suppressed := l.overrunLog.Allow(time.Now()); ok {
				l.log.Warn("uevent receive buffer overrun: events were lost", "overruns", n, "suppressed", suppressed)
			}
			h.Overrun()
		default:
			return fmt.Errorf("listener: receive uevent: %w", err)
		}
	}
}

// handle applies the sender checks (hotplugd.rules(5), SECURITY) in order;
// the first that fails decides the counter.
func (l *Listener) handle(b []byte, s sender, h Handler) {
	l.stats.received.Add(1)
	switch {
	case s.truncated:
		l.drop(&l.stats.truncated, "truncated", b, s, nil)
		return
	case l.group == groupKernel && s.port != 0:
		// Only the kernel sends from port 0; anything else on the
		// kernel group is forged (CVE-2009-1185).
		l.drop(&l.stats.sender, "sender is not the kernel", b, s, nil)
		return
	case l.group == groupUdev && s.groups != 1<<(groupUdev-1):
		// udevd multicasts; a message sent to our port alone did not
		// come from it (libudev drops these too).
		l.drop(&l.stats.sender, "not multicast to the udev group", b, s, nil)
		return
	case !s.hasCreds:
		l.drop(&l.stats.creds, "no credentials", b, s, nil)
		return
	case s.uid != 0:
		l.drop(&l.stats.creds, "sender uid is not 0", b, s, nil)
		return
	}
	if udev := bytes.HasPrefix(b, udevPrefix); udev != (l.group == groupUdev) {
		if udev {
			l.drop(&l.stats.udevHeader, "libudev header on the kernel group", b, s, nil)
		} else {
			l.drop(&l.stats.udevHeader, "no libudev header on the udev group", b, s, nil)
		}
		return
	}
	ev, err := uevent.Parse(b)
	if err != nil {
		if errors.Is(err, uevent.ErrBadUdevHeader) {
			l.drop(&l.stats.udevHeader, "bad libudev header", b, s, err)
		} else {
			l.drop(&l.stats.parse, "malformed", b, s, err)
		}
		return
	}
	l.stats.accepted.Add(1)
	h.Event(ev)
}

// headLen is how much of a dropped message is logged.
const headLen = 96

func (l *Listener) drop(c *atomic.Uint64, reason string, b []byte, s sender, err error) {
	c.Add(1)
	if !l.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	ok, suppressed := l.dropLog.Allow(time.Now())
	if !ok {
		return
	}
	head := b[:min(len(b), headLen)]
	// The message is data from an untrusted sender: an attribute, which
	// the handler quotes, never part of the format.
	l.log.Debug("dropped uevent", "reason", reason, "error", err,
		"port", s.port, "groups", s.groups, "uid", s.uid, "pid", s.pid, "creds", s.hasCreds,
		"len", len(b), "head", string(head), "suppressed", suppressed)
}

// DetectSource returns uevent.SourceUdev when control is a socket that
// accepts a connection, that is, when udevd is running; else
// uevent.SourceKernel. A stale socket file left by a dead udevd refuses
// the connection (ECONNREFUSED). udevd listens with a backlog of one and
// serves one connection at a time, so a busy udevd answers EAGAIN: that
// counts as running.
func DetectSource(control string) uevent.Source {
	fi, err := os.Stat(control)
	if err != nil || fi.Mode().Type() != os.ModeSocket {
		return uevent.SourceKernel
	}
	c, err := net.DialTimeout("unixpacket", control, time.Second)
	switch {
	case err == nil:
		c.Close()
		return uevent.SourceUdev
	case errors.Is(err, syscall.EAGAIN):
		return uevent.SourceUdev
	}
	return uevent.SourceKernel
}

// checkNetNS warns when this process is not in the network namespace of
// pid 1: the kernel sends uevents to the initial namespace (and those of
// a namespace's own network devices to that namespace only), so a daemon
// elsewhere sees almost nothing. When pid 1's namespace cannot be read, as
// in a container, it says so at debug level and does not guess.
func checkNetNS(roots host.Roots, log *slog.Logger) {
	self, err := os.Readlink(roots.ProcPath("self", "ns", "net"))
	if err != nil {
		log.Debug("cannot read own network namespace; not checking it", "error", err)
		return
	}
	init, err := os.Readlink(roots.ProcPath("1", "ns", "net"))
	if err != nil {
		log.Debug("cannot read the network namespace of pid 1; not checking for the initial one", "error", err)
		return
	}
	if self != init {
		log.Warn("not in the initial network namespace: the kernel sends most uevents there, so most will not arrive",
			"netns", self, "initial", init)
	}
}
