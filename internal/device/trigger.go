package device

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// Trigger asks the kernel to emit an event of action for the device at
// devpath, by writing the action to its sysfs uevent file (like `udevadm
// trigger`). The kernel then sends a real uevent, marked with
// SYNTH_UUID=0. The write goes through the sysfs root, so devpath cannot
// lead elsewhere.
func (m *Manager) Trigger(devpath, action string) error {
	if !slices.Contains(uevent.Actions, action) {
		return fmt.Errorf("trigger %s: unknown action %q", devpath, action)
	}
	rel := strings.TrimPrefix(devpath, "/")
	if !strings.HasPrefix(rel, "devices/") {
		return fmt.Errorf("trigger %s: not a device path", devpath)
	}
	if m.sys == nil {
		return fmt.Errorf("trigger %s: %w", devpath, errNoSysfs)
	}
	f, err := m.sys.OpenFile(rel+"/uevent", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("trigger %s: %w", devpath, err)
	}
	_, err = f.WriteString(action)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("trigger %s: %w", devpath, err)
	}
	return nil
}
