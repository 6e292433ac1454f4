package mount

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hotplugd/hotplugd/internal/host"
)

// TestPlanOnly: the mounter of a dry run plans like any other but changes
// nothing, not even an unreadable state file, and refuses to act.
func TestPlanOnly(t *testing.T) {
	dir := t.TempDir()
	statePath := filepath.Join(dir, "run", "mounts.json")
	if err := os.Mkdir(filepath.Dir(statePath), 0o700); err != nil {
		t.Fatal(err)
	}
	const garbage = "{not json"
	if err := os.WriteFile(statePath, []byte(garbage), 0o600); err != nil {
		t.Fatal(err)
	}
	proc := fakeProc(t, "\text4\n")
	root := filepath.Join(dir, "media")
	m, err := NewMounter(Config{
		MountRoot: root,
		StatePath: statePath,
		Roots:     host.Roots{Etc: dir, Proc: proc},
		PlanOnly:  true,
	})
	if err != nil {
		t.Fatal(err)
	}
	dev := Device{Major: 8, Minor: 17, Devnode: "/dev/sdb1", Devname: "sdb1", FSUsage: "filesystem", FSType: "ext4", Label: "BACKUP"}
	p, err := m.Plan(dev, Request{})
	if err != nil {
		t.Fatal(err)
	}
	if p.MountPoint != filepath.Join(root, "BACKUP") || p.Options != "nosuid,nodev,noexec,errors=remount-ro" {
		t.Errorf("plan: %s with %s", p.MountPoint, p.Options)
	}
	if _, err := m.Mount(context.Background(), dev, Request{}); !errors.Is(err, ErrPlanOnly) {
		t.Errorf("Mount: %v, want ErrPlanOnly", err)
	}
	if _, err := m.Unmount(context.Background(), dev); !errors.Is(err, ErrPlanOnly) {
		t.Errorf("Unmount: %v, want ErrPlanOnly", err)
	}
	if _, err := m.Reconcile(context.Background(), nil); !errors.Is(err, ErrPlanOnly) {
		t.Errorf("Reconcile: %v, want ErrPlanOnly", err)
	}
	if b, err := os.ReadFile(statePath); err != nil || string(b) != garbage {
		t.Errorf("state file: %q, %v; want it untouched", b, err)
	}
	for _, p := range []string{statePath + ".bad", root} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: exists (%v)", p, err)
		}
	}
}
