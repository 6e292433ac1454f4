package rules

import (
	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// Device answers the questions an expression may ask about the device of
// an event beyond its properties: its device node, sysfs attributes,
// ancestors and the filesystem on it. The daemon adapts internal/device
// to it; every method returns "" or false for what is unknown, never an
// error, and may be called from the goroutine that calls Match only.
type Device interface {
	// DevNode is the device node of the event's DEVNAME, "" without one.
	DevNode() string
	// Attr is the sysfs attribute name of the device itself.
	Attr(name string) string
	// Attrs is the first value of attribute name found walking up from
	// the device through its parents, like udev's ATTRS{}.
	Attrs(name string) string
	// HasParent reports whether an ancestor of the given subsystem (and
	// devtype, when not "") exists, like udev's SUBSYSTEMS==.
	HasParent(subsystem, devtype string) bool
	// FS is the filesystem on a block device. It may probe the device, so
	// it is called only when an expression reads fs.*, at most once per
	// event.
	FS() uevent.FS
}

// EventOnly is the Device of an event whose device cannot be asked: a
// test event, or a remove event of a device nothing is known about. It
// answers fs.* from the event's ID_FS_* properties and nothing else.
type EventOnly struct {
	Event *uevent.Event
}

// DevNode is DEVNAME under the system's /dev.
func (d EventOnly) DevNode() string {
	if d.Event == nil {
		return ""
	}
	return host.Default().DevNode(d.Event.NodeName())
}

// Attr returns "": there is no sysfs to read.
func (EventOnly) Attr(string) string { return "" }

// Attrs returns "": there is no sysfs to read.
func (EventOnly) Attrs(string) string { return "" }

// HasParent returns false: the event does not name its ancestors'
// subsystems.
func (EventOnly) HasParent(string, string) bool { return false }

// FS returns what the event's ID_FS_* properties say.
func (d EventOnly) FS() uevent.FS {
	if d.Event == nil {
		return uevent.FS{}
	}
	fs, _ := uevent.FSFromProps(d.Event.Props)
	return fs
}
