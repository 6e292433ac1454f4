// Package keyfile checks the files that hold the secrets hotplugd hands
// to programs, the keys of encrypted disks: a regular file of root's that
// no one else may read or write. The rules check a keyfile when they
// load, by its path, so `hotplugd check` reports it; the action checks it
// again just before use on the descriptor it passes on, so no rename or
// symlink put in its place in between is ever read.
package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
)

// ErrUnsafe is wrapped by the error of a keyfile that is not root's
// alone: another user could read the key, or put one of theirs there.
var ErrUnsafe = errors.New("unsafe keyfile")

// problem returns why the file at path, of which fi tells, must not be
// used as a key, or nil.
func problem(path string, fi fs.FileInfo) error {
	mode := fi.Mode()
	switch {
	case mode&fs.ModeSymlink != 0:
		return fmt.Errorf("%w: %s is a symlink (name the file itself)", ErrUnsafe, path)
	case !mode.IsRegular():
		return fmt.Errorf("%w: %s is not a regular file", ErrUnsafe, path)
	}
	if uid, ok := owner(fi); !ok || uid != 0 {
		return fmt.Errorf("%w: %s is owned by uid %d, not root (chown root: %s)", ErrUnsafe, path, uid, path)
	}
	if perm := mode.Perm(); perm&0o066 != 0 {
		return fmt.Errorf("%w: %s is %s by its group or others (mode %04o; chmod 0400 %s)",
			ErrUnsafe, path, access(perm), perm, path)
	}
	return nil
}

// access says what group and others may do with a file of mode perm.
func access(perm fs.FileMode) string {
	switch r, w := perm&0o044 != 0, perm&0o022 != 0; {
	case r && w:
		return "readable and writable"
	case r:
		return "readable"
	}
	return "writable"
}
