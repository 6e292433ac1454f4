package daemon

import (
	"errors"
	"log/slog"
	"os"
	"time"

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
func (n notifier) ready(status string) { n.send("READY=1\nSTATUS=" + status) }

// reloading starts a reload; systemd ≥ 253 (Type=notify-reload) needs the
// MONOTONIC_USEC of when it began.
func (n notifier) reloading() { n.send("RELOADING=1\n" + sd.SdNotifyMonotonicUsec()) }

func (n notifier) stopping() { n.send("STOPPING=1\nSTATUS=stopping") }

func (n notifier) status(s string) { n.send("STATUS=" + s) }

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
