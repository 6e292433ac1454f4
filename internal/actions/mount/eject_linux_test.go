package mount

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// fakeUSBSys is a sysfs in which the loop device of num sits below a USB
// device, as a stick's disk does: usb1/1-1 is the usb_device.
func fakeUSBSys(t *testing.T, num, name string, usb bool) (sys, usbDir string) {
	t.Helper()
	sys = t.TempDir()
	usbDir = filepath.Join(sys, "devices/pci0000:00/0000:00:14.0/usb1/1-1")
	disk := filepath.Join(usbDir, "1-1:1.0/host6/target6:0:0/6:0:0:0/block", name)
	for _, d := range []string{disk, filepath.Join(sys, "bus/usb"), filepath.Join(sys, "dev/block")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(disk, "dev"), num+"\n")
	if usb {
		write(filepath.Join(usbDir, "uevent"), "MAJOR=189\nMINOR=1\nDEVNAME=bus/usb/001/002\nDEVTYPE=usb_device\nDRIVER=usb\n")
		write(filepath.Join(usbDir, "remove"), "")
		if err := os.Symlink(filepath.Join(sys, "bus/usb"), filepath.Join(usbDir, "subsystem")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(disk, filepath.Join(sys, "dev/block", num)); err != nil {
		t.Fatal(err)
	}
	return sys, usbDir
}

// TestPowerOffPlan: power-off flushes the disk and writes 1 to the remove
// attribute of its usb_device ancestor; a disk with no USB ancestor is
// refused and nothing is written.
func TestPowerOffPlan(t *testing.T) {
	looptest.Require(t)
	loop := looptest.Attach(t, looptest.Image(t, 8<<20, ""))
	b, err := os.ReadFile("/sys/class/block/" + loop.Name + "/dev")
	if err != nil {
		t.Fatal(err)
	}
	num := strings.TrimSpace(string(b))
	dev, err := parseDevNum(num)
	if err != nil {
		t.Fatal(err)
	}
	dev.Devnode = loop.Dev
	for _, usb := range []bool{true, false} {
		sys, usbDir := fakeUSBSys(t, num, loop.Name, usb)
		fx := newMountFixture(t, func(c *Config) { c.Roots.Sys = sys })
		disk, err := fx.m.DiskOf(dev)
		if err != nil {
			t.Fatal(err)
		}
		if disk.Devnode != loop.Dev || !strings.HasSuffix(disk.Devpath, "/block/"+loop.Name) {
			t.Errorf("DiskOf: %+v", disk)
		}
		err = fx.m.PowerOff(disk)
		if !usb {
			if !errors.Is(err, ErrNotUSB) {
				t.Errorf("power-off of a disk with no USB ancestor: %v, want %v", err, ErrNotUSB)
			}
			continue
		}
		if err != nil {
			t.Fatalf("PowerOff: %v", err)
		}
		if got, _ := os.ReadFile(filepath.Join(usbDir, "remove")); string(got) != "1" {
			t.Errorf("remove attribute holds %q, want 1", got)
		}
	}
}
