package rules

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
)

// maxSymlinks is how many symlinks a path may go through, as in the
// kernel's path walk (MAXSYMLINKS).
const maxSymlinks = 40

// UnsafePermissions returns why the rules file at path could be changed by
// someone other than root and the user uid (the daemon's own). The file
// decides what runs as root, so the daemon refuses such a file and
// `hotplugd check` warns about it. A nil result means the file is safe.
//
// The path is resolved the way the kernel resolves it, one name at a
// time, and every directory a name is looked up in counts: those of the
// path as given and those of every symlink's target. Whoever may write
// such a directory, or owns it, may put another entry in its place; a
// directory others may write is safe only with the sticky bit (like
// /tmp), which lets nobody rename what they do not own, so there each
// entry met (directory, symlink or file) must be root's or uid's. The
// file's own directory, and the file, must be writable by their owner
// only, root or uid.
func UnsafePermissions(path string, uid int) ([]string, error) {
	w := pathWalk{index: map[string]int{}}
	if err := w.resolve(path); err != nil {
		return nil, err
	}
	fileDir := filepath.Dir(w.steps[len(w.steps)-1].path)
	// The file first, then up the way it was reached.
	var problems []string
	for _, s := range slices.Backward(w.steps) {
		sticky := s.fi.Mode()&os.ModeSticky != 0
		switch {
		case s.what == "file" || s.lookedIn && (!sticky || s.path == fileDir):
			problems = append(problems, modeProblems(s.what, s.path, s.fi, uid)...)
		case s.lookedIn || s.inSticky:
			problems = append(problems, ownerProblems(s.what, s.path, s.fi, uid)...)
		}
	}
	return problems, nil
}

// step is an entry met on the way: a directory, a symlink, or the file at
// the end.
type step struct {
	what     string // "directory", "symlink" or "file"
	path     string // where it is, through no symlink
	fi       fs.FileInfo
	lookedIn bool // a directory a name was looked up in
	inSticky bool // found in a sticky directory
}

type pathWalk struct {
	steps []step
	index map[string]int // steps by path
	links int
}

// resolve walks path, from the working directory if it is relative,
// recording its steps. The path is not cleaned first: "link/.." is where
// the kernel goes, the parent of link's target.
func (w *pathWalk) resolve(path string) error {
	abs := path
	if !strings.HasPrefix(path, "/") {
		wd, err := os.Getwd()
		if err != nil {
			return err
		}
		abs = wd + "/" + path
	}
	fi, err := os.Lstat("/")
	if err != nil {
		return err
	}
	w.add(step{what: "directory", path: "/", fi: fi})
	cur, todo := "/", strings.Split(abs, "/")
	for len(todo) > 0 {
		name := todo[0]
		todo = todo[1:]
		switch name {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur) // cur holds no symlink: this is its parent
			continue
		}
		s, err := w.lookup(cur, name)
		if err != nil {
			return err
		}
		switch {
		case s.what == "symlink":
			target, err := w.follow(s.path)
			if err != nil {
				return err
			}
			if filepath.IsAbs(target) {
				cur = "/"
			}
			todo = append(strings.Split(target, "/"), todo...)
		case s.what == "directory":
			cur = s.path
		case len(todo) > 0:
			return &fs.PathError{Op: "resolve", Path: s.path, Err: syscall.ENOTDIR}
		default:
			return nil
		}
	}
	return &fs.PathError{Op: "resolve", Path: path, Err: syscall.EISDIR}
}

// lookup records that name is looked up in dir, and what it is there.
func (w *pathWalk) lookup(dir, name string) (step, error) {
	d := &w.steps[w.index[dir]]
	d.lookedIn = true
	p := filepath.Join(dir, name)
	fi, err := os.Lstat(p)
	if err != nil {
		return step{}, err
	}
	s := step{what: "file", path: p, fi: fi, inSticky: d.fi.Mode()&os.ModeSticky != 0}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		s.what = "symlink"
	case fi.IsDir():
		s.what = "directory"
	}
	w.add(s)
	return s, nil
}

// add records s, once per path.
func (w *pathWalk) add(s step) {
	if _, ok := w.index[s.path]; !ok {
		w.index[s.path] = len(w.steps)
		w.steps = append(w.steps, s)
	}
}

// follow returns the target of the symlink at p.
func (w *pathWalk) follow(p string) (string, error) {
	if w.links++; w.links > maxSymlinks {
		return "", &fs.PathError{Op: "resolve", Path: p, Err: syscall.ELOOP}
	}
	return os.Readlink(p)
}

func modeProblems(what, path string, fi fs.FileInfo, uid int) []string {
	var problems []string
	perm := fi.Mode().Perm()
	switch w := perm & 0o022; {
	case w == 0o022:
		problems = append(problems, fmt.Sprintf("%s %s is writable by its group and others (mode %04o)", what, path, perm))
	case w == 0o020:
		problems = append(problems, fmt.Sprintf("%s %s is writable by its group (mode %04o)", what, path, perm))
	case w == 0o002:
		problems = append(problems, fmt.Sprintf("%s %s is writable by others (mode %04o)", what, path, perm))
	}
	return append(problems, ownerProblems(what, path, fi, uid)...)
}

func ownerProblems(what, path string, fi fs.FileInfo, uid int) []string {
	if owner, ok := fileOwner(fi); ok && owner != 0 && owner != uid {
		return []string{fmt.Sprintf("%s %s is owned by uid %d, not root", what, path, owner)}
	}
	return nil
}
