// Package notify delivers the notifications of notify actions to their
// targets besides the log: webhooks (a JSON document POSTed with retries
// and backoff) and desktop sessions. Each target has a bounded queue and
// at most one worker, so a dead webhook or a hung desktop fills its own
// queue and drops, counted, while events and other targets go on. The
// mqtt target hands the webhook's document to the broker's outbox
// (Publisher), which never waits either.
//
// Desktop notifications go through a helper process, and here is why.
//
// A desktop notification is a call of org.freedesktop.Notifications.Notify
// on the session bus of the user of an active graphical session
// (Desktop Notifications Specification 1.2). The daemon is root; the bus
// is the user's, and the bus authenticates a client by the credentials
// the kernel attached to its socket (SO_PEERCRED), so:
//
//   - godbus connecting as root and claiming the user's uid in EXTERNAL
//     auth is refused by the bus; connecting as root and being accepted
//     would be worse: a root daemon never connects to a user's bus.
//   - Changing one thread's uid (raw setresuid on a locked OS thread) and
//     connecting from it would pass the bus's check, but the root daemon
//     would then parse whatever the user's bus (a socket the user controls)
//     sends, the thread would be signalable by the user while it holds the
//     user's ids, and the Go runtime knows nothing of per-thread ids.
//   - gdbus(1) or notify-send(1) as the user would work, but need packages
//     a server may lack, and gdbus parses its arguments as GVariant text,
//     so a label like 'x' would lose its quotes unless re-quoted.
//
// So the daemon re-executes its own binary (/proc/self/exe, which works
// even after the file was replaced by an upgrade) as a short-lived child
// with the user's uid, gid and groups (SysProcAttr.Credential), an
// environment of only HOTPLUGD_NOTIFY_HELPER=desktop,
// DBUS_SESSION_BUS_ADDRESS=unix:path=RUNUSERDIR/UID/bus, PATH, HOME, USER
// and LOGNAME, and the notification as JSON on stdin. main calls
// RunNotifyHelper first thing, which turns such a child into the helper:
// it connects with godbus as the user it is, calls Notify and exits. The
// child is killed after NotifierConfig.DesktopTimeout. Nothing goes
// through a shell, and the body is markup-escaped because the spec lets
// servers interpret <b>, <i>, <u>, <a href> and <img>. A daemon that is
// not root can notify only its own user, and does so without changing
// ids.
package notify
