package route

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/listener"
	"github.com/hotplugd/hotplugd/internal/ratelimit"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// syncTimeout bounds the first reading of the links and addresses in
// New; the kernel answers in milliseconds even with thousands of them.
const syncTimeout = 30 * time.Second

// Config says how to listen. The zero value uses the default buffer and
// the real /sys, and announces nothing of what is there at start.
type Config struct {
	// RcvBuf is the receive buffer size in bytes; 0 means
	// listener.DefaultRcvBuf. Tests shrink it to provoke overruns.
	RcvBuf int
	// Roots are the host directories: sysfs gives each interface its
	// devpath.
	Roots host.Roots
	// Initial announces, when Run starts, the links that are up or have
	// a carrier and the addresses that are present when New returns, as
	// events with source coldplug (the daemon's coldplug setting).
	Initial bool
}

// Handler receives the events of a Listener, one at a time, from the
// goroutine of Run. A handler that blocks stops the reading; the kernel
// queues into the receive buffer meanwhile and, once it is full, drops
// messages, which the listener then recovers by itself.
type Handler interface {
	Event(uevent.Event)
}

// Stats counts what a Listener has seen. Received is the number of
// messages (datagrams) read; each was either accepted or dropped for
// exactly one reason. One message may make no event, or several.
type Stats struct {
	Received         uint64 // messages read from the socket
	Accepted         uint64 // messages believed and decoded
	DroppedTruncated uint64 // longer than the receive buffer (MSG_TRUNC)
	DroppedSender    uint64 // not sent by the kernel (port id ≠ 0)
	DroppedCreds     uint64 // no SCM_CREDENTIALS, or a uid other than 0
	DroppedParse     uint64 // malformed netlink or rtnetlink
	Overruns         uint64 // ENOBUFS reports: messages lost in the kernel
	Dumps            uint64 // readings of every link and address: at start, after overruns
	Events           uint64 // events passed to the Handler
}

// Dropped is the sum of the drop counters.
func (s Stats) Dropped() uint64 {
	return s.DroppedTruncated + s.DroppedSender + s.DroppedCreds + s.DroppedParse
}

// sender is what the socket says about one message besides its bytes.
type sender struct {
	port      uint32 // netlink port id of the sender; 0 is the kernel
	groups    uint32 // group mask it was multicast to; 0 for unicast
	hasCreds  bool   // an SCM_CREDENTIALS control message was attached
	uid       uint32
	pid       int32
	truncated bool // MSG_TRUNC: cut to fit the buffer
}

// conn is the socket as the Listener sees it: the seam for tests.
type conn interface {
	// receive blocks for the next message; the bytes are valid until the
	// next call. It returns errOverrun on ENOBUFS and errClosed once
	// close was called.
	receive() ([]byte, sender, error)
	// send sends a request to the kernel.
	send(b []byte) error
	// close releases the socket and unblocks receive; it may be called
	// more than once and concurrently with receive.
	close() error
}

var (
	errClosed  = errors.New("route listener closed")
	errOverrun = errors.New("receive buffer overrun (ENOBUFS)")
)

// counters are the live form of Stats.
type counters struct {
	received, accepted, truncated, sender, creds, parse atomic.Uint64
	overrun, dumps, events                              atomic.Uint64
}

// Listener reads link and address changes from NETLINK_ROUTE.
type Listener struct {
	conn    conn
	log     *slog.Logger
	stats   counters
	running atomic.Bool
	sys     *os.Root // sysfs, for devpaths; nil when it cannot be opened
	once    sync.Once

	// Only touched by New, then by the goroutine of Run.
	st   state
	dump dump
	// spoiledInARow counts the last dumps that could not conclude.
	spoiledInARow int
	msgs          []msg
	initial       []uevent.Event // Config.Initial: announced when Run starts
	dropLog       *ratelimit.Limiter
	overrunLog    *ratelimit.Limiter
}

// New opens and binds the socket, so changes are queued from the moment
// it returns, and reads every link and address the kernel has: the state
// later messages are compared with. Run reads them.
func New(cfg Config, log *slog.Logger) (*Listener, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rcvbuf := cfg.RcvBuf
	if rcvbuf <= 0 {
		rcvbuf = listener.DefaultRcvBuf
	}
	c, err := open(rcvbuf, log)
	if err != nil {
		return nil, err
	}
	sys, err := os.OpenRoot(cfg.Roots.WithDefaults().Sys)
	if err != nil {
		log.Warn("route: cannot open sysfs; events get the devpath of a virtual interface", "err", err)
	}
	l := newListener(c, sys, log)
	if err := l.sync(syncTimeout); err != nil {
		l.Close()
		return nil, err
	}
	if cfg.Initial {
		l.initial = l.st.snapshot()
	}
	return l, nil
}

// newListener wraps an open conn; tests pass fakes, and a nil sys.
func newListener(c conn, sys *os.Root, log *slog.Logger) *Listener {
	l := &Listener{
		conn:       c,
		log:        log,
		sys:        sys,
		dropLog:    &ratelimit.Limiter{Period: time.Second, Burst: 10},
		overrunLog: &ratelimit.Limiter{Period: time.Second, Burst: 5},
	}
	l.st.init(sysfs{sys}.devpath)
	return l
}

// Source is uevent.SourceRoute.
func (l *Listener) Source() uevent.Source { return uevent.SourceRoute }

// Stats returns a snapshot of the counters. It is safe to call at any
// time, also while Run runs.
func (l *Listener) Stats() Stats {
	c := &l.stats
	return Stats{
		Received:         c.received.Load(),
		Accepted:         c.accepted.Load(),
		DroppedTruncated: c.truncated.Load(),
		DroppedSender:    c.sender.Load(),
		DroppedCreds:     c.creds.Load(),
		DroppedParse:     c.parse.Load(),
		Overruns:         c.overrun.Load(),
		Dumps:            c.dumps.Load(),
		Events:           c.events.Load(),
	}
}

// Close closes the socket. Run closes it itself when it returns; Close is
// for a Listener that is not run, and makes a running Run return nil.
func (l *Listener) Close() error {
	err := l.conn.close()
	if !l.running.Load() { // else Run, which reads sysfs, closes it
		l.closeSys()
	}
	return err
}

func (l *Listener) closeSys() {
	l.once.Do(func() {
		if l.sys != nil {
			l.sys.Close()
		}
	})
}

// Run reads messages until ctx is cancelled or Close is called, and then
// returns nil; it passes each event to h, first those of Config.Initial.
// It returns an error only when the socket fails for good. A Listener
// runs once.
func (l *Listener) Run(ctx context.Context, h Handler) error {
	if !l.running.CompareAndSwap(false, true) {
		return errors.New("route: Run called twice")
	}
	// Closing the socket is what unblocks the read.
	stop := context.AfterFunc(ctx, func() { l.conn.close() })
	defer func() {
		stop()
		l.conn.close()
		l.closeSys()
	}()
	for _, ev := range l.initial {
		l.stats.events.Add(1)
		h.Event(ev)
	}
	l.initial = nil
	for {
		err := l.step()
		switch {
		case errors.Is(err, errClosed):
			return nil
		case err != nil:
			return fmt.Errorf("route: receive: %w", err)
		}
		l.deliver(h)
	}
}

// step reads and handles one message, or an overrun.
func (l *Listener) step() error {
	b, s, err := l.conn.receive()
	switch {
	case err == nil:
		l.handle(b, s)
	case errors.Is(err, errOverrun):
		n := l.stats.overrun.Add(1)
		if ok, suppressed := l.overrunLog.Allow(time.Now()); ok {
			l.log.Warn("route receive buffer overrun: messages were lost; reading every link and address again",
				"overruns", n, "suppressed", suppressed)
		}
		l.lost()
	default:
		return err
	}
	return nil
}

// deliver hands the events of the last message to h.
func (l *Listener) deliver(h Handler) {
	for i := range l.st.out {
		l.stats.events.Add(1)
		h.Event(l.st.out[i])
	}
	clear(l.st.out)
	l.st.out = l.st.out[:0]
}

// sync reads the links and addresses once, making no events, within
// timeout.
func (l *Listener) sync(timeout time.Duration) error {
	var timedOut atomic.Bool
	t := time.AfterFunc(timeout, func() { timedOut.Store(true); l.conn.close() })
	defer t.Stop()
	l.startDump()
	for l.dump.phase != idle {
		if err := l.step(); err != nil {
			if timedOut.Load() {
				return fmt.Errorf("route: the kernel did not list links and addresses within %v", timeout)
			}
			return fmt.Errorf("route: reading links and addresses: %w", err)
		}
		clear(l.st.out)
		l.st.out = l.st.out[:0]
	}
	if l.dump.err != nil {
		return l.dump.err
	}
	return nil
}
