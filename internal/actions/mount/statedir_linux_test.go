package mount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStateDirRefused(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.Mkdir(open, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(open, 0o777)
	link := filepath.Join(dir, "link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	for name, stateDir := range map[string]string{"world-writable": open, "symlink": link} {
		_, err := NewMounter(Config{MountRoot: filepath.Join(dir, "media"), StatePath: filepath.Join(stateDir, "mounts.json")})
		if !errors.Is(err, ErrUnsafeStateDir) {
			t.Errorf("%s: NewMounter error %v, want ErrUnsafeStateDir", name, err)
		}
	}
	// A missing directory is fine: it is created 0700 on first write.
	if _, err := NewMounter(Config{MountRoot: filepath.Join(dir, "media"), StatePath: filepath.Join(dir, "new", "mounts.json")}); err != nil {
		t.Errorf("missing state dir: %v", err)
	}
}

func TestStateEntryOutsideMountRootIgnored(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "media")
	state := filepath.Join(dir, "mounts.json")
	entries := map[string]Entry{
		"8:17": {Device: Device{Major: 8, Minor: 17, Devpath: "/devices/x/sdb1", Devnode: "/dev/sdb1"}, MountPoint: "/home", FSType: "ext4", CreatedDir: true},
		"8:33": {Device: Device{Major: 8, Minor: 33, Devpath: "/devices/x/sdc1", Devnode: "/dev/sdc1"}, MountPoint: filepath.Join(root, "DISK"), FSType: "ext4", CreatedDir: true},
	}
	if err := writeState(state, entries); err != nil {
		t.Fatal(err)
	}
	m, err := NewMounter(Config{MountRoot: root, StatePath: state})
	if err != nil {
		t.Fatal(err)
	}
	got := m.Entries()
	if len(got) != 1 || got[0].MountPoint != filepath.Join(root, "DISK") {
		t.Errorf("entries kept: %+v, want only the one under mount_root", got)
	}
}

// TestStateDirLock: one daemon per state directory. A second Mounter on
// it is refused, naming the holder; once the first is closed it starts.
func TestStateDirLock(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{MountRoot: filepath.Join(dir, "media"), StatePath: filepath.Join(dir, "run", "mounts.json")}
	first, err := NewMounter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewMounter(cfg)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("second Mounter: %v, want %v naming pid %d", err, ErrLocked, os.Getpid())
	}
	plan, err := NewMounter(Config{MountRoot: cfg.MountRoot, StatePath: cfg.StatePath, PlanOnly: true})
	if err != nil {
		t.Errorf("a plan-only Mounter (the dry run) is refused: %v", err)
	} else {
		plan.Close()
	}
	first.Close()
	second, err := NewMounter(cfg)
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	second.Close()
}
