package rules

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// UnsafeDir returns why the directory at path could be changed by
// someone other than root and the user uid: it is a symlink or not a
// directory, another user owns it, or its group or others may write it.
// A directory that does not exist yet is not unsafe (its maker chooses
// its mode). Such a directory holds what the daemon acts on later, as
// the broker's outbox does: whoever may write it may forge what is sent.
func UnsafeDir(path string, uid int) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case !fi.IsDir():
		return fmt.Errorf("%s is not a directory (or is a symlink)", path)
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("%s is writable by its group or others (mode %04o)", path, fi.Mode().Perm())
	}
	if owner, ok := fileOwner(fi); ok && owner != 0 && owner != uid {
		return fmt.Errorf("%s is owned by uid %d, not root", path, owner)
	}
	return nil
}
