package rules

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// UnsafePermissions returns why the rules file at path could be changed by
// someone other than root and the user uid (the daemon's own): the file,
// its directory, any directory above it (unless sticky, like /tmp) or,
// through a symlink, the target and its directories are writable by their
// group or others, or owned by another user. The file decides what
// runs as root, so the daemon refuses such a file and `hotplugd check`
// warns about it. A nil result means the file is safe.
func UnsafePermissions(path string, uid int) ([]string, error) {
	type item struct{ what, path string }
	items := []item{{"file", path}, {"directory", filepath.Dir(path)}}
	if real, err := filepath.EvalSymlinks(path); err == nil && filepath.Dir(real) != filepath.Dir(path) {
		items = append(items, item{"file", real}, item{"directory", filepath.Dir(real)})
	}
	var problems []string
	for _, it := range items {
		fi, err := os.Stat(it.path)
		if err != nil {
			return nil, err
		}
		problems = append(problems, modeProblems(it.what, it.path, fi, uid)...)
	}
	// Whoever may rename an ancestor may put another directory in its
	// place. A directory writable by others is safe only with the sticky
	// bit (like /tmp), which lets nobody rename what they do not own.
	dir := items[len(items)-1].path
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	for dir != "/" {
		dir = filepath.Dir(dir)
		fi, err := os.Stat(dir)
		if err != nil {
			return nil, err
		}
		if fi.Mode()&os.ModeSticky == 0 {
			problems = append(problems, modeProblems("directory", dir, fi, uid)...)
		} else if owner, ok := fileOwner(fi); ok && owner != 0 && owner != uid {
			problems = append(problems, fmt.Sprintf("directory %s is owned by uid %d, not root", dir, owner))
		}
	}
	return problems, nil
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
	if owner, ok := fileOwner(fi); ok && owner != 0 && owner != uid {
		problems = append(problems, fmt.Sprintf("%s %s is owned by uid %d, not root", what, path, owner))
	}
	return problems
}
