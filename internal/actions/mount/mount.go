package mount

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions/crypt"
	"github.com/hotplugd/hotplugd/internal/actions/run"
	"github.com/hotplugd/hotplugd/internal/actions/scope"
	"github.com/hotplugd/hotplugd/internal/host"
)

// Defaults of Config.
const (
	DefaultModulesDir   = "/lib/modules"
	DefaultMountTimeout = 30 * time.Second
)

// DefaultHelperDirs are where FUSE mount helpers are looked for.
var DefaultHelperDirs = []string{"/sbin", "/usr/sbin", "/bin", "/usr/bin"}

// Errors of Mount, Unmount and Plan, for errors.Is. Every skip error also
// wraps ErrSkipped: the device is deliberately left alone, which is worth
// an info line, not an error.
var (
	ErrSkipped           = errors.New("skipped")
	ErrNotFilesystem     = errors.New("not a filesystem")
	ErrFilesystemRefused = errors.New("filesystem type not allowed")
	ErrAlreadyMounted    = errors.New("already mounted")
	ErrInFstab           = errors.New("listed in fstab")
	ErrUnsupportedFS     = errors.New("filesystem not supported")
	ErrUnsafeMountRoot   = errors.New("unsafe mount root")
	ErrUnsafeStateDir    = errors.New("unsafe state directory")
	ErrMountTimeout      = errors.New("mount deadline exceeded")
	ErrNotMounted        = errors.New("not mounted by hotplugd")
	ErrBusy              = errors.New("filesystem is in use")
	ErrDeviceBusy        = errors.New("another mount or unmount of this device is in progress")
	ErrForeignMount      = errors.New("a mount hotplugd did not make is in the way")
	ErrPlanOnly          = errors.New("this mounter only plans (dry run)")
	errDeviceNumber      = errors.New("device has no major:minor")
	errDevnodeMismatch   = errors.New("device node does not match the device number")
	errNotMountedAfter   = errors.New("mount did not appear in mountinfo")
	errTooManyCollisions = errors.New("no free mount point name")
	errMountRootNotAbs   = errors.New("mount root is not an absolute path")
	errStatePathNotAbs   = errors.New("state file is not an absolute path")
	errStateNotSaved     = errors.New("mount undone: its state could not be saved")
)

// skipError is a deliberate skip: Is(ErrSkipped) and Is(its reason).
type skipError struct {
	devnode string
	reason  error
	detail  string
}

func (e *skipError) Error() string {
	return fmt.Sprintf("mount %s: skipped: %v: %s", e.devnode, e.reason, e.detail)
}

func (e *skipError) Unwrap() []error { return []error{e.reason, ErrSkipped} }

func skip(dev Device, reason error, format string, args ...any) error {
	return &skipError{devnode: dev.Devnode, reason: reason, detail: fmt.Sprintf(format, args...)}
}

// Device is what a mount or unmount needs to know about a block device.
// The daemon fills it from the event and the filesystem probe; every string
// in it but Devnode is treated as hostile.
type Device struct {
	Major   uint32 `json:"major"`
	Minor   uint32 `json:"minor"`
	Devpath string `json:"devpath,omitempty"` // kernel DEVPATH, /devices/...
	Devnode string `json:"devnode,omitempty"` // /dev/sdb1
	Devname string `json:"devname,omitempty"` // sdb1
	Diskseq uint64 `json:"diskseq,omitempty"` // its disk's, in the state file: tells this disk from a later one at the same number

	FSUsage   string `json:"-"`                   // ID_FS_USAGE; only "filesystem" is mounted
	FSType    string `json:"-"`                   // ID_FS_TYPE, e.g. "ext4", "ntfs", "vfat"
	Label     string `json:"label,omitempty"`     // ID_FS_LABEL
	UUID      string `json:"uuid,omitempty"`      // ID_FS_UUID
	PartUUID  string `json:"partuuid,omitempty"`  // ID_PART_ENTRY_UUID, for fstab PARTUUID=
	PartLabel string `json:"partlabel,omitempty"` // ID_PART_ENTRY_NAME, for fstab PARTLABEL=
}

// DevNum is the device's "major:minor", the key of its mount state.
func (d Device) DevNum() string {
	return strconv.FormatUint(uint64(d.Major), 10) + ":" + strconv.FormatUint(uint64(d.Minor), 10)
}

// parseDevNum parses "major:minor" into a Device carrying only the number,
// enough for Unmount.
func parseDevNum(s string) (Device, error) {
	ma, mi, ok := strings.Cut(s, ":")
	major, err1 := strconv.ParseUint(ma, 10, 32)
	minor, err2 := strconv.ParseUint(mi, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return Device{}, fmt.Errorf("device number %q: want major:minor", s)
	}
	return Device{Major: uint32(major), Minor: uint32(minor)}, nil
}

// Request is what a rule's mount action asks for.
type Request struct {
	Rule    string   // the rule's name, recorded in the state
	Options []string // extra options from the allow-list (rules.CheckMountOption)
	Exec    bool     // leave out noexec
	// UID and GID own the files of filesystems without Unix ownership
	// (vfat, exfat, ntfs, iso9660, udf); 0 (root) by default.
	UID, GID uint32
	// Owned: the rule named an owner, whose alone the files are then;
	// without, they are root's and readable by all.
	Owned bool
}

// Plan is what a mount would do, computed without creating or mounting
// anything (the dry run of `hotplugd test`).
type Plan struct {
	Device Device
	// MountPoint is <mount_root>/<name>; if the name is taken by the time
	// of the real mount, a numeric suffix is added.
	MountPoint string
	FSType     string   // the device's filesystem type (ID_FS_TYPE)
	Driver     string   // the kernel filesystem type given to mount(2), or the helper's name
	Helper     string   // the FUSE mount helper's path; "" for a kernel mount
	Flags      []string // flag options: nosuid, nodev, noexec, ...
	Data       string   // the data string (kernel) or the filesystem part of -o (helper)
	Options    string   // flags and data together, as mount(8) would show them
	Ignored    []string // rule options this filesystem does not take, with why

	name string
	drv  driver
	opts builtOptions
}

// Entry records one mount hotplugd made. It is kept in the state file
// until the mount is gone and the directory hotplugd created is removed.
type Entry struct {
	Device     Device    `json:"device"`
	MountPoint string    `json:"mount_point"`
	FSType     string    `json:"fs_type"`
	Driver     string    `json:"driver"` // kernel type or helper path
	Options    string    `json:"options"`
	Rule       string    `json:"rule,omitempty"`
	CreatedDir bool      `json:"created_dir"`
	MountedAt  time.Time `json:"mounted_at"`
	// Unmounted marks an entry whose filesystem is unmounted but whose
	// directory could not be removed yet; cleanup retries the rmdir.
	Unmounted bool `json:"unmounted,omitempty"`
}

// UnmountResult says what Unmount did.
type UnmountResult struct {
	Entry Entry
	// Unmounted: the filesystem was unmounted by this call (false: it was
	// gone already, or was not hotplugd's).
	Unmounted bool
	// Lazy: the filesystem was busy and was detached with MNT_DETACH; it is
	// gone from the namespace but stays alive until its last user closes
	// it. Report this as "removed while in use".
	Lazy bool
	// DirRemoved: the directory hotplugd created was removed.
	DirRemoved bool
	// Closed names the mapping closed after the unmount (Eject of a LUKS
	// device's cleartext); Deferred: it was in use, and the kernel
	// removes it once its last user lets go.
	Closed   string
	Deferred bool
}

// ReconcileReport says what Reconcile did with each recorded mount.
type ReconcileReport struct {
	Kept    []Entry // device present and still mounted
	Cleaned []Entry // device gone: unmounted and directory removed
	Lazy    []Entry // of Cleaned, those that were busy and detached lazily
	Dropped []Entry // mount already gone, or a mount hotplugd did not make at its path: entry forgotten
	Failed  []Entry // cleanup failed: entry kept for a retry (see the error)

	// The recorded LUKS mappings, looked at before the mounts:
	Adopted     []Mapping     // backing device present, mapping open: kept
	Closed      []CloseResult // backing device gone: cleartext detached, mapping closed
	Forgotten   []Mapping     // mapping closed already: record dropped
	CloseFailed []Mapping     // closing failed: record kept for a retry (see the error)
}

// Config configures a Mounter. MountRoot and StatePath are required (the
// rules' mount_root and <state_dir>/mounts.json); other zero fields take
// the Default values. Tests point every host path elsewhere.
type Config struct {
	MountRoot string // where mount points are created
	StatePath string // the state file
	// Roots are the host directories: procfs (self/mountinfo,
	// filesystems), /etc (fstab) and sysfs (is a device present).
	Roots      host.Roots
	ModulesDir string        // kernel modules, to see if a filesystem is loadable (default /lib/modules)
	HelperDirs []string      // where FUSE mount helpers are looked for (default DefaultHelperDirs)
	Timeout    time.Duration // longest a mount or unmount may take (default 30s); a context deadline may shorten it
	Logger     *slog.Logger  // default: discard
	// Scopes starts FUSE mount helpers in scopes of their own under
	// systemd; nil starts them in the daemon's cgroup.
	Scopes *scope.Starter
	// Crypt opens and closes the LUKS mappings of Unlock (default: the
	// cryptsetup of crypt.DefaultPaths, run logging to Logger).
	Crypt *crypt.Cryptsetup
	// PlanOnly makes a Mounter for dry runs (`hotplugd test`), which must
	// change nothing: NewMounter leaves an unreadable state file where it
	// is, Mount, Unmount, Unlock and Reconcile refuse with ErrPlanOnly,
	// and CloseMappingsOn only plans; the state file is never written.
	PlanOnly bool
	// Simulated makes a plan-only Mounter of a machine of its own, for
	// `hotplugd test --replay`, whose plans must not depend on the
	// machine that replays: it reads no state file, mountinfo, fstab or
	// mount root, takes every allow-listed filesystem for one the kernel
	// has and cryptsetup for one at crypt.DefaultPaths[0], and remembers
	// what it planned, as if it had done it: a mount (Plan,
	// PlanCleartext) until PlanUnmount or the close of its mapping, an
	// unlock (PlanUnlock) until CloseMappingsOn. Simulated implies
	// PlanOnly.
	Simulated bool
}

func (c Config) withDefaults() Config {
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	c.Roots = c.Roots.WithDefaults()
	def(&c.ModulesDir, DefaultModulesDir)
	if c.HelperDirs == nil {
		c.HelperDirs = DefaultHelperDirs
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultMountTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Crypt == nil {
		c.Crypt = &crypt.Cryptsetup{Runner: &run.Runner{Log: c.Logger}}
		if c.Simulated {
			c.Crypt.Path = crypt.DefaultPaths[0] // the simulated machine's, wherever this one has it
		}
	}
	return c
}

func (c Config) mountinfoPath() string   { return c.Roots.ProcPath("self", "mountinfo") }
func (c Config) filesystemsPath() string { return c.Roots.ProcPath("filesystems") }
func (c Config) fstabPath() string       { return c.Roots.EtcPath("fstab") }

// Mounter mounts and unmounts filesystems for hotplugd and keeps the state
// of what it mounted. It is safe for concurrent use; operations on one
// device are serialized, operations on different devices run in parallel.
type Mounter struct {
	cfg Config
	log *slog.Logger

	// sysMount and sysUnmount are mount(2) and umount2(2); tests replace
	// them to simulate a hung device.
	sysMount   func(source, target, fstype string, flags uintptr, data string) error
	sysUnmount func(target string, flags int) error

	lock *os.File // the state directory's lock; nil for a plan-only Mounter

	mu       sync.Mutex
	entries  map[string]Entry   // by Device.DevNum()
	mappings map[string]Mapping // by name
	busy     map[string]bool    // devices (and mappings) with an operation in progress
}

// reserve marks a device busy; the returned func releases it.
func (m *Mounter) reserve(key string) (release func(), ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.busy[key] {
		return nil, false
	}
	m.busy[key] = true
	return func() {
		m.mu.Lock()
		delete(m.busy, key)
		m.mu.Unlock()
	}, true
}

// Close releases the state directory's lock. The mounts stay.
func (m *Mounter) Close() error {
	if m.lock == nil {
		return nil
	}
	return m.lock.Close()
}

// Root is the mount root, where mount points are made.
func (m *Mounter) Root() string { return m.cfg.MountRoot }

// Entries returns the mounts hotplugd has recorded, sorted by mount point.
func (m *Mounter) Entries() []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedEntries(m.entries)
}

// Lookup returns the recorded mount of a device (matched as Unmount does).
func (m *Mounter) Lookup(dev Device) (Entry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key, ok := m.findLocked(dev)
	if !ok {
		return Entry{}, false
	}
	return m.entries[key], true
}

// PlanUnmount returns the recorded mount an Unmount of dev would undo,
// for a dry run; a Simulated Mounter also forgets it, as its Unmount
// would.
func (m *Mounter) PlanUnmount(dev Device) (Entry, bool) {
	m.mu.Lock()
	key, ok := m.findLocked(dev)
	e := m.entries[key]
	m.mu.Unlock()
	if !ok {
		return Entry{}, false
	}
	return m.planCleanup(key, e).Entry, true
}

// planCleanup is what cleanup does in a dry run: nothing, and the
// result says what it would do with the recorded mount e. A Simulated
// Mounter forgets the mount, as cleanup does.
func (m *Mounter) planCleanup(key string, e Entry) UnmountResult {
	if m.cfg.Simulated {
		m.mu.Lock()
		delete(m.entries, key)
		m.mu.Unlock()
	}
	return UnmountResult{Entry: e, Unmounted: !e.Unmounted, DirRemoved: e.CreatedDir}
}

// UnknownName stands for the name of a mount point a dry run cannot
// know: that of the filesystem inside a LUKS device it does not open
// (PlanCleartext), or of a mount it did not see being made.
const UnknownName = "<mount point>"

// PlanCleartext is Plan for the cleartext of a mapping a dry run only
// planned to open (PlanUnlock). What is inside, and with it the options
// and the mount point's name (a label), is known once it is unlocked:
// the plan is the mount point UnknownName under the mount root. A
// Simulated Mounter records it as mounted, as Plan does, so that the
// removal of the encrypted device plans its unmount before the close of
// the mapping; one it has mounted already is skipped, as Plan skips it.
func (m *Mounter) PlanCleartext(dev Device, req Request) (string, error) {
	path := filepath.Join(m.cfg.MountRoot, UnknownName)
	if !m.cfg.Simulated || (dev.Major == 0 && dev.Minor == 0) {
		return path, nil // this machine's dry run: unopened, it has no device number
	}
	key := dev.DevNum()
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok {
		return "", skip(dev, ErrAlreadyMounted, "mounted by hotplugd at %s", e.MountPoint)
	}
	recorded := dev
	recorded.FSUsage, recorded.FSType = "", ""
	m.entries[key] = Entry{Device: recorded, MountPoint: path, Rule: req.Rule, CreatedDir: true}
	return path, nil
}

// findLocked finds the entry of dev: by major:minor when it is known (and
// then, if both sides know it, the devpath must agree too, since device
// numbers are reused), else by devpath.
func (m *Mounter) findLocked(dev Device) (string, bool) {
	if dev.Major != 0 || dev.Minor != 0 {
		e, ok := m.entries[dev.DevNum()]
		if !ok || (dev.Devpath != "" && e.Device.Devpath != "" && dev.Devpath != e.Device.Devpath) {
			return "", false
		}
		return dev.DevNum(), true
	}
	if dev.Devpath == "" {
		return "", false
	}
	for k, e := range m.entries {
		if e.Device.Devpath == dev.Devpath {
			return k, true
		}
	}
	return "", false
}
