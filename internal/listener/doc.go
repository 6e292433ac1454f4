// Package listener receives uevents from the kernel (netlink multicast
// group 1) or from udevd (group 2) on a NETLINK_KOBJECT_UEVENT socket and
// hands on only those it can trust.
//
// Anyone can send a netlink message straight to a listener's port, and a
// process with CAP_NET_ADMIN can multicast to these groups. In 2009 udev
// believed such messages (CVE-2009-1185: a local user could make udev
// create device nodes of its choosing and so gain root). So every message
// is checked before it is parsed: not truncated; on the kernel group, sent
// by the kernel itself (port id 0); on the udev group, multicast to it and
// behind a libudev header; SCM_CREDENTIALS of uid 0, which only root can
// claim. What fails is dropped and counted per reason, never delivered.
//
// The socket asks for a 128 MiB receive buffer because the kernel does not
// wait for a slow reader: it drops what does not fit and reports ENOBUFS
// (netlink(7)). An overrun is not fatal; the Handler is told so that the
// consumer can re-read the state of the devices from sysfs.
package listener
