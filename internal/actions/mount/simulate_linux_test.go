package mount

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hotplugd/hotplugd/internal/host"
)

// TestSimulated: a simulated Mounter plans as on a machine of its own,
// whatever this one has, and remembers its plans until PlanUnmount.
func TestSimulated(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "media")
	if err := os.MkdirAll(filepath.Join(root, "STICK"), 0o755); err != nil { // taken on this machine
		t.Fatal(err)
	}
	statePath := filepath.Join(dir, "mounts.json")
	if err := os.WriteFile(statePath, []byte(`{not json`), 0o600); err != nil {
		t.Fatal(err)
	}
	fstab := filepath.Join(dir, "fstab")
	if err := os.WriteFile(fstab, []byte("LABEL=STICK /mnt/stick vfat defaults 0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := NewMounter(Config{
		MountRoot: root,
		StatePath: statePath,
		// No vfat in this kernel, and no procfs at all.
		Roots:     host.Roots{Etc: dir, Proc: filepath.Join(dir, "noproc")},
		Simulated: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	stick := Device{Major: 8, Minor: 17, Devpath: "/devices/x/sdb/sdb1", Devnode: "/dev/sdb1", Devname: "sdb1",
		FSUsage: "filesystem", FSType: "vfat", Label: "STICK"}
	other := stick
	other.Minor, other.Devpath, other.Devnode, other.Devname = 33, "/devices/x/sdc/sdc1", "/dev/sdc1", "sdc1"
	for _, tt := range []struct {
		dev  Device
		want string
	}{{stick, "STICK"}, {other, "STICK_1"}} {
		p, err := m.Plan(tt.dev, Request{})
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(root, tt.want); p.MountPoint != want || p.Driver != "vfat" {
			t.Errorf("%s: plan %s with %s, want %s with vfat", tt.dev.Devnode, p.MountPoint, p.Driver, want)
		}
	}
	if _, err := m.Plan(stick, Request{}); !errors.Is(err, ErrAlreadyMounted) {
		t.Errorf("planning a planned device again: %v, want ErrAlreadyMounted", err)
	}
	if e, ok := m.PlanUnmount(stick); !ok || e.MountPoint != filepath.Join(root, "STICK") {
		t.Errorf("PlanUnmount: %+v, %v", e, ok)
	}
	if _, ok := m.PlanUnmount(stick); ok {
		t.Error("PlanUnmount found the mount again")
	}
	if p, err := m.Plan(stick, Request{}); err != nil || p.MountPoint != filepath.Join(root, "STICK") {
		t.Errorf("after the unmount: %+v, %v; want STICK again", p, err)
	}
	if b, err := os.ReadFile(statePath); err != nil || string(b) != `{not json` {
		t.Errorf("state file: %q, %v; want it untouched", b, err)
	}
}
