package device

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

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

// PollMedia makes the kernel poll a removable disk for media changes
// every ms milliseconds, as udisks2 does for card readers and optical
// drives: with the kernel's default (block.events_dfl_poll_msecs=0)
// nothing polls, and a medium taken out is never reported. It changes
// nothing for a disk that reports no media events, or whose polling an
// administrator set (events_poll_msecs other than -1), and says whether
// it turned polling on.
func (m *Manager) PollMedia(devpath string, ms int) (bool, error) {
	rel := strings.TrimPrefix(devpath, "/")
	if !strings.HasPrefix(rel, "devices/") {
		return false, fmt.Errorf("poll media %s: not a device path", devpath)
	}
	read := func(name string) string {
		b, err := m.sys.ReadFile(rel + "/" + name)
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if read("removable") != "1" || !strings.Contains(read("events"), "media_change") || read("events_poll_msecs") != "-1" {
		return false, nil
	}
	f, err := m.sys.OpenFile(rel+"/events_poll_msecs", os.O_WRONLY, 0)
	if err != nil {
		return false, fmt.Errorf("poll media %s: %w", devpath, err)
	}
	_, err = f.WriteString(strconv.Itoa(ms))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return false, fmt.Errorf("poll media %s: %w", devpath, err)
	}
	return true, nil
}

// OpenMedia opens and closes a removable disk's node, which makes the
// kernel look at the medium in it anew (its capacity, its partitions):
// after a media change it reports size 0 until something opens the disk.
// An empty drive answers ENOMEDIUM, which is no error here.
func (m *Manager) OpenMedia(devname string) error {
	node := m.roots.DevNode(devname)
	if err := checkBlockDevice(node); err != nil {
		return err
	}
	f, err := os.OpenFile(node, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ENOMEDIUM) {
		return nil
	}
	if err != nil {
		return err
	}
	return f.Close()
}
