package mount

import (
	"fmt"
	"os"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// mountinfoInfo is one line of mountinfo.
type mountinfoInfo = mountinfo.Info

// readMounts parses a mountinfo file (proc(5)), in mount order.
func readMounts(path string) ([]*mountinfo.Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	infos, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		return nil, fmt.Errorf("read mounts %s: %w", path, err)
	}
	return infos, nil
}

// isDeviceMount reports whether a mount's filesystem is on dev: same
// major:minor (block filesystems and fuseblk), or, for filesystems that
// show an anonymous device number (btrfs), the same source node.
func isDeviceMount(mi *mountinfo.Info, dev Device) bool {
	if uint32(mi.Major) == dev.Major && uint32(mi.Minor) == dev.Minor {
		return true
	}
	return dev.Devnode != "" && mi.Source == dev.Devnode
}

// deviceMountedAt returns where dev is mounted already, by anyone. Besides
// the device number it compares the rdev of /dev sources, so a btrfs
// mounted through a /dev/disk/by-* link is found too.
func deviceMountedAt(infos []*mountinfo.Info, dev Device) (string, bool) {
	for _, mi := range infos {
		if isDeviceMount(mi, dev) {
			return mi.Mountpoint, true
		}
	}
	for _, mi := range infos {
		if !strings.HasPrefix(mi.Source, "/dev/") || mi.Major != 0 {
			continue
		}
		var st unix.Stat_t
		if unix.Stat(mi.Source, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK &&
			unix.Major(st.Rdev) == dev.Major && unix.Minor(st.Rdev) == dev.Minor {
			return mi.Mountpoint, true
		}
	}
	return "", false
}

// mountsAt returns the mounts on path, bottom first.
func mountsAt(infos []*mountinfo.Info, path string) []*mountinfo.Info {
	var out []*mountinfo.Info
	for _, mi := range infos {
		if mi.Mountpoint == path {
			out = append(out, mi)
		}
	}
	return out
}
