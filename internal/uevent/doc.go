// Package uevent defines the Event that flows through hotplugd and parses it
// from the bytes of a netlink message.
//
// Two wire formats exist. The kernel sends "ACTION@DEVPATH\0KEY=VALUE\0..."
// to multicast group 1; udevd re-broadcasts processed events to group 2
// behind a "libudev\0" header (see systemd's sd-device/device-monitor.c).
// Parse accepts both and is strict: every field is checked so that nothing
// after it has to trust the sender. It performs no I/O and is fuzzed.
//
// An Event encodes as the object of `hotplugd monitor --json`; a
// Recording, an event with its filesystem probe and attribute walk, as
// that of `monitor --json --walk`, which `hotplugd test --replay` reads
// back strictly.
package uevent
