package actions

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/rules"
)

func TestBuildOptions(t *testing.T) {
	tests := []struct {
		name    string
		fs      string
		helper  bool // the FUSE helper driver instead of the kernel one
		req     MountRequest
		want    string
		ignored []string
	}{
		{name: "ext4 defaults", fs: "ext4", want: "nosuid,nodev,noexec,errors=remount-ro"},
		{name: "ext2 defaults", fs: "ext2", want: "nosuid,nodev,noexec,errors=remount-ro"},
		{name: "ext4 exec", fs: "ext4", req: MountRequest{Exec: true}, want: "nosuid,nodev,errors=remount-ro"},
		{name: "ext4 owner has no uid option", fs: "ext4", req: MountRequest{UID: 1000, GID: 1000}, want: "nosuid,nodev,noexec,errors=remount-ro"},
		{name: "ext4 rule options", fs: "ext4", req: MountRequest{Options: []string{"noatime", "discard", "sync"}},
			want: "nosuid,nodev,noexec,noatime,sync,errors=remount-ro,discard"},
		{name: "ext4 flush ignored", fs: "ext4", req: MountRequest{Options: []string{"flush"}},
			want: "nosuid,nodev,noexec,errors=remount-ro", ignored: []string{"flush (not an option of ext4)"}},
		{name: "btrfs none", fs: "btrfs", want: "nosuid,nodev,noexec"},
		{name: "xfs none", fs: "xfs", want: "nosuid,nodev,noexec"},
		{name: "f2fs none", fs: "f2fs", want: "nosuid,nodev,noexec"},
		{name: "vfat defaults", fs: "vfat", want: "nosuid,nodev,noexec,uid=0,gid=0,shortname=mixed,utf8=1,showexec,flush"},
		{name: "vfat owner", fs: "vfat", req: MountRequest{UID: 1000, GID: 100},
			want: "nosuid,nodev,noexec,uid=1000,gid=100,shortname=mixed,utf8=1,showexec,flush"},
		{name: "vfat flush not doubled", fs: "vfat", req: MountRequest{Options: []string{"flush", "ro"}},
			want: "nosuid,nodev,noexec,ro,uid=0,gid=0,shortname=mixed,utf8=1,showexec,flush"},
		{name: "exfat", fs: "exfat", req: MountRequest{UID: 1000, GID: 1000},
			want: "nosuid,nodev,noexec,uid=1000,gid=1000,iocharset=utf8,errors=remount-ro"},
		{name: "exfat fuse", fs: "exfat", helper: true, want: "nosuid,nodev,noexec,uid=0,gid=0"},
		{name: "ntfs3", fs: "ntfs", req: MountRequest{UID: 1000, GID: 1000},
			want: "nosuid,nodev,noexec,uid=1000,gid=1000,windows_names"},
		{name: "ntfs-3g", fs: "ntfs", helper: true, req: MountRequest{UID: 1000, GID: 1000, Options: []string{"noatime", "discard"}},
			want: "nosuid,nodev,noexec,noatime,uid=1000,gid=1000,windows_names", ignored: []string{"discard (not an option of mount.ntfs-3g)"}},
		{name: "iso9660 read-only", fs: "iso9660", want: "nosuid,nodev,noexec,ro,uid=0,gid=0,iocharset=utf8,mode=0400,dmode=0500"},
		{name: "iso9660 rw ignored", fs: "iso9660", req: MountRequest{Options: []string{"rw"}},
			want: "nosuid,nodev,noexec,ro,uid=0,gid=0,iocharset=utf8,mode=0400,dmode=0500", ignored: []string{"rw (iso9660 is mounted read-only)"}},
		{name: "udf", fs: "udf", want: "nosuid,nodev,noexec,uid=0,gid=0,iocharset=utf8"},
		{name: "rw is the default", fs: "ext4", req: MountRequest{Options: []string{"rw"}}, want: "nosuid,nodev,noexec,errors=remount-ro"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := filesystems[tt.fs][0]
			if tt.helper {
				d = filesystems[tt.fs][len(filesystems[tt.fs])-1]
			}
			got, err := buildOptions(d, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got.all()); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.ignored, got.ignored); diff != "" {
				t.Errorf("ignored (-want +got):\n%s", diff)
			}
			for _, o := range got.data {
				if _, isFlag := msFlagNames[o]; isFlag {
					t.Errorf("flag option %q in the data string", o)
				}
			}
		})
	}
}

// msFlagNames are option words that must be flags, never data.
var msFlagNames = map[string]bool{
	"nosuid": true, "nodev": true, "noexec": true, "ro": true, "rw": true, "noatime": true,
	"nodiratime": true, "relatime": true, "strictatime": true, "lazytime": true, "sync": true, "dirsync": true,
	"exec": true, "suid": true, "dev": true,
}

func TestValidateMountOption(t *testing.T) {
	tests := []struct {
		opt     string
		wantErr string // "" means allowed
	}{
		{opt: "ro"}, {opt: "rw"}, {opt: "noatime"}, {opt: "nodiratime"}, {opt: "relatime"},
		{opt: "strictatime"}, {opt: "lazytime"}, {opt: "sync"}, {opt: "dirsync"},
		{opt: "flush"}, {opt: "discard"},
		{opt: "", wantErr: "empty"},
		{opt: "noatime,exec", wantErr: `contains ","`},
		{opt: "a,uid=0,exec", wantErr: `contains ","`},
		{opt: "no\tatime", wantErr: "control character"},
		{opt: "noatime\n", wantErr: "control character"},
		{opt: "uid=0", wantErr: "set owner"},
		{opt: "errors=continue", wantErr: "values are not allowed"},
		{opt: "exec", wantErr: "exec: true"},
		{opt: "suid", wantErr: "nosuid,nodev"},
		{opt: "dev", wantErr: "nosuid,nodev"},
		{opt: "uid", wantErr: "owner"},
		{opt: "remount", wantErr: "not allowed"},
		{opt: "bind", wantErr: "not allowed"},
		{opt: "user", wantErr: "fstab option"},
		{opt: "defaults", wantErr: "implied"},
		{opt: "no atime", wantErr: "space"},
		{opt: `no\atime`, wantErr: "allow-list"},
		{opt: "x-gvfs-show", wantErr: "allow-list"},
		{opt: "NOATIME", wantErr: "allow-list"},
	}
	for _, tt := range tests {
		t.Run(tt.opt, func(t *testing.T) {
			err := ValidateMountOption(tt.opt)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("ValidateMountOption(%q) = %v, want nil", tt.opt, err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("ValidateMountOption(%q) = nil, want an error containing %q", tt.opt, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("ValidateMountOption(%q) = %v, want it to contain %q", tt.opt, err, tt.wantErr)
			case err != nil && !errors.Is(err, ErrOptionRefused):
				t.Errorf("ValidateMountOption(%q) = %v, not ErrOptionRefused", tt.opt, err)
			}
		})
	}
}

func TestValidateMountOptionsConflicts(t *testing.T) {
	tests := []struct {
		opts    []string
		wantErr string
	}{
		{opts: nil},
		{opts: []string{"noatime", "sync", "flush"}},
		{opts: []string{"ro", "rw"}, wantErr: `"ro" and "rw"`},
		{opts: []string{"noatime", "relatime"}, wantErr: "noatime and relatime contradict"},
		{opts: []string{"noatime", "exec", "a,b"}, wantErr: "exec: true"},
	}
	for _, tt := range tests {
		err := ValidateMountOptions(tt.opts)
		if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("ValidateMountOptions(%q) = %v, want %q", tt.opts, err, tt.wantErr)
		}
	}
	// Every problem is reported, not just the first.
	err := ValidateMountOptions([]string{"exec", "a,b"})
	if err == nil || !strings.Contains(err.Error(), "exec: true") || !strings.Contains(err.Error(), "own list item") {
		t.Errorf("both problems not reported: %v", err)
	}
}

// The mounter classifies exactly the options the rules loader allows.
func TestRuleOptionsClassified(t *testing.T) {
	got := slices.Sorted(slices.Values(slices.Concat(ruleFlagOptions, ruleDataOptions)))
	want := slices.Sorted(slices.Values(rules.MountOptions()))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("options the mounter knows vs the loader allows (-want +got):\n%s", diff)
	}
}

// TestBuildOptionsRevalidates: a caller that skipped validation still
// cannot get anything into the data string.
func TestBuildOptionsRevalidates(t *testing.T) {
	for _, opt := range []string{"uid=0", "a,exec", "suid", "errors=continue"} {
		if _, err := buildOptions(filesystems["vfat"][0], MountRequest{Options: []string{opt}}); !errors.Is(err, ErrOptionRefused) {
			t.Errorf("buildOptions with %q: err = %v, want ErrOptionRefused", opt, err)
		}
	}
}

func TestOptionAllowedFilesystems(t *testing.T) {
	want := []string{"btrfs", "exfat", "ext2", "ext3", "ext4", "f2fs", "iso9660", "ntfs", "udf", "vfat", "xfs"}
	if diff := cmp.Diff(want, AllowedFilesystems()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
