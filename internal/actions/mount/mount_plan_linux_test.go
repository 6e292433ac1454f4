package mount

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/host"
)

// TestMountPlan: the dry run decides everything a mount would, for devices
// that need not exist, and creates nothing.
func TestMountPlan(t *testing.T) {
	dir := t.TempDir()
	proc := fakeProc(t, "nodev\tproc\n\text4\n\tvfat\n\tbtrfs\n")
	fsPath := filepath.Join(proc, "filesystems")
	fstab := filepath.Join(dir, "fstab") // Roots.Etc is dir
	if err := os.WriteFile(fstab, []byte("LABEL=ADMIN /srv ext4 defaults 0 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	helpers := filepath.Join(dir, "sbin")
	if err := os.Mkdir(helpers, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(helpers, "mount.ntfs-3g"), []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	ownedByRoot := os.Geteuid() == 0
	m, err := NewMounter(Config{
		MountRoot:  filepath.Join(dir, "media"),
		StatePath:  filepath.Join(dir, "run", "mounts.json"),
		Roots:      host.Roots{Etc: dir, Proc: proc},
		ModulesDir: filepath.Join(dir, "modules"),
		HelperDirs: []string{helpers},
	})
	if err != nil {
		t.Fatal(err)
	}
	dev := func(fsType, label string) Device {
		return Device{Major: 8, Minor: 17, Devnode: "/dev/sdb1", Devname: "sdb1", FSUsage: "filesystem", FSType: fsType, Label: label, UUID: "5E2F-1A3B"}
	}
	root := filepath.Join(dir, "media")

	t.Run("vfat with owner and options", func(t *testing.T) {
		p, err := m.Plan(dev("vfat", "STICK"), Request{UID: 1000, GID: 1000, Owned: true, Options: []string{"noatime", "flush", "discard"}})
		if err != nil {
			t.Fatal(err)
		}
		want := Plan{
			MountPoint: filepath.Join(root, "STICK"),
			FSType:     "vfat",
			Driver:     "vfat",
			Flags:      []string{"nosuid", "nodev", "noexec", "noatime"},
			Data:       "uid=1000,gid=1000,dmask=0077,fmask=0177,shortname=mixed,utf8=1,showexec,flush,discard",
			Options:    "nosuid,nodev,noexec,noatime,uid=1000,gid=1000,dmask=0077,fmask=0177,shortname=mixed,utf8=1,showexec,flush,discard",
		}
		p.Device = Device{}
		if diff := cmp.Diff(want, p, cmp.FilterPath(func(p cmp.Path) bool {
			return p.Last().String() == ".name" || p.Last().String() == ".drv" || p.Last().String() == ".opts"
		}, cmp.Ignore())); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("ntfs through the helper", func(t *testing.T) {
		p, err := m.Plan(dev("ntfs", "My Disk"), Request{})
		if !ownedByRoot {
			if !errors.Is(err, ErrUnsupportedFS) || !strings.Contains(err.Error(), "is not owned by root") {
				t.Errorf("helper owned by uid %d: %v", os.Geteuid(), err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if p.Helper != filepath.Join(helpers, "mount.ntfs-3g") || p.Driver != "mount.ntfs-3g" || p.MountPoint != filepath.Join(root, "My Disk") ||
			p.Options != "nosuid,nodev,noexec,uid=0,gid=0,dmask=0022,fmask=0133,windows_names" {
			t.Errorf("plan %+v", p)
		}
	})
	t.Run("exfat unsupported names what it looked for", func(t *testing.T) {
		_, err := m.Plan(dev("exfat", "X"), Request{})
		want := `mount /dev/sdb1: filesystem exfat is not supported by this kernel (no "exfat" in ` + fsPath +
			`) and no mount helper was found (looked for mount.exfat-fuse, mount.exfat in ` + helpers + `)`
		if err == nil || err.Error() != want {
			t.Errorf("got  %v\nwant %s", err, want)
		}
	})
	t.Run("refusals", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			dev  Device
			req  Request
			want error
			skip bool
		}{
			{"crypto container", Device{Major: 8, Minor: 17, Devnode: "/dev/sdb1", FSUsage: "crypto", FSType: "crypto_LUKS"}, Request{}, ErrNotFilesystem, true},
			{"no usage", Device{Major: 8, Minor: 17, Devnode: "/dev/sdb1", FSType: "ext4"}, Request{}, ErrNotFilesystem, true},
			{"type not allowed", dev("hfsplus", "MAC"), Request{}, ErrFilesystemRefused, true},
			{"type with a path", dev("../../ext4", "X"), Request{}, ErrFilesystemRefused, true},
			{"in fstab", dev("ext4", "ADMIN"), Request{}, ErrInFstab, true},
			{"bad option", dev("ext4", "X"), Request{Options: []string{"uid=0"}}, ErrOptionRefused, false},
		} {
			_, err := m.Plan(tt.dev, tt.req)
			if !errors.Is(err, tt.want) || errors.Is(err, ErrSkipped) != tt.skip {
				t.Errorf("%s: %v, want %v (skip %v)", tt.name, err, tt.want, tt.skip)
			}
		}
	})
	if _, err := os.Lstat(root); !errors.Is(err, os.ErrNotExist) {
		t.Error("Plan created the mount root")
	}
	if _, err := os.Lstat(filepath.Join(dir, "run", "mounts.json")); !errors.Is(err, os.ErrNotExist) {
		t.Error("Plan wrote the state file")
	}
}

func TestMountParseDevNum(t *testing.T) {
	d, err := parseDevNum("259:3")
	if err != nil || d.Major != 259 || d.Minor != 3 || d.DevNum() != "259:3" {
		t.Errorf("parseDevNum(259:3) = %+v, %v", d, err)
	}
	for _, bad := range []string{"", "259", "a:b", "1:-1", "1:2:3", "4294967296:0"} {
		if _, err := parseDevNum(bad); err == nil {
			t.Errorf("parseDevNum(%q) accepted", bad)
		}
	}
}
