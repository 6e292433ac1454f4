package mount

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// TestMountUndoneWhenStateFull: a mount whose state cannot be written (a
// full /run) is undone, so no restart can forget it: nothing stays
// mounted, no directory is left, and the error says why.
func TestMountUndoneWhenStateFull(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	disk := newDisk(t, "ext4", "FULLRUN", diskOptions{})
	run := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(run, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", run, "tmpfs", 0, "size=64k,mode=0755"); err != nil {
		t.Fatalf("tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(run, unix.MNT_DETACH) })
	state := filepath.Join(run, "hotplugd")
	if err := os.Mkdir(state, 0o700); err != nil {
		t.Fatal(err)
	}
	fill, err := os.Create(filepath.Join(run, "fill"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for {
		if _, err := fill.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling the tmpfs: %v", err)
			}
			break
		}
	}
	fill.Close()

	fx := newMountFixture(t, func(c *Config) { c.StatePath = filepath.Join(state, "mounts.json") })
	_, err = fx.m.Mount(context.Background(), disk.dev, Request{})
	if !errors.Is(err, errStateNotSaved) {
		t.Fatalf("Mount with a full state directory: %v, want %v", err, errStateNotSaved)
	}
	path := filepath.Join(fx.root, "FULLRUN")
	if mi := mountOn(t, path); mi != nil {
		t.Errorf("still mounted at %s: %s", path, mi.Source)
	}
	if names := dirEntries(t, fx.root); len(names) != 0 {
		t.Errorf("left in the mount root: %q", names)
	}
	if len(fx.m.Entries()) != 0 {
		t.Errorf("the undone mount is still recorded: %+v", fx.m.Entries())
	}
}
