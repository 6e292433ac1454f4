// Package route tells of network links and addresses: it listens on a
// NETLINK_ROUTE socket to the kernel's link and IPv4 and IPv6 address
// groups and turns what changed into events (source "route", subsystem
// "net") that go through the same rules as uevents: link-up and
// link-down when IFF_UP changes, carrier and no-carrier when
// IFF_LOWER_UP changes, address-add and address-remove
// (hotplugd.rules(5)).
//
// The kernel sends RTM_NEWLINK for many reasons besides these flags
// (statistics, MTU, a wireless scan), so the listener keeps the last
// state of every link and address and only a change becomes an event.
// Each event carries the interface's sysfs devpath, which its uevents
// carry too, so the daemon orders both kinds of events of one interface.
//
// Messages are checked as uevents are (CVE-2009-1185): only the kernel
// (sender port id 0, SCM_CREDENTIALS of uid 0) is believed; a process
// with CAP_NET_ADMIN can multicast to these groups and anyone can send
// to the listener's port. What fails a check, or does not parse, is
// dropped and counted.
//
// The receive buffer is as large as the uevent listener's. When the
// kernel still drops messages (ENOBUFS), the listener asks it for every
// link and address again and emits what changed meanwhile, so the rules
// end up seeing the final state: nothing missing, nothing invented.
package route
