package device

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
)

var (
	errNotRegular = errors.New("not a regular file")
	errCut        = errors.New("cut at the size limit")
)

// attrVal is one attribute answer; ok tells an empty value from an
// absent attribute, which matters to Attrs' walk.
type attrVal struct {
	v  string
	ok bool
}

// parent is a device above another in the devpath.
type parent struct {
	level     int // index into sysfsView.dirs; -1 once recorded
	subsystem string
	devtype   string
}

// sysfsView holds, for one event, the directories of the devpath opened
// one by one from the sysfs root: dirs[i] is the (i+1)-th segment, the
// last one the device. Each os.Root is confined to its directory, and
// opening the chain once costs as much as one path lookup, after which a
// read in any of them is a single openat.
type sysfsView struct {
	sys     *os.Root // the sysfs root; nil for a Manager of recordings
	devpath string

	opened bool       // open was tried
	ok     bool       // every directory of the devpath opened
	closed bool       // close was called; read nothing more
	dirs   []*os.Root // devpath directories, from the top
	rel    []string   // their paths relative to the sysfs root

	parentsDone bool
	parents     []parent // nearest first

	buf *[]byte // from bufPool, MaxAttrSize+1 bytes
}

// bufPool saves allocating a read buffer for every event.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, MaxAttrSize+1)
	return &b
}}

// open opens the devpath's directories once.
func (s *sysfsView) open() {
	if s.opened || s.closed {
		return
	}
	s.opened = true
	if s.sys == nil {
		return
	}
	r := s.sys
	p := strings.TrimPrefix(s.devpath, "/")
	for i := 0; i < len(p); {
		j := strings.IndexByte(p[i:], '/')
		if j < 0 {
			j = len(p)
		} else {
			j += i
		}
		next, err := r.OpenRoot(p[i:j])
		if err != nil {
			return // the device is gone, or devpath names no directory
		}
		s.dirs = append(s.dirs, next)
		s.rel = append(s.rel, p[:j])
		r = next
		i = j + 1
	}
	s.ok = len(s.dirs) > 0
}

func (s *sysfsView) close() {
	s.closed = true
	for _, r := range s.dirs {
		r.Close()
	}
	s.dirs, s.rel = nil, nil
	if s.buf != nil {
		bufPool.Put(s.buf)
		s.buf = nil
	}
}

// read reads attribute name of the directory at level, -1 being the
// device itself.
func (s *sysfsView) read(level int, name string) attrVal {
	s.open()
	if !s.ok || s.closed {
		return attrVal{}
	}
	if level < 0 {
		level = len(s.dirs) - 1
	}
	dir := s.dirs[level]
	if strings.IndexByte(name, '/') >= 0 {
		// "device/vendor" crosses the device link, which leaves the
		// device's directory: resolve it in the whole sysfs root.
		return s.readFile(s.sys, s.rel[level]+"/"+name)
	}
	switch name {
	case "driver", "subsystem", "module":
		// Links whose target's name is the value (sd_device_get_sysattr_value).
		if t, err := dir.Readlink(name); err == nil {
			return attrVal{path.Base(t), true}
		}
	}
	return s.readFile(dir, name)
}

// readFile reads an attribute into the view's buffer.
func (s *sysfsView) readFile(r *os.Root, name string) attrVal {
	if s.buf == nil {
		s.buf = bufPool.Get().(*[]byte)
	}
	v, err := readFile(r, name, *s.buf)
	return attrVal{v, err == nil || errors.Is(err, errCut)}
}

// readFile reads at most len(buf)-1 bytes of a regular file, without its
// trailing newlines. With errCut, it returns what fits of a longer file.
func readFile(r *os.Root, name string, buf []byte) (string, error) {
	// O_NONBLOCK: never hang opening a FIFO in a fixture tree (sysfs has
	// none; regular files ignore the flag).
	f, err := r.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%s: %w", name, errNotRegular)
	}
	n, err := io.ReadFull(f, buf)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		err = nil
	case err != nil:
		return "", err // EIO, ENODEV, EINVAL: attributes a driver refuses to show
	default:
		n, err = len(buf)-1, errCut
	}
	return strings.TrimRight(string(buf[:n]), "\n"), err
}

// parentList finds the parents of the device once: the directories above
// it that have a uevent file, nearest first.
func (s *sysfsView) parentList() []parent {
	if s.parentsDone {
		return s.parents
	}
	s.open()
	if !s.ok || s.closed {
		return nil
	}
	s.parentsDone = true
	for i := len(s.dirs) - 2; i >= 0; i-- {
		if p, ok := s.deviceAt(i); ok {
			s.parents = append(s.parents, p)
		}
	}
	return s.parents
}

// deviceAt describes the directory at level when it is a device (it has
// a uevent file): its subsystem is where its subsystem link points, its
// devtype the DEVTYPE of its uevent file.
func (s *sysfsView) deviceAt(level int) (parent, bool) {
	dir := s.dirs[level]
	ue := s.readFile(dir, "uevent")
	if !ue.ok {
		return parent{}, false
	}
	p := parent{level: level}
	if t, err := dir.Readlink("subsystem"); err == nil {
		p.subsystem = path.Base(t)
	}
	p.devtype = parentDevType(dir, path.Base(s.rel[level]), p.subsystem, ue.v)
	return p, true
}

// gone reports whether the device's directory was looked for and is not
// there: what was read then says nothing about the device.
func (s *sysfsView) gone() bool { return s.opened && !s.ok }

// parentsRead returns the parents if parentList found them.
func (s *sysfsView) parentsRead() ([]parent, bool) { return s.parents, s.parentsDone }

// parentDevType is the DEVTYPE of a parent's uevent file, read as
// coldplug reads it: a line a device string forged (an input device's
// NAME holding "\nDEVTYPE=usb_device") does not count.
func parentDevType(dir *os.Root, name, subsystem, text string) string {
	u := ueventFile{dir: dir, name: name, subsystem: subsystem, buf: make([]byte, MaxAttrSize+1)}
	props, err := u.props(text)
	if err != nil {
		return ""
	}
	for _, p := range props {
		if p.Key == "DEVTYPE" {
			return p.Value
		}
	}
	return ""
}

// validAttrName accepts a relative path of plain segments: no empty, "."
// or ".." segment, no NUL, not absolute.
func validAttrName(name string) bool {
	if name == "" || len(name) > 255 || strings.IndexByte(name, 0) >= 0 {
		return false
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}
