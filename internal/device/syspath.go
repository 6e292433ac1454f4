package device

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// EventAt returns the add event of the present device at syspath, a path
// under the sysfs root (/sys/class/block/sdb1, /sys/devices/...; links
// are followed), built from its uevent file exactly as coldplug builds
// it.
func (m *Manager) EventAt(syspath string) (uevent.Event, error) {
	real, err := filepath.EvalSymlinks(syspath)
	if err != nil {
		return uevent.Event{}, err
	}
	root, err := filepath.EvalSymlinks(m.roots.Sys)
	if err != nil {
		return uevent.Event{}, err
	}
	rel, err := filepath.Rel(root, real)
	if err != nil || !strings.HasPrefix(rel, "devices/") {
		return uevent.Event{}, fmt.Errorf("%s is not a device under %s/devices", syspath, m.roots.Sys)
	}
	devpath := "/" + rel
	link, err := os.Readlink(filepath.Join(real, "subsystem"))
	if err != nil {
		return uevent.Event{}, fmt.Errorf("%s has no subsystem: the kernel sends no events for it", syspath)
	}
	// A device Enumerate could not read is simply not found below.
	evs, _ := m.Enumerate(filepath.Base(link))
	for _, ev := range evs {
		if ev.DevPath == devpath {
			return ev, nil
		}
	}
	return uevent.Event{}, fmt.Errorf("cannot read the uevent file of %s", syspath)
}
