package device

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// Defaults of Config.
const (
	DefaultBlkid        = "/usr/sbin/blkid"
	DefaultProbeTimeout = 10 * time.Second
	DefaultDBMax        = 4096
)

// MaxAttrSize is the most bytes read from one sysfs attribute. The kernel
// formats text attributes into one page (sysfs_emit), so only binary
// attributes are ever cut.
const MaxAttrSize = 4096

// Config configures a Manager. A zero field takes its default.
type Config struct {
	// Roots are the host directories: sysfs and the device nodes.
	Roots host.Roots
	// Blkid is the blkid program (default /usr/sbin/blkid, else "blkid"
	// from PATH). When none is found, filesystems come only from ID_FS_*
	// properties and a warning is logged.
	Blkid string
	// ProbeTimeout bounds one blkid run (default 10s).
	ProbeTimeout time.Duration
	// DBMax is how many devices the database keeps (default 4096).
	DBMax int
	// Logger receives probe failures (default: discard).
	Logger *slog.Logger
}

// Stats counts what a Manager did.
type Stats struct {
	Devices     int    // devices in the database now
	Evictions   uint64 // devices dropped from a full database
	Probes      uint64 // blkid runs
	ProbeErrors uint64 // blkid runs that failed or timed out
	// ProbesLeftBehind are blkid processes that did not die of SIGKILL
	// (a disk whose reads hang) and are still there.
	ProbesLeftBehind int64
}

// Manager holds the configuration and the device database, and makes a
// Device for each event. It is safe for concurrent use.
type Manager struct {
	sys     *os.Root
	roots   host.Roots
	blkid   string
	timeout time.Duration
	log     *slog.Logger

	// ctx is cancelled by Close, killing probes in flight.
	ctx    context.Context
	cancel context.CancelFunc
	// probe runs blkid; tests replace it.
	probe func(ctx context.Context, devnode string) (uevent.FS, uevent.Partition, error)

	db           db
	probes       atomic.Uint64
	probeErrors  atomic.Uint64
	probesLeaked atomic.Int64 // blkid processes left behind, not dead yet
}

// New opens the sysfs root and returns a Manager. Close releases it.
func New(cfg Config) (*Manager, error) {
	cfg.Roots = cfg.Roots.WithDefaults()
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = DefaultProbeTimeout
	}
	if cfg.DBMax <= 0 {
		cfg.DBMax = DefaultDBMax
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Blkid == "" {
		cfg.Blkid = findBlkid()
		if cfg.Blkid == "" {
			cfg.Logger.Warn("blkid not found; fs.* only from ID_FS_* properties")
		}
	}
	sys, err := os.OpenRoot(cfg.Roots.Sys)
	if err != nil {
		return nil, fmt.Errorf("sysfs root: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		sys:     sys,
		roots:   cfg.Roots,
		blkid:   cfg.Blkid,
		timeout: cfg.ProbeTimeout,
		log:     cfg.Logger,
		ctx:     ctx,
		cancel:  cancel,
	}
	m.db.init(cfg.DBMax)
	m.probe = func(ctx context.Context, devnode string) (uevent.FS, uevent.Partition, error) {
		if err := checkBlockDevice(devnode); err != nil {
			return uevent.FS{}, uevent.Partition{}, err
		}
		return blkidProbe(ctx, m.blkid, devnode, &m.probesLeaked)
	}
	return m, nil
}

func findBlkid() string {
	if fi, err := os.Stat(DefaultBlkid); err == nil && fi.Mode().IsRegular() {
		return DefaultBlkid
	}
	if p, err := exec.LookPath("blkid"); err == nil {
		return p
	}
	return ""
}

// Close kills probes in flight and releases the sysfs root. Devices
// already made keep answering from what they cached.
func (m *Manager) Close() error {
	m.cancel()
	if m.sys == nil {
		return nil
	}
	return m.sys.Close()
}

// Stats returns the counters.
func (m *Manager) Stats() Stats {
	n, ev := m.db.stats()
	return Stats{
		Devices:     n,
		Evictions:   ev,
		Probes:      m.probes.Load(),
		ProbeErrors: m.probeErrors.Load(),

		ProbesLeftBehind: m.probesLeaked.Load(),
	}
}

// Recorded returns the properties of the last event of devpath the
// database holds, so a resync can build the remove event of a device
// that vanished while events were lost.
func (m *Manager) Recorded(devpath string) ([]uevent.Property, bool) { return m.db.props(devpath) }

// For returns the view of ev's device that the rules of this one event
// query. ctx is the event's: a filesystem probe ends with it (or when the
// Manager closes). The caller must call Done when the event is handled.
//
// An add replaces what the database knew about the devpath; other
// actions update it, and a move carries it over from DEVPATH_OLD. A
// remove takes the device out of the database, and the returned Device
// answers from what it held, never from sysfs: a new device may already
// have taken the devpath. An event of a network link or address
// (uevent.RouteActions) tells of the link, not of the device: the
// database is neither read nor changed for it, and the Device answers
// from sysfs.
func (m *Manager) For(ctx context.Context, ev uevent.Event) *Device {
	d := &Device{m: m, ctx: ctx, ev: ev}
	d.live = sysfsView{sys: m.sys, devpath: ev.DevPath}
	d.sysfs = &d.live
	if uevent.IsRouteAction(ev.Action) {
		d.transient = true
		return d
	}
	props := slices.Clone(ev.Props)
	switch ev.Action {
	case "remove":
		d.removed = true
		d.rec = m.db.take(ev.DevPath)
	case "add":
		m.db.replace(ev.DevPath, props)
	case "move":
		if old := ev.Get("DEVPATH_OLD"); old != "" {
			m.db.rename(old, ev.DevPath)
		}
		m.db.update(ev.DevPath, props)
	default:
		m.db.update(ev.DevPath, props)
	}
	return d
}

// Device answers one event's questions about its device. Each answer is
// read at most once. It is safe for concurrent use, but is meant for the
// goroutine handling its event.
type Device struct {
	m       *Manager
	ctx     context.Context // the event's
	ev      uevent.Event
	removed bool    // a remove event: answer only from rec
	rec     *record // what the database held, for a remove
	// transient is an event of a link or address: Done records nothing.
	transient bool

	mu    sync.Mutex
	done  bool
	attr  map[string]attrVal // Attr answers, by name
	attrs map[string]attrVal // Attrs answers, by name
	fs    uevent.FS
	part  uevent.Partition // from the same probe
	// fsState: 0 not asked, 1 answered, 2 answered and worth recording.
	fsState int
	// sysfs is where attributes and parents are read: &live, or the
	// walk of a recording (ForRecording), whose FS is recFS.
	sysfs    view
	live     sysfsView
	recorded bool
	recFS    *uevent.FS
}

// DevNode is the device node of the event's DEVNAME under the device
// root, "" when it has none.
func (d *Device) DevNode() string { return d.m.roots.DevNode(d.ev.NodeName()) }

// Attr returns the sysfs attribute name of the device, "" when absent or
// unreadable. name is a plain attribute ("removable") or a relative path
// through the device's directory ("queue/rotational", "device/vendor");
// an absolute name or one with "." or ".." segments gets "". Values are
// at most MaxAttrSize bytes, trailing newlines removed. The links
// "driver", "subsystem" and "module" read as the name they point to, as
// in udev.
func (d *Device) Attr(name string) string {
	if !validAttrName(name) {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.attrLocked(name).v
}

func (d *Device) attrLocked(name string) attrVal {
	if a, ok := d.attr[name]; ok {
		return a
	}
	if d.removed {
		if d.rec == nil {
			return attrVal{}
		}
		return d.rec.attr[name]
	}
	a := d.sysfs.read(-1, name)
	if d.attr == nil {
		d.attr = make(map[string]attrVal)
	}
	d.attr[name] = a
	return a
}

// Attrs returns attribute name of the first device that has it, walking
// from this device up through its parents, like udev's ATTRS. Only
// directories with a uevent file count as devices.
func (d *Device) Attrs(name string) string {
	if !validAttrName(name) {
		return ""
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if a, ok := d.attrs[name]; ok {
		return a.v
	}
	if d.removed {
		if d.rec == nil {
			return ""
		}
		if a, ok := d.rec.attrs[name]; ok {
			return a.v
		}
		return d.rec.attr[name].v // the device's own attribute, if add read it
	}
	a := d.attrLocked(name)
	if !a.ok {
		for _, p := range d.sysfs.parentList() {
			if a = d.sysfs.read(p.level, name); a.ok {
				break
			}
		}
	}
	if d.attrs == nil {
		d.attrs = make(map[string]attrVal)
	}
	d.attrs[name] = a
	return a.v
}

// HasParent reports whether a parent of the device (not the device
// itself) has subsystem, and devtype unless devtype is "", like udev's
// SUBSYSTEMS. A parent is a directory above the device's with a uevent
// file; its subsystem is where its subsystem link points, its devtype
// the DEVTYPE of its uevent file.
func (d *Device) HasParent(subsystem, devtype string) bool {
	if subsystem == "" {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var ps []parent
	if d.removed {
		if d.rec == nil {
			return false
		}
		ps = d.rec.parents
	} else {
		ps = d.sysfs.parentList()
	}
	for _, p := range ps {
		if p.subsystem == subsystem && (devtype == "" || p.devtype == devtype) {
			return true
		}
	}
	return false
}

// FS returns the filesystem of a block device: from the event's ID_FS_*
// properties when it has any, else from the database on remove, else
// from probing the device node with blkid (once). A device that is not a
// block device, has no node, has size 0, or holds nothing blkid knows
// gets the zero FS. A failed probe is logged and gets the zero FS.
func (d *Device) FS() uevent.FS {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fsState != 0 {
		return d.fs
	}
	d.fs, d.part, d.fsState = d.probeFS()
	return d.fs
}

// Partition returns the partition's table entry, for fstab's PARTUUID=
// and PARTLABEL=: from the event's properties when it has them (udev's
// ID_PART_ENTRY_*, the kernel's PARTNAME), else from the probe FS runs.
func (d *Device) Partition() uevent.Partition {
	if p, ok := uevent.PartitionFromProps(d.ev.Props); ok && p.UUID != "" {
		return p // udev's: the whole entry
	}
	d.FS() // its probe reads the entry too
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.part != (uevent.Partition{}) {
		return d.part
	}
	p, _ := uevent.PartitionFromProps(d.ev.Props) // the kernel's PARTNAME, at least
	return p
}

func (d *Device) probeFS() (uevent.FS, uevent.Partition, int) {
	if fs, ok := uevent.FSFromProps(d.ev.Props); ok {
		return fs, uevent.Partition{}, 2
	}
	if d.removed {
		if d.rec != nil && d.rec.fsKnown {
			return d.rec.fs, uevent.Partition{}, 1
		}
		return uevent.FS{}, uevent.Partition{}, 1
	}
	if d.ev.Subsystem != "block" || !validAttrName(d.ev.DevName) {
		return uevent.FS{}, uevent.Partition{}, 1 // validAttrName: a plain relative name, also for hand-made events
	}
	if d.attrLocked("size").v == "0" { // empty loop device or card reader
		return uevent.FS{}, uevent.Partition{}, 2
	}
	if d.recorded { // what blkid said when the event was recorded
		if d.recFS == nil {
			return uevent.FS{}, uevent.Partition{}, 1
		}
		return *d.recFS, uevent.Partition{}, 2
	}
	m := d.m
	if m.blkid == "" {
		return uevent.FS{}, uevent.Partition{}, 1
	}
	devnode := m.roots.DevNode(d.ev.DevName)
	ctx, cancel := context.WithTimeout(d.ctx, m.timeout)
	defer cancel()
	defer context.AfterFunc(m.ctx, cancel)()
	m.probes.Add(1)
	fs, part, err := m.probe(ctx, devnode)
	if err != nil {
		m.probeErrors.Add(1)
		m.log.Warn("filesystem probe", "devnode", devnode, "err", err)
		return uevent.FS{}, uevent.Partition{}, 1
	}
	return fs, part, 2
}

// errNotBlock is returned for a device node that is not a block device.
var errNotBlock = errors.New("not a block device")

// checkBlockDevice makes sure blkid is pointed at a block device node,
// never at a regular file or a character device (reading a tape or a
// tty has side effects).
func checkBlockDevice(devnode string) error {
	fi, err := os.Lstat(devnode)
	if err != nil {
		return err
	}
	if fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return fmt.Errorf("%s: %w", devnode, errNotBlock)
	}
	return nil
}

// Done ends the event: it records in the database what was read during
// it (unless it is a remove, or the device had already gone from sysfs)
// and releases the sysfs directories. Later calls to the Device answer
// only what it has cached. Done may be called more than once.
func (d *Device) Done() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return
	}
	d.done = true
	gone := d.sysfs.gone()
	d.sysfs.close()
	if d.removed || d.transient {
		return
	}
	u := update{fs: d.fs, fsKnown: d.fsState == 2}
	if !gone {
		u.attr, u.attrs = d.attr, d.attrs
		u.parents, u.parentsKnown = d.sysfs.parentsRead()
	}
	d.m.db.merge(d.ev.DevPath, d.ev.Props, u)
}
