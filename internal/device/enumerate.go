package device

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// maxDepth bounds the walk of /sys/devices; real trees are about 20 deep.
const maxDepth = 64

// maxSkipErrs is how many errors a SkipError keeps.
const maxSkipErrs = 8

var (
	errTooDeep    = errors.New("directory tree too deep")
	errBadUevent  = errors.New("bad uevent file")
	errUeventSize = errors.New("uevent file too large")
)

// SkipError reports devices Enumerate could not read. The events
// returned with it are valid; only the skipped devices are missing.
type SkipError struct {
	Skipped int     // devices or directories skipped
	Errs    []error // the first few reasons
}

func (e *SkipError) Error() string {
	return fmt.Sprintf("enumerate: skipped %d: %v", e.Skipped, errors.Join(e.Errs...))
}

// Unwrap returns the reasons kept, for errors.Is and errors.As.
func (e *SkipError) Unwrap() []error { return e.Errs }

// Enumerate returns an add event for every device under /sys/devices of
// subsystem ("" for all), as coldplug feeds them to the rules: parents
// before children, siblings by name. Each is built from the device's
// uevent file, with ACTION=add, DEVPATH, SUBSYSTEM (where its subsystem
// link points), SEQNUM=0 and Source coldplug, and checked like a kernel
// event. The file is read as the kernel writes it (see ueventFile), so
// that a newline in a device string continues its value rather than
// starting a property, and MAJOR, MINOR and DEVNAME count only where the
// "dev" attribute vouches for them. Devices without a subsystem link are left
// out: the kernel sends no events for them (dev_uevent_filter). Symlinks
// are not followed.
//
// A device that cannot be read is skipped, and the events come back with
// a *SkipError; any other error means nothing could be enumerated.
func (m *Manager) Enumerate(subsystem string) ([]uevent.Event, error) {
	if m.sys == nil {
		return nil, fmt.Errorf("enumerate: %w", errNoSysfs)
	}
	top, err := m.sys.OpenRoot("devices")
	if err != nil {
		return nil, fmt.Errorf("enumerate: %w", err)
	}
	defer top.Close()
	w := walker{subsystem: subsystem, buf: make([]byte, uevent.MaxMessageSize+1)}
	w.walk(top, "/devices", 0)
	if w.skip.Skipped > 0 {
		return w.events, &w.skip
	}
	return w.events, nil
}

type walker struct {
	subsystem string
	events    []uevent.Event
	skip      SkipError
	buf       []byte
}

func (w *walker) skipped(devpath string, err error) {
	w.skip.Skipped++
	if len(w.skip.Errs) < maxSkipErrs {
		w.skip.Errs = append(w.skip.Errs, fmt.Errorf("%s: %w", devpath, err))
	}
}

// walk visits dir (at devpath) and then its subdirectories, depth first.
func (w *walker) walk(dir *os.Root, devpath string, depth int) {
	f, err := dir.Open(".")
	if err != nil {
		w.skipped(devpath, err)
		return
	}
	entries, err := f.ReadDir(-1)
	f.Close()
	if err != nil {
		w.skipped(devpath, err)
		return
	}
	slices.SortFunc(entries, func(a, b os.DirEntry) int { return cmp.Compare(a.Name(), b.Name()) })
	for _, e := range entries {
		if e.Name() == "uevent" && e.Type().IsRegular() {
			w.device(dir, devpath)
			break
		}
	}
	for _, e := range entries {
		if !e.IsDir() { // false for symlinks: "subsystem", "device", "driver" loop back
			continue
		}
		if depth+1 > maxDepth {
			w.skipped(devpath, errTooDeep)
			return
		}
		child, err := dir.OpenRoot(e.Name())
		if err != nil {
			w.skipped(devpath+"/"+e.Name(), err)
			continue
		}
		w.walk(child, devpath+"/"+e.Name(), depth+1)
		child.Close()
	}
}

// device adds the event of the device in dir, if it is one of the
// subsystem wanted.
func (w *walker) device(dir *os.Root, devpath string) {
	link, err := dir.Readlink("subsystem")
	if err != nil {
		return
	}
	sub := path.Base(link)
	if w.subsystem != "" && sub != w.subsystem {
		return
	}
	text, err := readFile(dir, "uevent", w.buf)
	if errors.Is(err, errCut) {
		err = errUeventSize
	}
	if err != nil {
		w.skipped(devpath, err)
		return
	}
	u := ueventFile{dir: dir, name: path.Base(devpath), subsystem: sub, buf: w.buf}
	file, err := u.props(text)
	if err != nil {
		w.skipped(devpath, err)
		return
	}
	props := make([]uevent.Property, 0, len(file)+4)
	props = append(props, uevent.Property{Key: "ACTION", Value: "add"}, uevent.Property{Key: "DEVPATH", Value: devpath}, uevent.Property{Key: "SUBSYSTEM", Value: sub})
	props = append(props, file...)
	props = append(props, uevent.Property{Key: "SEQNUM", Value: "0"})
	ev, err := uevent.FromProps(props)
	if err != nil {
		w.skipped(devpath, err)
		return
	}
	ev.Source = uevent.SourceColdplug
	w.events = append(w.events, ev)
}
