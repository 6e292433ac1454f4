package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	sd "github.com/coreos/go-systemd/v22/daemon"

	"github.com/hotplugd/hotplugd/internal/host"
)

// notifier is the daemon's edge to systemd's notify protocol (sd_notify(3)):
// datagrams on $NOTIFY_SOCKET. Without that variable every call is a no-op.
type notifier struct {
	log *slog.Logger
}

func (n notifier) send(state string) {
	if _, err := sd.SdNotify(false, state); err != nil {
		n.log.Debug("sd_notify failed", "state", state, "err", err)
	}
}

// ready says the socket is bound and the rules compiled.
func (n notifier) ready(status string) { n.send("READY=1\nSTATUS=" + statusLine(status)) }

// reloading starts a reload; systemd ≥ 253 (Type=notify-reload) needs the
// MONOTONIC_USEC of when it began.
func (n notifier) reloading() { n.send("RELOADING=1\n" + sd.SdNotifyMonotonicUsec()) }

func (n notifier) stopping() { n.send("STOPPING=1\nSTATUS=stopping") }

func (n notifier) status(s string) { n.send("STATUS=" + statusLine(s)) }

// maxStatus bounds STATUS=, in bytes: systemd drops a datagram larger
// than its buffer whole, READY=1 with it.
const maxStatus = 1024

// statusLine makes s one line of UTF-8 for STATUS=: the status quotes
// errors, and errors quote device strings, whose newlines would otherwise
// start lines of their own in the datagram (WATCHDOG=trigger, STOPPING=1,
// NOTIFYACCESS=all, ...). Controls, separators and other unprintable
// characters become Go escapes (\n, \x00, \u2028), as do bytes that are
// not UTF-8 (systemd ignores such a status) and the backslash itself; a
// status longer than maxStatus is cut, with "…".
func statusLine(s string) string {
	var b strings.Builder
	for i, r := range s {
		var esc string
		switch {
		case r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD"): // a byte that is not UTF-8
			esc = fmt.Sprintf(`\x%02x`, s[i])
		case r == '\\' || !strconv.IsPrint(r):
			q := strconv.QuoteRune(r)
			esc = q[1 : len(q)-1]
		default:
			esc = string(r)
		}
		if b.Len()+len(esc) > maxStatus-len("…") {
			b.WriteString("…")
			break
		}
		b.WriteString(esc)
	}
	return b.String()
}

func (n notifier) watchdog() { n.send(sd.SdNotifyWatchdog) }

// watchdogInterval is half of WATCHDOG_USEC, or 0 when the watchdog is off
// (or meant for another process).
func watchdogInterval() time.Duration {
	d, err := sd.SdWatchdogEnabled(false)
	if err != nil || d <= 0 {
		return 0
	}
	return d / 2
}

// checkMountNamespace warns when the daemon's mount namespace is not the
// one of PID 1: its mounts would then be invisible to the rest of the
// system (a unit with PrivateTmp=, ProtectSystem=, PrivateMounts= ... gets
// a namespace of its own).
func checkMountNamespace(log *slog.Logger, roots host.Roots) {
	self, err1 := os.Readlink(roots.ProcPath("self", "ns", "mnt"))
	init, err2 := os.Readlink(roots.ProcPath("1", "ns", "mnt"))
	switch {
	case err1 != nil || err2 != nil:
		log.Debug("cannot compare mount namespaces with PID 1", "err", errors.Join(err1, err2))
	case self != init:
		log.Warn("hotplugd runs in a mount namespace of its own: filesystems it mounts are INVISIBLE to the rest of the system; remove PrivateTmp=, ProtectSystem=, ProtectHome=, PrivateMounts=, PrivateDevices= and ReadOnlyPaths= from the unit",
			"self", self, "pid1", init)
	}
}
