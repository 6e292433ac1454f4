package route

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// handle applies the sender checks (as the uevent listener does) in
// order, the first that fails deciding the counter, then decodes the
// message and applies what it says.
func (l *Listener) handle(b []byte, s sender) {
	l.stats.received.Add(1)
	switch {
	case s.truncated:
		l.drop(&l.stats.truncated, "truncated", b, s, nil)
		return
	case s.port != 0:
		// Only the kernel sends from port 0: anyone may send to our
		// port, and CAP_NET_ADMIN may multicast to our groups.
		l.drop(&l.stats.sender, "sender is not the kernel", b, s, nil)
		return
	case !s.hasCreds:
		l.drop(&l.stats.creds, "no credentials", b, s, nil)
		return
	case s.uid != 0:
		l.drop(&l.stats.creds, "sender uid is not 0", b, s, nil)
		return
	}
	msgs, err := decode(b, l.msgs[:0])
	l.msgs = msgs[:0]
	if err != nil {
		l.drop(&l.stats.parse, "malformed", b, s, err)
		return
	}
	l.stats.accepted.Add(1)
	for i := range msgs {
		l.apply(&msgs[i], s)
	}
	clear(msgs)
}

// apply applies one decoded message to the state, and to the dump in
// progress when it belongs to it.
func (l *Listener) apply(m *msg, s sender) {
	ours := l.dump.phase != idle && s.groups == 0 && m.seq == l.dump.seq
	if ours && m.intr {
		// The kernel says the dump is inconsistent: something changed
		// while it was made, so it may lack an object. Try again, but
		// not for ever while a link flaps; the changes themselves still
		// arrive.
		l.dump.spoiled = true
		l.dump.again = l.dump.again || l.spoiledInARow < maxRedumps
	}
	switch m.kind {
	case kindLink:
		l.st.applyLink(m.link)
	case kindAddr:
		if !l.st.applyAddr(m.addr) && l.dump.phase == idle {
			// The RTM_NEWLINK of its link was lost. During a dump the
			// links are being learnt already, and asking again for one
			// the kernel does not list would never end.
			l.log.Warn("route: an address of a link not heard of; reading every link and address again",
				"ifindex", m.addr.key.index)
			l.startDump()
		}
	case kindDone:
		if ours {
			l.dumpDone()
		}
	case kindError:
		if ours {
			l.dump.err = fmt.Errorf("route: the kernel refused to list links and addresses: errno %d", -m.errno)
			l.log.Error("route: dump refused; the next overrun tries again", "err", l.dump.err)
			l.dump.phase, l.dump.again = idle, false
		}
	}
}

// headLen is how much of a dropped message is logged.
const headLen = 64

// drop counts a dropped message and logs it at debug level. A message
// from the kernel that cannot be used may have been part of a dump in
// progress, which then must not conclude that what it lacks is gone.
func (l *Listener) drop(c *atomic.Uint64, reason string, b []byte, s sender, err error) {
	c.Add(1)
	if s.port == 0 && l.dump.phase != idle {
		l.dump.spoiled = true
	}
	if !l.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	ok, suppressed := l.dropLog.Allow(time.Now())
	if !ok {
		return
	}
	// The message is data from an untrusted sender: an attribute, never
	// part of the format.
	l.log.Debug("dropped route message", "reason", reason, "error", err,
		"port", s.port, "groups", s.groups, "uid", s.uid, "pid", s.pid, "creds", s.hasCreds,
		"len", len(b), "head", fmt.Sprintf("%x", b[:min(len(b), headLen)]), "suppressed", suppressed)
}
