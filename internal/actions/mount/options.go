package mount

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/hotplugd/hotplugd/internal/rules"
)

// ErrOptionRefused is wrapped by the errors of options a rule may not
// add (rules.CheckMountOption says why).
var ErrOptionRefused = errors.New("mount option refused")

// AllowedFilesystems lists the filesystem types (as blkid/udev name them in
// ID_FS_TYPE) that hotplugd mounts. Anything else is refused, so a device
// cannot make the kernel load the module of an arbitrary, perhaps little
// tested, filesystem driver.
func AllowedFilesystems() []string {
	types := make([]string, 0, len(filesystems))
	for t := range filesystems {
		types = append(types, t)
	}
	slices.Sort(types)
	return types
}

// driver is one way to mount a filesystem type: a kernel filesystem or a
// FUSE mount helper. The first usable driver of a type is chosen.
type driver struct {
	// kernel is the filesystem type given to mount(2); "" for helpers.
	kernel string
	// helpers are the names of the mount helper programs, tried in order
	// in the configured helper directories.
	helpers []string
	// helperType is the type a helper's mount has in mountinfo.
	helperType string
	// owner: the driver takes uid= and gid= (filesystems without Unix
	// ownership), and file modes from masks, never from the umask of the
	// daemon (0077 under the unit, 0022 from a shell).
	owner bool
	// modes is how the driver takes file modes: masks (dmask=, fmask=)
	// or modes (mode=, dmode=).
	modes modeStyle
	// flags are forced flag options (iso9660 is read-only).
	flags []string
	// data are the udisks2-like defaults, after uid= and gid=.
	data []string
	// ruleData are the rule data options this driver understands.
	ruleData []string
}

// name is how the driver is shown: the kernel type or the first helper.
func (d driver) name() string {
	if d.kernel != "" {
		return d.kernel
	}
	return d.helpers[0]
}

// filesystems is the filesystem-type allow-list with each type's drivers in
// order of preference. The defaults follow udisks2's mount_options.conf.
var filesystems = map[string][]driver{
	"ext2":  {{kernel: "ext2", data: []string{"errors=remount-ro"}, ruleData: []string{"discard"}}},
	"ext3":  {{kernel: "ext3", data: []string{"errors=remount-ro"}, ruleData: []string{"discard"}}},
	"ext4":  {{kernel: "ext4", data: []string{"errors=remount-ro"}, ruleData: []string{"discard"}}},
	"btrfs": {{kernel: "btrfs", ruleData: []string{"discard"}}},
	"xfs":   {{kernel: "xfs", ruleData: []string{"discard"}}},
	"f2fs":  {{kernel: "f2fs", ruleData: []string{"discard"}}},
	"vfat": {{kernel: "vfat", owner: true, modes: masks,
		data:     []string{"shortname=mixed", "utf8=1", "showexec", "flush"},
		ruleData: []string{"flush", "discard"}}},
	"exfat": {
		{kernel: "exfat", owner: true, modes: masks,
			data:     []string{"iocharset=utf8", "errors=remount-ro"},
			ruleData: []string{"discard"}},
		{helpers: []string{"mount.exfat-fuse", "mount.exfat"}, helperType: "fuseblk", owner: true, modes: masks},
	},
	"ntfs": {
		{kernel: "ntfs3", owner: true, modes: masks, data: []string{"windows_names"}, ruleData: []string{"discard"}},
		{helpers: []string{"mount.ntfs-3g", "ntfs-3g"}, helperType: "fuseblk", owner: true, modes: masks,
			data: []string{"windows_names"}},
	},
	"iso9660": {{kernel: "iso9660", owner: true, modes: fileModes, flags: []string{"ro"},
		data: []string{"iocharset=utf8"}}},
	"udf": {{kernel: "udf", owner: true, modes: fileModes, data: []string{"iocharset=utf8"}}},
}

// modeStyle is how a driver without Unix permissions takes file modes.
type modeStyle int

const (
	masks     modeStyle = iota + 1 // dmask= and fmask= (vfat, exfat, ntfs)
	fileModes                      // mode= and dmode= (iso9660, udf)
)

// modeOptions are the explicit modes of a mount: with an owner, the files
// are that user's alone; without, root's and readable by all. Execute
// bits on files are left to noexec (and showexec on vfat).
func modeOptions(style modeStyle, owned bool) []string {
	switch {
	case style == masks && owned:
		return []string{"dmask=0077", "fmask=0177"}
	case style == masks:
		return []string{"dmask=0022", "fmask=0133"}
	case style == fileModes && owned:
		return []string{"mode=0600", "dmode=0700"}
	case style == fileModes:
		return []string{"mode=0644", "dmode=0755"}
	}
	return nil
}

// builtOptions are the options of one mount, all chosen by hotplugd.
type builtOptions struct {
	flags   []string // flag options: always nosuid, nodev, and noexec unless exec
	data    []string // the data string's elements
	ignored []string // rule options this driver does not take, with why
}

// all is the whole list as mount(8) and a FUSE helper's -o take it.
func (o builtOptions) all() string {
	return strings.Join(slices.Concat(o.flags, o.data), ",")
}

// buildOptions makes the options of a mount with driver d. The loader
// has checked the rule's options; they are checked again here, with the
// same list, so an unchecked caller cannot smuggle anything into the data
// string.
func buildOptions(d driver, req Request) (builtOptions, error) {
	if err := rules.CheckMountOptions(req.Options); err != nil {
		return builtOptions{}, fmt.Errorf("%w: %w", ErrOptionRefused, err)
	}
	var o builtOptions
	o.flags = []string{"nosuid", "nodev"}
	if !req.Exec {
		o.flags = append(o.flags, "noexec")
	}
	for _, f := range d.flags {
		if !slices.Contains(o.flags, f) {
			o.flags = append(o.flags, f)
		}
	}
	if d.owner {
		o.data = append(o.data,
			"uid="+strconv.FormatUint(uint64(req.UID), 10),
			"gid="+strconv.FormatUint(uint64(req.GID), 10))
		o.data = append(o.data, modeOptions(d.modes, req.Owned)...)
	}
	o.data = append(o.data, d.data...)
	for _, opt := range req.Options {
		switch {
		case rules.MountFlag(opt):
			if opt == "rw" {
				if slices.Contains(d.flags, "ro") {
					o.ignored = append(o.ignored, fmt.Sprintf("rw (%s is mounted read-only)", d.name()))
				}
				continue // read-write is the default
			}
			if !slices.Contains(o.flags, opt) {
				o.flags = append(o.flags, opt)
			}
		case slices.Contains(d.ruleData, opt):
			if !slices.Contains(o.data, opt) {
				o.data = append(o.data, opt)
			}
		default:
			o.ignored = append(o.ignored, fmt.Sprintf("%s (not an option of %s)", opt, d.name()))
		}
	}
	return o, nil
}
