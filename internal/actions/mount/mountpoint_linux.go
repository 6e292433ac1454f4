package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxNameTries bounds the numeric suffixes tried for a taken name.
const maxNameTries = 1000

// openDirNoFollow opens the absolute directory path with O_PATH, one
// component at a time with O_NOFOLLOW, so no component may be a symlink
// (the kernel's RESOLVE_NO_SYMLINKS, done by hand so it also works where
// openat2(2) does not). With create, missing components are made 0755.
func openDirNoFollow(path string, create bool) (int, error) {
	if !filepath.IsAbs(path) {
		return -1, fmt.Errorf("%s: %w", path, errMountRootNotAbs)
	}
	path = filepath.Clean(path)
	fd, err := unix.Open("/", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /: %w", err)
	}
	walked := ""
	for _, comp := range strings.Split(path, "/") {
		if comp == "" {
			continue
		}
		walked += "/" + comp
		next, err := unix.Openat(fd, comp, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, comp, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				next, err = unix.Openat(fd, comp, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		if errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) {
			var st unix.Stat_t
			if unix.Fstatat(fd, comp, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				unix.Close(fd)
				return -1, fmt.Errorf("%w: %s is a symlink", ErrUnsafeMountRoot, walked)
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, fmt.Errorf("open %s: %w", walked, err)
		}
		fd = next
	}
	return fd, nil
}

// openMountRoot opens (creating if needed) the mount root and checks that
// no one but root, or the user hotplugd runs as, can write into it: such a
// user could otherwise swap a directory hotplugd created for a symlink
// between mkdir and mount.
func openMountRoot(path string) (int, error) {
	fd, err := openDirNoFollow(path, true)
	if err != nil {
		return -1, fmt.Errorf("mount root: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("mount root %s: %w", path, err)
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: %s is owned by uid %d", ErrUnsafeMountRoot, path, st.Uid)
	}
	if st.Mode&0o022 != 0 {
		unix.Close(fd)
		return -1, fmt.Errorf("%w: %s is writable by group or others (mode %04o)", ErrUnsafeMountRoot, path, st.Mode&0o7777)
	}
	return fd, nil
}

// mountDir is a directory hotplugd created to mount on.
type mountDir struct {
	rootFD int    // O_PATH fd of the mount root
	fd     int    // O_PATH fd of the directory itself
	name   string // its name in the mount root
	path   string // mount root + "/" + name
}

// procPath is a path that resolves to exactly this directory, whatever
// happens to its name: mount(2) on it cannot be redirected by a rename or
// a symlink swapped in.
func (d *mountDir) procPath() string { return "/proc/self/fd/" + strconv.Itoa(d.fd) }

// close releases the descriptors; the directory stays.
func (d *mountDir) close() {
	unix.Close(d.fd)
	unix.Close(d.rootFD)
}

// remove removes the directory (rmdir only: a directory that is not empty
// stays) and releases the descriptors.
func (d *mountDir) remove() error {
	defer d.close()
	if err := unix.Unlinkat(d.rootFD, d.name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("rmdir %s: %w", d.path, err)
	}
	return nil
}

// stillThere reports whether the name in the mount root still is this
// directory (not replaced, not a symlink).
func (d *mountDir) stillThere() bool {
	var byName, byFD unix.Stat_t
	if unix.Fstatat(d.rootFD, d.name, &byName, unix.AT_SYMLINK_NOFOLLOW) != nil || unix.Fstat(d.fd, &byFD) != nil {
		return false
	}
	return byName.Dev == byFD.Dev && byName.Ino == byFD.Ino
}

// createMountDir makes a new 0700 directory under the mount root named
// name, or name_1, name_2, ... when taken. An existing entry of any kind
// (directory, file, symlink) is never adopted: mkdir's EEXIST means "try
// the next name". It takes ownership of rootFD.
func createMountDir(rootFD int, root, name string) (*mountDir, error) {
	for n := range maxNameTries {
		cand := suffixedName(name, n)
		err := unix.Mkdirat(rootFD, cand, 0o700)
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			unix.Close(rootFD)
			return nil, fmt.Errorf("mkdir %s: %w", filepath.Join(root, cand), err)
		}
		fd, err := unix.Openat(rootFD, cand, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			unix.Unlinkat(rootFD, cand, unix.AT_REMOVEDIR)
			unix.Close(rootFD)
			return nil, fmt.Errorf("open %s: %w", filepath.Join(root, cand), err)
		}
		return &mountDir{rootFD: rootFD, fd: fd, name: cand, path: filepath.Join(root, cand)}, nil
	}
	unix.Close(rootFD)
	return nil, fmt.Errorf("%s/%s: %w after %d tries", root, name, errTooManyCollisions, maxNameTries)
}

// freeName returns the name createMountDir would take now, creating
// nothing; a missing mount root has every name free.
func freeName(root, name string) string {
	fd, err := openDirNoFollow(root, false)
	if err != nil {
		return name
	}
	defer unix.Close(fd)
	for n := range maxNameTries {
		cand := suffixedName(name, n)
		var st unix.Stat_t
		if err := unix.Fstatat(fd, cand, &st, unix.AT_SYMLINK_NOFOLLOW); errors.Is(err, unix.ENOENT) {
			return cand
		}
	}
	return name
}

// removeRecordedDir removes a directory hotplugd created, found by its
// recorded path: the parent is opened without following symlinks and the
// last component removed with rmdir (never anything recursive). A
// directory already gone is fine.
func removeRecordedDir(path string) error {
	parent, name := filepath.Split(path)
	fd, err := openDirNoFollow(parent, false)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("rmdir %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Unlinkat(fd, name, unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("rmdir %s: %w", path, err)
	}
	return nil
}
