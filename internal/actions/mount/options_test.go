package mount

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBuildOptions(t *testing.T) {
	tests := []struct {
		name    string
		fs      string
		helper  bool // the FUSE helper driver instead of the kernel one
		req     Request
		want    string
		ignored []string
	}{
		{name: "ext4 defaults", fs: "ext4", want: "nosuid,nodev,noexec,errors=remount-ro"},
		{name: "ext2 defaults", fs: "ext2", want: "nosuid,nodev,noexec,errors=remount-ro"},
		{name: "ext4 exec", fs: "ext4", req: Request{Exec: true}, want: "nosuid,nodev,errors=remount-ro"},
		{name: "ext4 owner has no uid option", fs: "ext4", req: Request{UID: 1000, GID: 1000}, want: "nosuid,nodev,noexec,errors=remount-ro"},
		{name: "ext4 rule options", fs: "ext4", req: Request{Options: []string{"noatime", "discard", "sync"}},
			want: "nosuid,nodev,noexec,noatime,sync,errors=remount-ro,discard"},
		{name: "ext4 flush ignored", fs: "ext4", req: Request{Options: []string{"flush"}},
			want: "nosuid,nodev,noexec,errors=remount-ro", ignored: []string{"flush (not an option of ext4)"}},
		{name: "btrfs none", fs: "btrfs", want: "nosuid,nodev,noexec"},
		{name: "xfs none", fs: "xfs", want: "nosuid,nodev,noexec"},
		{name: "f2fs none", fs: "f2fs", want: "nosuid,nodev,noexec"},
		{name: "vfat defaults", fs: "vfat", want: "nosuid,nodev,noexec,uid=0,gid=0,dmask=0022,fmask=0133,shortname=mixed,utf8=1,showexec,flush"},
		{name: "vfat owner", fs: "vfat", req: Request{UID: 1000, GID: 100, Owned: true},
			want: "nosuid,nodev,noexec,uid=1000,gid=100,dmask=0077,fmask=0177,shortname=mixed,utf8=1,showexec,flush"},
		{name: "vfat owner root", fs: "vfat", req: Request{Owned: true},
			want: "nosuid,nodev,noexec,uid=0,gid=0,dmask=0077,fmask=0177,shortname=mixed,utf8=1,showexec,flush"},
		{name: "vfat flush not doubled", fs: "vfat", req: Request{Options: []string{"flush", "ro"}},
			want: "nosuid,nodev,noexec,ro,uid=0,gid=0,dmask=0022,fmask=0133,shortname=mixed,utf8=1,showexec,flush"},
		{name: "exfat", fs: "exfat", req: Request{UID: 1000, GID: 1000, Owned: true},
			want: "nosuid,nodev,noexec,uid=1000,gid=1000,dmask=0077,fmask=0177,iocharset=utf8,errors=remount-ro"},
		{name: "exfat fuse", fs: "exfat", helper: true, want: "nosuid,nodev,noexec,uid=0,gid=0,dmask=0022,fmask=0133"},
		{name: "ntfs3", fs: "ntfs", req: Request{UID: 1000, GID: 1000, Owned: true},
			want: "nosuid,nodev,noexec,uid=1000,gid=1000,dmask=0077,fmask=0177,windows_names"},
		{name: "ntfs-3g", fs: "ntfs", helper: true, req: Request{UID: 1000, GID: 1000, Owned: true, Options: []string{"noatime", "discard"}},
			want: "nosuid,nodev,noexec,noatime,uid=1000,gid=1000,dmask=0077,fmask=0177,windows_names", ignored: []string{"discard (not an option of mount.ntfs-3g)"}},
		{name: "ntfs-3g no owner: readable, not writable, by all", fs: "ntfs", helper: true,
			want: "nosuid,nodev,noexec,uid=0,gid=0,dmask=0022,fmask=0133,windows_names"},
		{name: "iso9660 read-only", fs: "iso9660", want: "nosuid,nodev,noexec,ro,uid=0,gid=0,mode=0644,dmode=0755,iocharset=utf8"},
		{name: "iso9660 rw ignored", fs: "iso9660", req: Request{Options: []string{"rw"}},
			want: "nosuid,nodev,noexec,ro,uid=0,gid=0,mode=0644,dmode=0755,iocharset=utf8", ignored: []string{"rw (iso9660 is mounted read-only)"}},
		{name: "udf", fs: "udf", want: "nosuid,nodev,noexec,uid=0,gid=0,mode=0644,dmode=0755,iocharset=utf8"},
		{name: "udf owner", fs: "udf", req: Request{UID: 1000, GID: 1000, Owned: true},
			want: "nosuid,nodev,noexec,uid=1000,gid=1000,mode=0600,dmode=0700,iocharset=utf8"},
		{name: "rw is the default", fs: "ext4", req: Request{Options: []string{"rw"}}, want: "nosuid,nodev,noexec,errors=remount-ro"},
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

// TestBuildOptionsRevalidates: a caller that skipped validation still
// cannot get anything into the data string.
func TestBuildOptionsRevalidates(t *testing.T) {
	for _, opt := range []string{"uid=0", "a,exec", "suid", "errors=continue"} {
		if _, err := buildOptions(filesystems["vfat"][0], Request{Options: []string{opt}}); !errors.Is(err, ErrOptionRefused) {
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
