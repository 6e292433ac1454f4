package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/looptest"
)

// checkMounted asserts a mount of dev at path with hotplugd's safe flags
// and the wanted filesystem (super block) options.
func checkMounted(t *testing.T, path string, dev Device, fsType string, superOpts ...string) {
	t.Helper()
	mi := mountOn(t, path)
	if mi == nil {
		t.Fatalf("nothing mounted at %s", path)
	}
	if mi.Source != dev.Devnode || mi.FSType != fsType {
		t.Errorf("mounted %s (%s) at %s, want %s (%s)", mi.Source, mi.FSType, path, dev.Devnode, fsType)
	}
	if !hasOptions(mi.Options, "nosuid", "nodev", "noexec") {
		t.Errorf("mount options %q lack nosuid,nodev,noexec", mi.Options)
	}
	if !hasOptions(mi.VFSOptions, superOpts...) {
		t.Errorf("super options %q lack %q", mi.VFSOptions, superOpts)
	}
}

func TestMountExt4Backup(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	disk := newDisk(t, "ext4", "BACKUP", diskOptions{populate: map[string]string{"hello.txt": "hello from BACKUP\n"}})
	fx := newMountFixture(t, nil)
	ctx := context.Background()

	plan, err := fx.m.Plan(disk.dev, Request{Rule: "usb"})
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(fx.root, "BACKUP")
	if plan.MountPoint != want || plan.Options != "nosuid,nodev,noexec,errors=remount-ro" || plan.Driver != "ext4" {
		t.Errorf("plan = %s %q %s, want %s nosuid,nodev,noexec,errors=remount-ro ext4", plan.MountPoint, plan.Options, plan.Driver, want)
	}
	if _, err := os.Lstat(fx.root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Plan created the mount root (lstat: %v)", err)
	}

	entry, err := fx.m.Mount(ctx, disk.dev, Request{Rule: "usb"})
	if err != nil {
		t.Fatal(err)
	}
	if entry.MountPoint != want {
		t.Errorf("mounted at %s, want %s", entry.MountPoint, want)
	}
	checkMounted(t, want, disk.dev, "ext4", "errors=remount-ro")
	if b, err := os.ReadFile(filepath.Join(want, "hello.txt")); err != nil || string(b) != "hello from BACKUP\n" {
		t.Errorf("reading the file on the mount: %q, %v", b, err)
	}
	got := stateEntries(t, fx.state)[disk.dev.DevNum()]
	recorded := disk.dev
	recorded.FSUsage, recorded.FSType = "", "" // not part of the device record
	recorded.Diskseq = disk.diskseq(t)         // the partition's is its disk's
	wantEntry := Entry{
		Device:     recorded,
		MountPoint: want, FSType: "ext4", Driver: "ext4", Options: "nosuid,nodev,noexec,errors=remount-ro",
		Rule: "usb", CreatedDir: true, MountedAt: got.MountedAt,
	}
	if diff := cmp.Diff(wantEntry, got); diff != "" {
		t.Errorf("state entry (-want +got):\n%s", diff)
	}
	if time.Since(got.MountedAt) > time.Minute {
		t.Errorf("mounted_at %v", got.MountedAt)
	}

	// A second add of the same device is a skip, not a second mount.
	if _, err := fx.m.Mount(ctx, disk.dev, Request{}); !errors.Is(err, ErrAlreadyMounted) || !errors.Is(err, ErrSkipped) {
		t.Errorf("second Mount: %v, want ErrAlreadyMounted", err)
	}

	res, err := fx.m.Unmount(ctx, Device{Devpath: disk.dev.Devpath}) // as a remove event knows it
	if err != nil {
		t.Fatal(err)
	}
	if !res.Unmounted || res.Lazy || !res.DirRemoved {
		t.Errorf("Unmount = %+v, want unmounted, not lazy, dir removed", res)
	}
	if mi := mountOn(t, want); mi != nil {
		t.Errorf("still mounted: %+v", mi)
	}
	if _, err := os.Lstat(want); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point left behind (lstat: %v)", err)
	}
	if n := len(stateEntries(t, fx.state)); n != 0 {
		t.Errorf("%d state entries left", n)
	}
	if _, err := fx.m.Unmount(ctx, disk.dev); !errors.Is(err, ErrNotMounted) {
		t.Errorf("Unmount again: %v, want ErrNotMounted", err)
	}
}

func TestMountNTFSHelper(t *testing.T) {
	looptest.Require(t, "mkntfs", "ntfs-3g")
	disk := newDisk(t, "ntfs", "My Disk", diskOptions{})
	fx := newMountFixture(t, func(c *Config) {
		// This test is about the FUSE helper: a kernel with ntfs3 would
		// take the disk itself.
		c.Roots.Proc = writeFilesystemsWithout(t, "ntfs3")
		c.ModulesDir = t.TempDir()
	})
	ctx := context.Background()
	want := filepath.Join(fx.root, "My Disk")

	plan, err := fx.m.Plan(disk.dev, Request{UID: 1000, GID: 1000, Owned: true})
	if err != nil {
		t.Fatal(err)
	}
	if plan.Helper == "" || plan.MountPoint != want || plan.Options != "nosuid,nodev,noexec,uid=1000,gid=1000,dmask=0077,fmask=0177,windows_names" {
		t.Errorf("plan = %+v", plan)
	}

	entry, err := fx.m.Mount(ctx, disk.dev, Request{Rule: "usb", UID: 1000, GID: 1000, Owned: true})
	if err != nil {
		t.Fatal(err)
	}
	if entry.MountPoint != want || entry.Driver != plan.Helper {
		t.Errorf("entry = %+v", entry)
	}
	checkMounted(t, want, disk.dev, "fuseblk", "user_id=0", "allow_other")
	st, err := os.Stat(want)
	if err != nil {
		t.Fatal(err)
	}
	if sys := st.Sys().(*syscall.Stat_t); sys.Uid != 1000 || sys.Gid != 1000 || st.Mode().Perm() != 0o700 {
		t.Errorf("root of the mount %v owned by %d:%d, want 0700 1000:1000 (owner)", st.Mode(), sys.Uid, sys.Gid)
	}
	file := filepath.Join(want, "hello.txt")
	if err := os.WriteFile(file, []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "hi" {
		t.Errorf("read back %q, %v", b, err)
	}

	res, err := fx.m.Unmount(ctx, disk.dev)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Unmounted || !res.DirRemoved {
		t.Errorf("Unmount = %+v", res)
	}
	if mountOn(t, want) != nil {
		t.Error("still mounted")
	}
	if names := dirEntries(t, fx.root); len(names) != 0 {
		t.Errorf("mount root holds %q", names)
	}
	if n := len(stateEntries(t, fx.state)); n != 0 {
		t.Errorf("%d state entries left", n)
	}
}

// writeFilesystemsWithout writes a copy of /proc/filesystems without the
// named types.
func writeFilesystemsWithout(t *testing.T, drop ...string) string {
	t.Helper()
	b, err := os.ReadFile(host.Default().ProcPath("filesystems"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) > 0 && slices.Contains(drop, f[len(f)-1]) {
			continue
		}
		out.WriteString(line)
	}
	return fakeProc(t, out.String())
}

// TestMountVfatUnsupported: this kernel has no vfat and there is no
// helper, so the mount fails saying exactly that and leaves nothing.
// Where the kernel does have vfat, a copy of /proc/filesystems without it
// stands in.
func TestMountVfatUnsupported(t *testing.T) {
	looptest.Require(t, "mkfs.vfat")
	disk := newDisk(t, "vfat", "STICK", diskOptions{})
	fx := newMountFixture(t, func(c *Config) {
		known, err := readProcFilesystems(host.Default().ProcPath("filesystems"))
		if err != nil {
			t.Fatal(err)
		}
		m := &Mounter{cfg: Config{ModulesDir: DefaultModulesDir}}
		if known["vfat"] || m.moduleAvailable("vfat") {
			c.Roots.Proc = writeFilesystemsWithout(t, "vfat")
			c.ModulesDir = t.TempDir()
		}
	})
	_, err := fx.m.Mount(context.Background(), disk.dev, Request{})
	want := fmt.Sprintf("mount %s: filesystem vfat is not supported by this kernel (no \"vfat\" in %s) and no mount helper was found",
		disk.part, fx.m.cfg.filesystemsPath())
	if err == nil || err.Error() != want {
		t.Errorf("Mount error:\n got %v\nwant %s", err, want)
	}
	if !errors.Is(err, ErrUnsupportedFS) || errors.Is(err, ErrSkipped) {
		t.Errorf("error %v: want ErrUnsupportedFS, not a skip", err)
	}
	if _, err := fx.m.Plan(disk.dev, Request{}); !errors.Is(err, ErrUnsupportedFS) {
		t.Errorf("Plan: %v, want ErrUnsupportedFS", err)
	}
	if _, ok := deviceMountedAt(mustMounts(t), disk.dev); ok {
		t.Error("vfat disk is mounted")
	}
	if names := dirEntries(t, fx.root); len(names) != 0 {
		t.Errorf("mount root holds %q", names)
	}
	if n := len(stateEntries(t, fx.state)); n != 0 {
		t.Errorf("%d state entries", n)
	}
}

func mustMounts(t *testing.T) []*mountinfoInfo {
	t.Helper()
	infos, err := readMounts(host.Default().ProcPath("self", "mountinfo"))
	if err != nil {
		t.Fatal(err)
	}
	return infos
}

func TestMountSameLabelTwice(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	a := newDisk(t, "ext4", "SAME", diskOptions{})
	b := newDisk(t, "ext4", "SAME", diskOptions{})
	fx := newMountFixture(t, nil)
	ctx := context.Background()
	ea, err := fx.m.Mount(ctx, a.dev, Request{})
	if err != nil {
		t.Fatal(err)
	}
	eb, err := fx.m.Mount(ctx, b.dev, Request{})
	if err != nil {
		t.Fatal(err)
	}
	if ea.MountPoint != filepath.Join(fx.root, "SAME") || eb.MountPoint != filepath.Join(fx.root, "SAME_1") {
		t.Errorf("mount points %s and %s, want SAME and SAME_1", ea.MountPoint, eb.MountPoint)
	}
	checkMounted(t, ea.MountPoint, a.dev, "ext4")
	checkMounted(t, eb.MountPoint, b.dev, "ext4")
	if n := len(stateEntries(t, fx.state)); n != 2 {
		t.Errorf("%d state entries, want 2", n)
	}
	for _, d := range []*testDisk{a, b} {
		if _, err := fx.m.Unmount(ctx, d.dev); err != nil {
			t.Error(err)
		}
	}
	if names := dirEntries(t, fx.root); len(names) != 0 {
		t.Errorf("mount root holds %q", names)
	}
}

// TestMountHostileLabels: labels read back from real filesystems by blkid
// are mounted as one sanitized component directly under the mount root;
// nothing runs and no option changes.
func TestMountHostileLabels(t *testing.T) {
	looptest.Require(t, "mkfs.ext4", "mkfs.btrfs")
	marker := filepath.Join(os.TempDir(), "pwned")
	os.Remove(marker)
	tests := []struct {
		fs, label, want string
	}{
		{"btrfs", "$(touch " + marker + ")", "$(touch " + strings.ReplaceAll(marker, "/", "_") + ")"}, // ext4 labels hold only 16 bytes
		{"ext4", "`touch /tmp/pw`", "_touch _tmp_pw_"},
		{"ext4", "a;reboot", "a;reboot"},
		{"ext4", "a,uid=0,exec", "a,uid=0,exec"},
		{"ext4", "../x", "_._x"},
		{"ext4", "a/../../etc", "a_.._.._etc"},
		{"ext4", ".hidden", "_hidden"},
		{"ext4", "..", ""}, // falls back to the UUID
		{"ext4", "a\nb\tc\x7f", "a_b_c_"},
	}
	fx := newMountFixture(t, nil)
	ctx := context.Background()
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.label), func(t *testing.T) {
			disk := newDisk(t, tt.fs, tt.label, diskOptions{})
			if disk.dev.Label != tt.label {
				t.Fatalf("blkid reads label %q, want %q", disk.dev.Label, tt.label)
			}
			want := tt.want
			if want == "" {
				want = disk.dev.UUID
			}
			entry, err := fx.m.Mount(ctx, disk.dev, Request{})
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Dir(entry.MountPoint) != fx.root || filepath.Base(entry.MountPoint) != want {
				t.Errorf("mounted at %q, want %q", entry.MountPoint, filepath.Join(fx.root, want))
			}
			if names := dirEntries(t, fx.root); len(names) != 1 || names[0] != want {
				t.Errorf("mount root holds %q, want just %q", names, want)
			}
			mi := mountOn(t, entry.MountPoint)
			if mi == nil {
				t.Fatal("not mounted")
			}
			if !hasOptions(mi.Options, "nosuid", "nodev", "noexec") || strings.Contains(mi.VFSOptions, "uid=") {
				t.Errorf("options changed: %q / %q", mi.Options, mi.VFSOptions)
			}
			wantOpts := "nosuid,nodev,noexec"
			if tt.fs == "ext4" {
				wantOpts += ",errors=remount-ro"
			}
			if entry.Options != wantOpts {
				t.Errorf("options %q, want %q", entry.Options, wantOpts)
			}
			if _, err := fx.m.Unmount(ctx, disk.dev); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(marker); err == nil {
				t.Errorf("%s exists: a label was executed", marker)
			}
		})
	}
}

func TestMountRootSymlinkRefused(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	disk := newDisk(t, "ext4", "BACKUP", diskOptions{})
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.Mkdir(real, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "media")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	for name, root := range map[string]string{
		"root is a symlink":     link,
		"a parent is a symlink": filepath.Join(link, "sub"),
	} {
		t.Run(name, func(t *testing.T) {
			fx := newMountFixture(t, func(c *Config) { c.MountRoot = root })
			_, err := fx.m.Mount(context.Background(), disk.dev, Request{})
			if !errors.Is(err, ErrUnsafeMountRoot) || !strings.Contains(err.Error(), link+" is a symlink") {
				t.Errorf("Mount: %v, want ErrUnsafeMountRoot naming %s", err, link)
			}
			if names := dirEntries(t, real); len(names) != 0 {
				t.Errorf("created %q through the symlink", names)
			}
		})
	}
	t.Run("group-writable root", func(t *testing.T) {
		fx := newMountFixture(t, nil)
		if err := os.Mkdir(fx.root, 0o775); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(fx.root, 0o775); err != nil {
			t.Fatal(err)
		}
		if _, err := fx.m.Mount(context.Background(), disk.dev, Request{}); !errors.Is(err, ErrUnsafeMountRoot) {
			t.Errorf("Mount: %v, want ErrUnsafeMountRoot", err)
		}
		if names := dirEntries(t, fx.root); len(names) != 0 {
			t.Errorf("mount root holds %q", names)
		}
	})
	if mountOn(t, filepath.Join(real, "BACKUP")) != nil {
		t.Error("mounted through a symlink")
	}
}

// TestMountNeverAdopts: a directory, a file and a symlink that hold the
// wanted names are left as they are; the mount gets the next free name.
func TestMountNeverAdopts(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	disk := newDisk(t, "ext4", "BACKUP", diskOptions{})
	fx := newMountFixture(t, nil)
	elsewhere := t.TempDir()
	if err := os.MkdirAll(filepath.Join(fx.root, "BACKUP"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(fx.root, "BACKUP_1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(fx.root, "BACKUP_2")); err != nil {
		t.Fatal(err)
	}
	plan, err := fx.m.Plan(disk.dev, Request{})
	if err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(fx.root, "BACKUP_3")
	if plan.MountPoint != want {
		t.Errorf("plan mount point %s, want %s", plan.MountPoint, want)
	}
	entry, err := fx.m.Mount(context.Background(), disk.dev, Request{})
	if err != nil {
		t.Fatal(err)
	}
	if entry.MountPoint != want {
		t.Errorf("mounted at %s, want %s", entry.MountPoint, want)
	}
	for _, p := range []string{filepath.Join(fx.root, "BACKUP"), elsewhere} {
		if mountOn(t, p) != nil {
			t.Errorf("%s was mounted on", p)
		}
	}
	if fi, err := os.Lstat(filepath.Join(fx.root, "BACKUP_2")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("symlink BACKUP_2 changed: %v %v", fi, err)
	}
	if _, err := fx.m.Unmount(context.Background(), disk.dev); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"BACKUP", "BACKUP_1", "BACKUP_2"}, dirEntries(t, fx.root)); diff != "" {
		t.Errorf("mount root after unmount (-want +got):\n%s", diff)
	}
}

// TestMountUnmountBusy: a file held open makes the filesystem busy; Unmount
// detaches it lazily, says so, and the directory is removed.
func TestMountUnmountBusy(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	disk := newDisk(t, "ext4", "BUSY", diskOptions{populate: map[string]string{"open.txt": "still here"}})
	fx := newMountFixture(t, nil)
	ctx := context.Background()
	entry, err := fx.m.Mount(ctx, disk.dev, Request{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(entry.MountPoint, "open.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	res, err := fx.m.Unmount(ctx, disk.dev)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Lazy || !res.Unmounted || !res.DirRemoved {
		t.Errorf("Unmount = %+v, want lazy, unmounted, dir removed", res)
	}
	if mountOn(t, entry.MountPoint) != nil {
		t.Error("still in the mount table")
	}
	if _, err := os.Lstat(entry.MountPoint); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory left (lstat: %v)", err)
	}
	if n := len(stateEntries(t, fx.state)); n != 0 {
		t.Errorf("%d state entries", n)
	}
	// The detached filesystem lives on for its last user.
	b := make([]byte, 32)
	if n, err := f.ReadAt(b, 0); string(b[:n]) != "still here" {
		t.Errorf("open file after lazy unmount: %q, %v", b[:n], err)
	}
}

// TestMountUnmountFailureKeepsEntry: when something else is mounted over
// hotplugd's mount, Unmount refuses, keeps the entry, and a retry after
// the obstacle is gone finishes the job.
func TestMountUnmountFailureKeepsEntry(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	disk := newDisk(t, "ext4", "STACK", diskOptions{})
	fx := newMountFixture(t, nil)
	ctx := context.Background()
	entry, err := fx.m.Mount(ctx, disk.dev, Request{})
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", entry.MountPoint, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m"); err != nil {
		t.Fatal(err)
	}
	_, err = fx.m.Unmount(ctx, disk.dev)
	if !errors.Is(err, ErrForeignMount) {
		t.Errorf("Unmount under a foreign mount: %v, want ErrForeignMount", err)
	}
	if mi := mountOn(t, entry.MountPoint); mi == nil || mi.FSType != "tmpfs" {
		t.Errorf("the foreign mount was touched: %+v", mi)
	}
	if _, ok := stateEntries(t, fx.state)[disk.dev.DevNum()]; !ok {
		t.Error("entry dropped after a failed unmount")
	}
	if err := unix.Unmount(entry.MountPoint, 0); err != nil {
		t.Fatal(err)
	}
	res, err := fx.m.Unmount(ctx, disk.dev)
	if err != nil || !res.Unmounted || !res.DirRemoved {
		t.Errorf("retry: %+v, %v", res, err)
	}
	if n := len(stateEntries(t, fx.state)); n != 0 {
		t.Errorf("%d state entries after the retry", n)
	}
}

// TestReconcileAfterKill: a process mounts a disk and is killed with
// SIGKILL; the next Mounter on the same state keeps the mount while the
// device is present and cleans it up (lazily, directory removed) once the
// device is gone.
func TestReconcileAfterKill(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	disk := newDisk(t, "ext4", "CRASH", diskOptions{})
	fx := newMountFixture(t, nil)
	fx.m.Close() // the helper process is the daemon that crashes

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessMount$", "-test.v")
	cmd.Env = append(os.Environ(),
		"HOTPLUGD_HELPER_MOUNT=1",
		"HOTPLUGD_HELPER_ROOT="+fx.root,
		"HOTPLUGD_HELPER_STATE="+fx.state,
		"HOTPLUGD_HELPER_DEVNUM="+disk.dev.DevNum(),
		"HOTPLUGD_HELPER_DEVNODE="+disk.dev.Devnode,
		"HOTPLUGD_HELPER_DEVPATH="+disk.dev.Devpath,
	)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	buf := make([]byte, 4096)
	var out strings.Builder
	for !strings.Contains(out.String(), "MOUNTED\n") {
		n, err := stdout.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			t.Fatalf("helper process: %v: %s", err, out.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	mp := filepath.Join(fx.root, "CRASH")
	checkMounted(t, mp, disk.dev, "ext4", "errors=remount-ro")

	// Restart: the device is present (sysfs says so): kept.
	m2, err := NewMounter(fx.cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := m2.Reconcile(context.Background(), nil)
	if err != nil || len(rep.Kept) != 1 || len(rep.Cleaned) != 0 {
		t.Fatalf("Reconcile with the device present: %+v, %v", rep, err)
	}
	checkMounted(t, mp, disk.dev, "ext4")

	// Restart after the disk went and another came at the same number and
	// devpath (a mounted disk cannot really be deleted, so the state says
	// the recorded one was an earlier disk): its sysfs diskseq is not the
	// recorded one.
	m2.Close()
	seq := disk.diskseq(t)
	if e := stateEntries(t, fx.state)[disk.dev.DevNum()]; seq == 0 || e.Device.Diskseq != seq {
		t.Fatalf("recorded diskseq %d, the kernel's %d", e.Device.Diskseq, seq)
	}
	rewriteState(t, fx.state, `"diskseq": `+strconv.FormatUint(seq, 10), `"diskseq": `+strconv.FormatUint(seq-1, 10))
	m3, err := NewMounter(fx.cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err = m3.Reconcile(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Cleaned) != 1 || len(rep.Lazy) != 1 || len(rep.Kept) != 0 {
		t.Errorf("Reconcile with another disk at the device's number: %+v", rep)
	}
	if mountOn(t, mp) != nil {
		t.Error("stale mount not cleaned up")
	}
	if _, err := os.Lstat(mp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale directory left (lstat: %v)", err)
	}
	if n := len(stateEntries(t, fx.state)); n != 0 {
		t.Errorf("%d state entries", n)
	}
}

// TestHelperProcessMount is the process TestReconcileAfterKill kills.
func TestHelperProcessMount(t *testing.T) {
	if os.Getenv("HOTPLUGD_HELPER_MOUNT") != "1" {
		t.Skip("helper process for TestReconcileAfterKill")
	}
	dev, err := parseDevNum(os.Getenv("HOTPLUGD_HELPER_DEVNUM"))
	if err != nil {
		t.Fatal(err)
	}
	dev.Devnode = os.Getenv("HOTPLUGD_HELPER_DEVNODE")
	dev.Devpath = os.Getenv("HOTPLUGD_HELPER_DEVPATH")
	dev.FSUsage, dev.FSType, dev.Label = "filesystem", "ext4", "CRASH"
	m, err := NewMounter(Config{
		MountRoot: os.Getenv("HOTPLUGD_HELPER_ROOT"),
		StatePath: os.Getenv("HOTPLUGD_HELPER_STATE"),
		Roots:     host.Roots{Etc: "/nonexistent"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Mount(context.Background(), dev, Request{Rule: "crash"}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("MOUNTED")
	time.Sleep(time.Minute) // killed long before
}

// TestReconcileLeavesForeignMounts: the state says hotplugd mounted a
// device at a path, but what is mounted there now is something else: it
// is left alone and the entry dropped. A recorded mount that is simply
// gone has its empty directory removed; a directory that cannot be
// removed keeps its entry until it can.
func TestReconcileLeavesForeignMounts(t *testing.T) {
	looptest.Require(t)
	fx := newMountFixture(t, nil)
	if err := os.MkdirAll(fx.root, 0o755); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(fx.root, "FOREIGN")
	gone := filepath.Join(fx.root, "GONE")
	notMine := filepath.Join(fx.root, "NOTMINE")
	full := filepath.Join(fx.root, "FULL")
	for _, d := range []string{foreign, gone, notMine, full} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(full, "left-over"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", foreign, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=1m"); err != nil {
		t.Fatal(err)
	}
	entry := func(minor uint32, mp string, created bool) Entry {
		return Entry{Device: Device{Major: 7, Minor: 200 + minor, Devnode: fmt.Sprintf("/dev/nonexistent%d", minor)},
			MountPoint: mp, FSType: "ext4", Driver: "ext4", CreatedDir: created, MountedAt: time.Now().UTC()}
	}
	entries := map[string]Entry{}
	for _, e := range []Entry{entry(1, foreign, true), entry(2, gone, true), entry(3, notMine, false), entry(4, full, true)} {
		entries[e.Device.DevNum()] = e
	}
	if err := writeState(fx.state, entries); err != nil {
		t.Fatal(err)
	}
	fx.m.Close()
	m, err := NewMounter(fx.cfg)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := m.Reconcile(context.Background(), func(Device) bool { return false })
	if err == nil || !strings.Contains(err.Error(), "rmdir "+full) {
		t.Errorf("Reconcile error %v, want the rmdir of %s", err, full)
	}
	if len(rep.Dropped) != 3 || len(rep.Failed) != 1 || len(rep.Cleaned) != 0 {
		t.Errorf("report %+v", rep)
	}
	if mi := mountOn(t, foreign); mi == nil || mi.FSType != "tmpfs" {
		t.Error("the foreign mount was touched")
	}
	if _, err := os.Stat(gone); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("empty recorded directory not removed (stat: %v)", err)
	}
	if _, err := os.Stat(notMine); err != nil {
		t.Errorf("a directory hotplugd did not create was removed: %v", err)
	}
	left := stateEntries(t, fx.state)
	if _, ok := left["7:204"]; len(left) != 1 || !ok || !left["7:204"].Unmounted {
		t.Errorf("state after reconcile: %+v, want only the FULL entry, marked unmounted", left)
	}
	// Once the directory can go, the retry removes it.
	if err := os.Remove(filepath.Join(full, "left-over")); err != nil {
		t.Fatal(err)
	}
	rep, err = m.Reconcile(context.Background(), func(Device) bool { return false })
	if err != nil || len(rep.Cleaned) != 1 {
		t.Errorf("retry: %+v, %v", rep, err)
	}
	if _, err := os.Stat(full); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("directory not removed on retry (stat: %v)", err)
	}
	if n := len(stateEntries(t, fx.state)); n != 0 {
		t.Errorf("%d state entries", n)
	}
}

// TestMountConcurrent: mounts and unmounts of different devices in
// parallel all land in the state file, which stays valid throughout.
func TestMountConcurrent(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	const n = 4
	disks := make([]*testDisk, n)
	for i := range disks {
		disks[i] = newDisk(t, "ext4", fmt.Sprintf("PAR%d", i), diskOptions{})
	}
	fx := newMountFixture(t, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	for _, d := range disks {
		wg.Go(func() {
			if _, err := fx.m.Mount(ctx, d.dev, Request{}); err != nil {
				t.Error(err)
			}
			stateEntries(t, fx.state) // valid JSON at every moment
		})
	}
	wg.Wait()
	if got := len(stateEntries(t, fx.state)); got != n {
		t.Fatalf("%d state entries after %d concurrent mounts", got, n)
	}
	for _, d := range disks {
		checkMounted(t, filepath.Join(fx.root, d.dev.Label), d.dev, "ext4")
	}
	for _, d := range disks {
		wg.Go(func() {
			if _, err := fx.m.Unmount(ctx, d.dev); err != nil {
				t.Error(err)
			}
			stateEntries(t, fx.state)
		})
	}
	wg.Wait()
	if got := len(stateEntries(t, fx.state)); got != 0 {
		t.Errorf("%d state entries after unmounting all", got)
	}
}

// TestMountDeadline: a mount(2) that hangs does not hold Mount past its
// deadline; when the call finally completes it is undone and the device
// can be mounted again.
func TestMountDeadline(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	disk := newDisk(t, "ext4", "SLOW", diskOptions{})
	fx := newMountFixture(t, nil)
	hang := make(chan struct{})
	var calls sync.Mutex
	first := true
	fx.m.sysMount = func(src, target, fstype string, flags uintptr, data string) error {
		calls.Lock()
		wait := first
		first = false
		calls.Unlock()
		if wait {
			<-hang
		}
		return unix.Mount(src, target, fstype, flags, data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := fx.m.Mount(ctx, disk.dev, Request{})
	if !errors.Is(err, ErrMountTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Mount: %v, want ErrMountTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Mount returned after %v", d)
	}
	if _, err := fx.m.Mount(context.Background(), disk.dev, Request{}); !errors.Is(err, ErrDeviceBusy) {
		t.Errorf("Mount while the first still hangs: %v, want ErrDeviceBusy", err)
	}
	close(hang) // the kernel finally answers
	mp := filepath.Join(fx.root, "SLOW")
	waitForMount(t, "the late mount to be undone", func() bool {
		_, err := os.Lstat(mp)
		return mountOn(t, mp) == nil && errors.Is(err, os.ErrNotExist)
	})
	var entry Entry
	waitForMount(t, "the device to be released", func() bool {
		entry, err = fx.m.Mount(context.Background(), disk.dev, Request{})
		return !errors.Is(err, ErrDeviceBusy)
	})
	if err != nil {
		t.Fatal(err)
	}
	checkMounted(t, entry.MountPoint, disk.dev, "ext4")
	if _, err := fx.m.Unmount(context.Background(), disk.dev); err != nil {
		t.Fatal(err)
	}
}

// TestMountSkips: devices that are already mounted or are the
// administrator's (fstab) are skipped with a reason, creating nothing.
func TestMountSkips(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	disk := newDisk(t, "ext4", "ADMIN", diskOptions{})
	ctx := context.Background()
	for _, spec := range []string{"LABEL=ADMIN", "UUID=" + strings.ToUpper(disk.dev.UUID), disk.part} {
		t.Run("fstab "+spec, func(t *testing.T) {
			fx := newMountFixture(t, func(c *Config) {
				c.Roots.Etc = t.TempDir()
				content := "# comment\n/dev/vda1 / ext4 defaults 0 1\n" + strings.ReplaceAll(spec, " ", `\040`) + " /srv/admin ext4 noauto 0 2\n"
				if err := os.WriteFile(filepath.Join(c.Roots.Etc, "fstab"), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			})
			_, err := fx.m.Mount(ctx, disk.dev, Request{})
			if !errors.Is(err, ErrInFstab) || !errors.Is(err, ErrSkipped) || !strings.Contains(err.Error(), ":3:") {
				t.Errorf("Mount: %v, want ErrInFstab naming line 3", err)
			}
			if _, err := os.Lstat(fx.root); !errors.Is(err, os.ErrNotExist) {
				t.Error("mount root created for a skipped device")
			}
		})
	}
	t.Run("mounted elsewhere", func(t *testing.T) {
		elsewhere := t.TempDir()
		if err := unix.Mount(disk.part, elsewhere, "ext4", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Unmount(elsewhere, unix.MNT_DETACH) })
		fx := newMountFixture(t, nil)
		_, err := fx.m.Mount(ctx, disk.dev, Request{})
		if !errors.Is(err, ErrAlreadyMounted) || !strings.Contains(err.Error(), elsewhere) {
			t.Errorf("Mount: %v, want ErrAlreadyMounted naming %s", err, elsewhere)
		}
		if _, err := os.Lstat(fx.root); !errors.Is(err, os.ErrNotExist) {
			t.Error("mount root created for a skipped device")
		}
	})
	t.Run("devnode of another device", func(t *testing.T) {
		fx := newMountFixture(t, nil)
		dev := disk.dev
		dev.Devnode = disk.loop // the whole disk, not the partition
		_, err := fx.m.Mount(ctx, dev, Request{})
		if !errors.Is(err, errDevnodeMismatch) {
			t.Errorf("Mount: %v, want a device node mismatch", err)
		}
	})
}

// TestMountBtrfsAnonymousDevice: btrfs shows an anonymous device number in
// mountinfo; its mount is still recognized as the disk's by its source.
func TestMountBtrfsAnonymousDevice(t *testing.T) {
	looptest.Require(t, "mkfs.btrfs")
	disk := newDisk(t, "btrfs", "BTR", diskOptions{})
	fx := newMountFixture(t, nil)
	ctx := context.Background()
	entry, err := fx.m.Mount(ctx, disk.dev, Request{Options: []string{"noatime"}})
	if err != nil {
		t.Fatal(err)
	}
	checkMounted(t, entry.MountPoint, disk.dev, "btrfs")
	if mi := mountOn(t, entry.MountPoint); !hasOptions(mi.Options, "noatime") {
		t.Errorf("rule option noatime missing: %q", mi.Options)
	}
	if _, err := fx.m.Mount(ctx, disk.dev, Request{}); !errors.Is(err, ErrAlreadyMounted) {
		t.Errorf("second Mount: %v, want ErrAlreadyMounted", err)
	}
	if res, err := fx.m.Unmount(ctx, disk.dev); err != nil || !res.Unmounted || !res.DirRemoved {
		t.Errorf("Unmount: %+v, %v", res, err)
	}
}

// TestMountFailureRemovesDir: when mount(2) fails (here: the probe claims
// xfs for an ext4 filesystem) the directory created for it is removed and
// nothing is recorded.
func TestMountFailureRemovesDir(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	disk := newDisk(t, "ext4", "LIAR", diskOptions{})
	fx := newMountFixture(t, nil)
	dev := disk.dev
	dev.FSType = "xfs"
	_, err := fx.m.Mount(context.Background(), dev, Request{})
	if err == nil || !strings.Contains(err.Error(), "mount(2) type xfs") {
		t.Fatalf("Mount: %v, want a mount(2) error", err)
	}
	if names := dirEntries(t, fx.root); len(names) != 0 {
		t.Errorf("mount root holds %q after a failed mount", names)
	}
	if n := len(stateEntries(t, fx.state)); n != 0 {
		t.Errorf("%d state entries after a failed mount", n)
	}
}

// TestMountHelperArgvAndDeadline: a FUSE helper is executed directly with
// the device node, the mount point and the options as separate argv
// elements and a fixed environment; one that hangs is killed with its
// process group at the deadline and leaves no directory.
func TestMountHelperArgvAndDeadline(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	disk := newDisk(t, "ext4", "--x $(y)", diskOptions{})
	helperDir := t.TempDir()
	out := t.TempDir()
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > " + out + "/args\nenv > " + out + "/env\necho $$ > " + out + "/pid\nexec sleep 60\n"
	if err := os.WriteFile(filepath.Join(helperDir, "ntfs-3g"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	fx := newMountFixture(t, func(c *Config) {
		c.Roots.Proc = writeFilesystemsWithout(t, "ntfs3")
		c.ModulesDir = t.TempDir()
		c.HelperDirs = []string{helperDir}
		c.Timeout = 500 * time.Millisecond
	})
	dev := disk.dev
	dev.FSType = "ntfs" // whatever the probe says, only the helper runs
	start := time.Now()
	_, err := fx.m.Mount(context.Background(), dev, Request{UID: 1000, GID: 1000})
	if !errors.Is(err, ErrMountTimeout) {
		t.Fatalf("Mount: %v, want ErrMountTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Mount returned after %v", d)
	}
	args, err := os.ReadFile(filepath.Join(out, "args"))
	if err != nil {
		t.Fatal(err)
	}
	wantArgs := disk.part + "\n" + filepath.Join(fx.root, "--x $(y)") + "\n-o\nnosuid,nodev,noexec,uid=1000,gid=1000,dmask=0022,fmask=0133,windows_names\n"
	if diff := cmp.Diff(wantArgs, string(args)); diff != "" {
		t.Errorf("helper argv (-want +got):\n%s", diff)
	}
	env, err := os.ReadFile(filepath.Join(out, "env"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(env)) {
		name, _, _ := strings.Cut(line, "=")
		if !slices.Contains([]string{"PATH", "LC_ALL", "PWD", "SHLVL", "OLDPWD", "_"}, name) {
			t.Errorf("helper environment has %q", strings.TrimSpace(line))
		}
	}
	pidText, err := os.ReadFile(filepath.Join(out, "pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(string(pidText), &pid)
	if err := unix.Kill(pid, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("helper %d still exists after the deadline (kill 0: %v)", pid, err)
	}
	if names := dirEntries(t, fx.root); len(names) != 0 {
		t.Errorf("mount root holds %q", names)
	}
}
