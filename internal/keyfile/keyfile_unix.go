//go:build unix

package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// Check tells why the keyfile at path must not be used, or nil. It is
// the check when the rules load: the file is looked at, not opened (its
// contents are no business of a `hotplugd check`).
func Check(path string) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return fmt.Errorf("keyfile: %w", err)
	}
	return problem(path, fi)
}

// Open opens the keyfile at path for reading and checks what it opened:
// never through a symlink at its last component (O_NOFOLLOW), never
// blocking on a FIFO put there (O_NONBLOCK), and only when the open file
// is a regular file of root's no one else may read or write (fstat).
// Hand the returned file itself to the program that reads the key (as
// its stdin), not its path, which may lead elsewhere by then.
func Open(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symlink (name the file itself)", ErrUnsafe, path)
		}
		return nil, fmt.Errorf("keyfile: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = problem(path, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func owner(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return -1, false
	}
	return int(st.Uid), true
}
