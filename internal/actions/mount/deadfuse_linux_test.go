package mount

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// TestReconcileDeadFUSE: a FUSE mount whose daemon died (killed with a
// service's cgroup, say) answers ENOTCONN. Reconcile does not keep it: it
// detaches it and removes the directory, so the device can be mounted
// again.
func TestReconcileDeadFUSE(t *testing.T) {
	looptest.Require(t, "mkntfs", "ntfs-3g")
	disk := newDisk(t, "ntfs", "DEADFUSE", diskOptions{})
	fx := newMountFixture(t, func(c *Config) {
		c.Roots.Proc = writeFilesystemsWithout(t, "ntfs3")
		c.ModulesDir = t.TempDir()
	})
	ctx := context.Background()
	e, err := fx.m.Mount(ctx, disk.dev, Request{Rule: "usb"})
	if err != nil {
		t.Fatal(err)
	}
	pid := fuseDaemon(t, e.MountPoint)
	if err := unix.Kill(pid, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	for deadline := time.Now().Add(10 * time.Second); !errors.Is(unix.Stat(e.MountPoint, &st), unix.ENOTCONN); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the mount never went dead")
		}
	}
	rep, err := fx.m.Reconcile(ctx, func(Device) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Kept) != 0 || len(rep.Cleaned) != 1 {
		t.Errorf("report %+v, want the dead mount cleaned, not kept", rep)
	}
	if mountOn(t, e.MountPoint) != nil {
		t.Error("the dead mount is still there")
	}
	if _, err := os.Lstat(e.MountPoint); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("its directory is left: %v", err)
	}
	if _, err := fx.m.Mount(ctx, disk.dev, Request{Rule: "usb"}); err != nil {
		t.Errorf("mounting again: %v", err)
	}
}

// fuseDaemon finds the ntfs-3g process serving the mount at path.
func fuseDaemon(t *testing.T, path string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, d := range ents {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join("/proc", d.Name(), "cmdline"))
		if args := strings.Split(string(b), "\x00"); strings.Contains(args[0], "ntfs-3g") && strings.Contains(string(b), path) {
			return pid
		}
	}
	t.Fatalf("no ntfs-3g serves %s", path)
	return 0
}
