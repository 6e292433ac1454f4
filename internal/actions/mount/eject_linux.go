package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Errors of Select and PowerOff.
var (
	ErrNoSuchMount = errors.New("hotplugd mounted nothing there")
	ErrNotUSB      = errors.New("not on a USB device")
)

// Select returns hotplugd's mounts that target names: a device node
// (/dev/sdb1, or the whole disk /dev/sdb for all its partitions), a mount
// point, LABEL=x or UUID=x. A mount hotplugd did not make is never
// returned: what matches nothing recorded is ErrNoSuchMount.
func (m *Mounter) Select(target string) ([]Entry, error) {
	entries := m.Entries()
	var match func(Entry) bool
	switch {
	case strings.HasPrefix(target, "LABEL="):
		label := strings.TrimPrefix(target, "LABEL=")
		match = func(e Entry) bool { return e.Device.Label == label }
	case strings.HasPrefix(target, "UUID="):
		uuid := strings.TrimPrefix(target, "UUID=")
		match = func(e Entry) bool { return strings.EqualFold(e.Device.UUID, uuid) }
	case filepath.IsAbs(target):
		m, err := m.pathMatch(filepath.Clean(target))
		if err != nil {
			return nil, err
		}
		match = m
	default:
		return nil, fmt.Errorf("eject %s: want a device node, a mount point, LABEL= or UUID=", target)
	}
	var out []Entry
	for _, e := range entries {
		if !e.Unmounted && match(e) {
			out = append(out, e)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("eject %s: %w", target, ErrNoSuchMount)
	}
	return out, nil
}

// pathMatch matches a mount point, else the device whose node path is
// (and, for a whole disk, its partitions).
func (m *Mounter) pathMatch(path string) (func(Entry) bool, error) {
	for _, e := range m.Entries() {
		if e.MountPoint == path {
			return func(x Entry) bool { return x.MountPoint == path }, nil
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("eject %s: %w", path, ErrNoSuchMount)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, fmt.Errorf("eject %s: %w (not a block device, nor a mount point hotplugd made)", path, ErrNoSuchMount)
	}
	num := Device{Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)}.DevNum()
	devpath, _ := m.devpathOf(num)
	return func(e Entry) bool {
		if e.Device.DevNum() == num {
			return true // the device itself, or the cleartext of a mapping named by its node
		}
		d := m.underlying(e.Device)
		return d.DevNum() == num || devpath != "" && strings.HasPrefix(d.Devpath, devpath+"/")
	}, nil
}

// underlying is the device a mount is on at the bottom: the backing
// device of a LUKS mapping hotplugd opened, else dev itself.
func (m *Mounter) underlying(dev Device) Device {
	if mp, ok := m.MappingOf(dev); ok {
		return mp.Backing
	}
	return dev
}

// devpathOf is the devpath of a block device number, from sysfs.
func (m *Mounter) devpathOf(num string) (string, error) {
	link := m.cfg.Roots.SysPath("dev", "block", num)
	abs, err := filepath.EvalSymlinks(link)
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(abs, filepath.Clean(m.cfg.Roots.Sys)), nil
}

// Holders lists the processes using the filesystem mounted at path: a
// working or root directory, an open file or a mapped one under it, as
// fuser -m would find them. Read from procfs; processes that vanish or
// cannot be read are left out.
func (m *Mounter) Holders(path string) []Holder {
	proc := m.cfg.Roots.ProcPath()
	ents, _ := os.ReadDir(proc)
	var out []Holder
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if usesPath(filepath.Join(proc, d.Name()), path) {
			out = append(out, Holder{PID: pid, Command: command(filepath.Join(proc, d.Name()))})
		}
	}
	return out
}

// Holder is a process using a filesystem.
type Holder struct {
	PID     int
	Command string // its command line, or its name
}

func usesPath(pdir, path string) bool {
	under := func(p string) bool { return p == path || strings.HasPrefix(p, path+"/") }
	for _, l := range []string{"cwd", "root", "exe"} {
		if t, err := os.Readlink(filepath.Join(pdir, l)); err == nil && under(t) {
			return true
		}
	}
	fds, _ := os.ReadDir(filepath.Join(pdir, "fd"))
	for _, fd := range fds {
		if t, err := os.Readlink(filepath.Join(pdir, "fd", fd.Name())); err == nil && under(t) {
			return true
		}
	}
	maps, _ := os.ReadFile(filepath.Join(pdir, "maps"))
	for line := range strings.Lines(string(maps)) {
		if i := strings.Index(line, " /"); i >= 0 && under(strings.TrimSpace(line[i+1:])) {
			return true
		}
	}
	return false
}

// command is a process's command line, bounded, or its comm.
func command(pdir string) string {
	b, _ := os.ReadFile(filepath.Join(pdir, "cmdline"))
	b = b[:min(len(b), 256)]
	if s := strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " ")); s != "" {
		return s
	}
	b, _ = os.ReadFile(filepath.Join(pdir, "comm"))
	return strings.TrimSpace(string(b))
}

// Disk is the whole disk of a recorded device: its devpath, node and
// number.
type Disk struct {
	Devpath, Devnode string
	Num              string // major:minor
}

// DiskOf is the disk a mounted device is on (itself when it has no
// partition table; for a LUKS cleartext, the disk of its backing
// device), from sysfs.
func (m *Mounter) DiskOf(dev Device) (Disk, error) {
	dev = m.underlying(dev)
	devpath, err := m.devpathOf(dev.DevNum())
	if err != nil {
		return Disk{}, fmt.Errorf("%s: %w", describe(dev), err)
	}
	sys := m.cfg.Roots.SysPath(devpath)
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		devpath, sys = filepath.Dir(devpath), filepath.Dir(sys)
	}
	num, err := os.ReadFile(filepath.Join(sys, "dev"))
	if err != nil {
		return Disk{}, fmt.Errorf("%s: %w", devpath, err)
	}
	return Disk{Devpath: devpath, Devnode: filepath.Join(filepath.Dir(dev.Devnode), filepath.Base(devpath)),
		Num: strings.TrimSpace(string(num))}, nil
}

// DiskEntries are the recorded mounts of the devices on disk, and of
// the mappings hotplugd opened on them.
func (m *Mounter) DiskEntries(disk Disk) []Entry {
	return slices.DeleteFunc(m.Entries(), func(e Entry) bool {
		p := m.underlying(e.Device).Devpath
		return e.Unmounted || p != disk.Devpath && !strings.HasPrefix(p, disk.Devpath+"/")
	})
}

// PowerOff does what udisks' Drive.PowerOff does for a USB disk whose
// filesystems are unmounted: flush it (open O_EXCL, which fails while
// anything still holds it, and fsync), then write 1 to the remove
// attribute of its usb_device ancestor, so the kernel lets the device go
// and powers its port down. A disk with no USB ancestor is refused.
func (m *Mounter) PowerOff(disk Disk) error {
	usb, err := m.usbAncestor(disk.Devpath)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(disk.Devnode, os.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("power off %s: %w", disk.Devnode, err)
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return fmt.Errorf("power off %s: flush: %w", disk.Devnode, err)
	}
	if err := os.WriteFile(filepath.Join(usb, "remove"), []byte("1"), 0); err != nil {
		return fmt.Errorf("power off %s: %w", disk.Devnode, err)
	}
	return nil
}

// usbAncestor is the sysfs directory of the usb_device above devpath.
func (m *Mounter) usbAncestor(devpath string) (string, error) {
	for p := filepath.Dir(devpath); p != "/" && p != "."; p = filepath.Dir(p) {
		dir := m.cfg.Roots.SysPath(p)
		sub, err := os.Readlink(filepath.Join(dir, "subsystem"))
		if err != nil || filepath.Base(sub) != "usb" {
			continue
		}
		uevent, _ := os.ReadFile(filepath.Join(dir, "uevent"))
		if slices.Contains(strings.Split(string(uevent), "\n"), "DEVTYPE=usb_device") {
			return dir, nil
		}
	}
	return "", fmt.Errorf("power off %s: %w", devpath, ErrNotUSB)
}
