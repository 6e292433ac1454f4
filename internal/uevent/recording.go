package uevent

import (
	"errors"
	"fmt"
	"strings"
)

// Recording is an event with what rules may ask about its device, read
// when the event was received: one line of `hotplugd monitor --json
// --walk`, and the input of `hotplugd test --replay`.
type Recording struct {
	Event Event
	// FS is the filesystem probe of a block device; nil when none was
	// recorded (not a block device, or a device already removed).
	FS *FS
	// Walk is the device and each of its parents, nearest first, like
	// `udevadm info --attribute-walk`. nil: not recorded; empty: the
	// device was no longer in sysfs (a remove).
	Walk []WalkDevice
}

// WalkDevice is one device of an attribute walk, as sysfs showed it.
// Attrs and Links are device-controlled data like any attribute.
type WalkDevice struct {
	DevPath   string `json:"devpath"`
	Subsystem string `json:"subsystem"` // where its subsystem link points ("" without one)
	DevType   string `json:"devtype"`   // DEVTYPE of its uevent file
	Driver    string `json:"driver"`    // where its driver link points ("" without one)
	// Links are its symlinks that point to another device of the walk,
	// by name ("device") to that device's devpath, so that a path such
	// as "device/model" can be followed.
	Links map[string]string `json:"links,omitempty"`
	// Attrs are its attribute files, and those of its subdirectories
	// that are not devices ("queue/rotational", "power/control"), by
	// path, each as read: at most 4 KiB, trailing newlines removed.
	// Values that are not UTF-8 text are left out.
	Attrs Attrs `json:"attrs"`
}

// ErrBadWalk is wrapped by the error of a walk that does not lead from
// the event's device up through its parents.
var ErrBadWalk = errors.New("bad walk")

// checkWalk checks that walk starts at devpath and goes up, each device
// a proper parent of the one before, and that its links point into it.
func checkWalk(devpath string, walk []WalkDevice) error {
	in := make(map[string]bool, len(walk))
	for i, d := range walk {
		switch {
		case checkDevPath(d.DevPath) != nil:
			return fmt.Errorf("%w: walk[%d]: devpath %q", ErrBadWalk, i, d.DevPath)
		case i == 0 && d.DevPath != devpath:
			return fmt.Errorf("%w: walk[0] is %q, not the event's device", ErrBadWalk, d.DevPath)
		case i > 0 && !strings.HasPrefix(walk[i-1].DevPath, d.DevPath+"/"):
			return fmt.Errorf("%w: walk[%d] %q is not a parent of %q", ErrBadWalk, i, d.DevPath, walk[i-1].DevPath)
		}
		in[d.DevPath] = true
	}
	for i, d := range walk {
		for name, target := range d.Links {
			if name == "" || strings.Contains(name, "/") || !in[target] {
				return fmt.Errorf("%w: walk[%d]: link %q to %q, not a device of the walk", ErrBadWalk, i, name, target)
			}
		}
	}
	return nil
}
