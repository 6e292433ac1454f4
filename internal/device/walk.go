package device

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// maxWalkAttrs bounds the attributes a walk keeps of one device; a
// device has a few dozen.
const maxWalkAttrs = 512

// errNoSysfs: a Manager of recordings (NewRecorded) has no sysfs.
var errNoSysfs = errors.New("no sysfs: this device manager answers from recordings")

// view is where a Device reads its device's attributes and parents: the
// live sysfs (*sysfsView) or the walk of a recording (*walkView). A
// level is an index into the view's own directories; -1 is the device.
type view interface {
	read(level int, name string) attrVal
	parentList() []parent
	gone() bool
	parentsRead() ([]parent, bool)
	close()
}

// NewRecorded returns a Manager for recorded events (ForRecording), as
// `hotplugd test --replay` uses it: it opens no sysfs and runs no
// blkid, and keeps its device database as New's does. Close may be
// called; it releases nothing.
func NewRecorded(cfg Config) *Manager {
	cfg.Roots = cfg.Roots.WithDefaults()
	if cfg.DBMax <= 0 {
		cfg.DBMax = DefaultDBMax
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{roots: cfg.Roots, log: cfg.Logger, ctx: ctx, cancel: cancel}
	m.db.init(cfg.DBMax)
	return m
}

// ForRecording is For for a recorded event: the database is kept as For
// keeps it, so a remove answers from what the add of its devpath read,
// and otherwise the Device answers from r by the same code as from
// sysfs: attributes and parents from r.Walk (nothing when it is nil, not
// recorded), the filesystem from r.FS where For would run blkid.
func (m *Manager) ForRecording(ctx context.Context, r *uevent.Recording) *Device {
	d := m.For(ctx, r.Event)
	d.sysfs = &walkView{walk: r.Walk}
	d.recorded, d.recFS = true, r.FS
	return d
}

// PrefetchFS reads the filesystem of a block device that is added or
// changes, for a later remove of it, when the rules read fs.* (the
// daemon's rules.RuleSet.ReadsFS): Done records it in the database even
// when no rule of this event asked.
func (d *Device) PrefetchFS() {
	if d.ev.Subsystem == "block" && (d.ev.Action == "add" || d.ev.Action == "change") {
		d.FS()
	}
}

// Record returns ev with what rules may ask about its device, read now,
// for `hotplugd monitor --json --walk`: the filesystem of a block device
// (FS, probed as for the rules) and the attribute walk of the device and
// its parents. A removed device is gone from sysfs: its walk is empty
// and it has no FS.
func (m *Manager) Record(ctx context.Context, ev uevent.Event) uevent.Recording {
	d := m.For(ctx, ev)
	defer d.Done()
	r := uevent.Recording{Event: ev, Walk: []uevent.WalkDevice{}}
	if d.removed {
		return r
	}
	if ev.Subsystem == "block" {
		fs := d.FS()
		r.FS = &fs
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	r.Walk = d.live.walk()
	return r
}

// walk reads the device and each parent as a recording keeps them: the
// answers of read for every attribute file of its directory and of the
// subdirectories that are not devices, the subsystem and devtype
// parentList finds, and the links that lead to another device of the
// walk. A walkView on it answers as this view does.
func (s *sysfsView) walk() []uevent.WalkDevice {
	s.open()
	if !s.ok || s.closed {
		return []uevent.WalkDevice{}
	}
	own, ok := s.deviceAt(len(s.dirs) - 1)
	if !ok {
		own = parent{level: len(s.dirs) - 1}
	}
	devs := append([]parent{own}, s.parentList()...)
	walk := make([]uevent.WalkDevice, len(devs))
	for i, p := range devs {
		walk[i] = uevent.WalkDevice{DevPath: "/" + s.rel[p.level], Subsystem: p.subsystem, DevType: p.devtype, Attrs: uevent.Attrs{}}
		if t, err := s.dirs[p.level].Readlink("driver"); err == nil {
			walk[i].Driver = path.Base(t)
		}
		s.walkDir(&walk[i], p.level, s.dirs[p.level], "")
	}
	for i, p := range devs {
		s.walkLinks(walk, i, s.dirs[p.level])
	}
	return walk
}

// walkDir records the attribute files of dir, whose path below the
// device is prefix, and those one subdirectory down that is not a
// device. Symlinks are not followed.
func (s *sysfsView) walkDir(d *uevent.WalkDevice, level int, dir *os.Root, prefix string) {
	entries, err := fs.ReadDir(dir.FS(), ".")
	if err != nil {
		return
	}
	for _, e := range entries {
		name := prefix + e.Name()
		switch {
		case len(d.Attrs) >= maxWalkAttrs:
			return
		case e.Type().IsRegular():
			if a := s.read(level, name); a.ok && utf8.ValidString(a.v) {
				d.Attrs[name] = a.v
			}
		case e.IsDir() && prefix == "":
			sub, err := dir.OpenRoot(e.Name())
			if err != nil {
				continue
			}
			if _, err := sub.Lstat("uevent"); errors.Is(err, fs.ErrNotExist) { // a child device has one
				s.walkDir(d, level, sub, name+"/")
			}
			sub.Close()
		}
	}
}

// walkLinks records the links of walk[i]'s directory that point to
// another device of the walk ("device", to the parent).
func (s *sysfsView) walkLinks(walk []uevent.WalkDevice, i int, dir *os.Root) {
	entries, err := fs.ReadDir(dir.FS(), ".")
	if err != nil {
		return
	}
	for _, e := range entries {
		if e.Type()&fs.ModeSymlink == 0 || e.Name() == "driver" || e.Name() == "subsystem" {
			continue
		}
		t, err := dir.Readlink(e.Name())
		if err != nil || path.IsAbs(t) {
			continue
		}
		target := path.Join(walk[i].DevPath, t)
		if slices.ContainsFunc(walk, func(d uevent.WalkDevice) bool { return d.DevPath == target }) {
			if walk[i].Links == nil {
				walk[i].Links = map[string]string{}
			}
			walk[i].Links[e.Name()] = target
		}
	}
}

// walkView answers from a recorded walk what sysfsView reads from sysfs.
// Levels are indexes into the walk, 0 the device. What a walk does not
// record answers "" where sysfs might not: a path into a child device's
// directory ("sdb1/size" of sdb), two subdirectories down, through a
// link that leaves the walk, the "module" link.
type walkView struct {
	walk        []uevent.WalkDevice // nil: not recorded
	closed      bool
	parentsDone bool
	parents     []parent
}

// read answers as sysfsView.read: the driver and subsystem links by the
// names they point to, a plain name from the device's files, and a path
// through its links and subdirectories as the sysfs root resolves it,
// where a link leads to a device and only a file is an attribute.
func (w *walkView) read(level int, name string) attrVal {
	if w.closed || len(w.walk) == 0 {
		return attrVal{}
	}
	if level < 0 {
		level = 0
	}
	d := &w.walk[level]
	if strings.IndexByte(name, '/') < 0 {
		switch {
		case name == "driver" && d.Driver != "":
			return attrVal{d.Driver, true}
		case name == "subsystem" && d.Subsystem != "":
			return attrVal{d.Subsystem, true}
		}
	}
	for {
		first, rest, ok := strings.Cut(name, "/")
		target, isLink := d.Links[first]
		if !ok || !isLink {
			break
		}
		i := slices.IndexFunc(w.walk, func(p uevent.WalkDevice) bool { return p.DevPath == target })
		if i < 0 {
			return attrVal{}
		}
		d, name = &w.walk[i], rest
	}
	v, ok := d.Attrs[name]
	return attrVal{v, ok}
}

func (w *walkView) parentList() []parent {
	if w.parentsDone || w.closed || len(w.walk) == 0 {
		return w.parents
	}
	w.parentsDone = true
	for i := 1; i < len(w.walk); i++ {
		w.parents = append(w.parents, parent{level: i, subsystem: w.walk[i].Subsystem, devtype: w.walk[i].DevType})
	}
	return w.parents
}

// gone: nothing was recorded, or the device had gone from sysfs.
func (w *walkView) gone() bool                    { return len(w.walk) == 0 }
func (w *walkView) parentsRead() ([]parent, bool) { return w.parents, w.parentsDone }
func (w *walkView) close()                        { w.closed = true }
