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

// Selection is what an eject target names.
type Selection struct {
	Entries []Entry // hotplugd's mounts; Eject of a cleartext's closes its mapping too
	// Mappings are the mappings hotplugd opened there whose cleartext it
	// has not mounted: EjectMapping closes them.
	Mappings []Mapping
}

// Select returns what hotplugd made that target names: the mounts of a
// device node (/dev/sdb1, or the whole disk /dev/sdb for all its
// partitions), a mount point, LABEL=x or UUID=x, and for a device node
// also the mappings it opened on that device (or whose cleartext it is)
// that it did not mount. A mount hotplugd did not make is never
// returned: what matches nothing recorded is ErrNoSuchMount.
func (m *Mounter) Select(target string) (Selection, error) {
	var match func(Entry) bool
	var mapping func(Mapping) bool // for a device node
	switch {
	case strings.HasPrefix(target, "LABEL="):
		label := strings.TrimPrefix(target, "LABEL=")
		match = func(e Entry) bool { return e.Device.Label == label }
	case strings.HasPrefix(target, "UUID="):
		uuid := strings.TrimPrefix(target, "UUID=")
		match = func(e Entry) bool { return strings.EqualFold(e.Device.UUID, uuid) }
	case filepath.IsAbs(target):
		var err error
		if match, mapping, err = m.pathMatch(filepath.Clean(target)); err != nil {
			return Selection{}, err
		}
	default:
		return Selection{}, fmt.Errorf("eject %s: want a device node, a mount point, LABEL= or UUID=", target)
	}
	sel := m.selection(match, mapping)
	if len(sel.Entries)+len(sel.Mappings) == 0 {
		return Selection{}, fmt.Errorf("eject %s: %w", target, ErrNoSuchMount)
	}
	return sel, nil
}

// SelectDisk is what an eject of the whole of disk takes: its mounts and
// those of the mappings on it, and those mappings not mounted.
func (m *Mounter) SelectDisk(disk Disk) Selection {
	return m.selection(func(e Entry) bool { return disk.holds(m.underlying(e.Device)) },
		func(mp Mapping) bool { return disk.holds(mp.Backing) })
}

// selection is the mounts match takes, and the mappings mapping takes
// (none when nil) whose cleartext is not mounted. A mapping still being
// opened has no cleartext yet, and is left to its unlock.
func (m *Mounter) selection(match func(Entry) bool, mapping func(Mapping) bool) Selection {
	var sel Selection
	for _, e := range m.Entries() {
		if !e.Unmounted && match(e) {
			sel.Entries = append(sel.Entries, e)
		}
	}
	if mapping == nil {
		return sel
	}
	for _, mp := range m.Mappings() {
		if mp.Cleartext.Major == 0 && mp.Cleartext.Minor == 0 || !mapping(mp) {
			continue
		}
		if e, ok := m.Lookup(mp.Cleartext); !ok || e.Unmounted {
			sel.Mappings = append(sel.Mappings, mp)
		}
	}
	return sel
}

// pathMatch matches a mount point, else the device whose node path is
// (and, for a whole disk, its partitions): its mounts, and the mappings
// on it or whose cleartext it is.
func (m *Mounter) pathMatch(path string) (func(Entry) bool, func(Mapping) bool, error) {
	for _, e := range m.Entries() {
		if e.MountPoint == path {
			return func(x Entry) bool { return x.MountPoint == path }, nil, nil
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, nil, fmt.Errorf("eject %s: %w", path, ErrNoSuchMount)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return nil, nil, fmt.Errorf("eject %s: %w (not a block device, nor a mount point hotplugd made)", path, ErrNoSuchMount)
	}
	num := Device{Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev)}.DevNum()
	devpath, _ := m.devpathOf(num)
	on := func(d Device) bool {
		return d.DevNum() == num || devpath != "" && strings.HasPrefix(d.Devpath, devpath+"/")
	}
	// The device itself, or the cleartext of a mapping named by its node.
	entry := func(e Entry) bool { return e.Device.DevNum() == num || on(m.underlying(e.Device)) }
	mapping := func(mp Mapping) bool { return mp.Cleartext.DevNum() == num || on(mp.Backing) }
	return entry, mapping, nil
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

// holds reports whether dev is disk or one of its partitions, by its
// devpath.
func (disk Disk) holds(dev Device) bool {
	return disk.Devpath != "" && (dev.Devpath == disk.Devpath || strings.HasPrefix(dev.Devpath, disk.Devpath+"/"))
}

// DiskEntries are the recorded mounts of the devices on disk, and of
// the mappings hotplugd opened on them.
func (m *Mounter) DiskEntries(disk Disk) []Entry {
	return slices.DeleteFunc(m.Entries(), func(e Entry) bool { return e.Unmounted || !disk.holds(m.underlying(e.Device)) })
}

// DiskMappings are the mappings hotplugd opened on disk or on one of its
// partitions, mounted or not.
func (m *Mounter) DiskMappings(disk Disk) []Mapping {
	return slices.DeleteFunc(m.Mappings(), func(mp Mapping) bool { return !disk.holds(mp.Backing) })
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
