package mount

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hotplugd/hotplugd/internal/actions/crypt"
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

// TestSimulatedMapping: a simulated Mounter remembers a planned unlock
// and the mount of its cleartext, and the removal of the encrypted
// device plans what the daemon's does: the cleartext unmounted, then the
// mapping closed with cryptsetup at the simulated machine's path. A
// mapping never mounted is closed alone.
func TestSimulatedMapping(t *testing.T) {
	dir := t.TempDir()
	statePath := filepath.Join(dir, "mounts.json")
	m, err := NewMounter(Config{MountRoot: filepath.Join(dir, "media"), StatePath: statePath, Simulated: true})
	if err != nil {
		t.Fatal(err)
	}
	stick := Device{Major: 8, Minor: 1, Devpath: "/devices/x/sda/sda1", Devnode: "/dev/sda1", Devname: "sda1",
		FSUsage: "crypto", FSType: "crypto_LUKS", UUID: "ed32c0be-7d35-4b42-ac27-8e8114bb0e78"}
	req := UnlockRequest{Name: "luks-ed32c0be-7d35-4b42-ac27-8e8114bb0e78", Keyfile: "/nonexistent/key", Rule: "r"}
	mp, open, err := m.PlanUnlock(stick, req)
	wantClear := Device{Major: simulatedMapperMajor, Minor: 0, Devnode: "/dev/mapper/" + req.Name}
	if err != nil || open || mp.Cleartext != wantClear || mp.Backing.Devnode != "/dev/sda1" {
		t.Fatalf("PlanUnlock: %+v, %v, %v; want cleartext %+v", mp, open, err, wantClear)
	}
	if again, open, err := m.PlanUnlock(stick, req); err != nil || !open || again.Cleartext != wantClear {
		t.Errorf("PlanUnlock again: %+v, %v, %v; want the same mapping, open", again, open, err)
	}
	other := stick
	other.Minor, other.Devpath, other.Devnode = 17, "/devices/x/sdb/sdb1", "/dev/sdb1"
	if _, _, err := m.PlanUnlock(other, req); !errors.Is(err, ErrMappingExists) {
		t.Errorf("the name for another device: %v, want ErrMappingExists", err)
	}
	path, err := m.PlanCleartext(mp.Cleartext, Request{Rule: "r"})
	if want := filepath.Join(dir, "media", UnknownName); err != nil || path != want {
		t.Fatalf("PlanCleartext: %q, %v; want %q", path, err, want)
	}
	if _, err := m.PlanCleartext(mp.Cleartext, Request{Rule: "r"}); !errors.Is(err, ErrAlreadyMounted) {
		t.Errorf("PlanCleartext again: %v, want ErrAlreadyMounted", err)
	}
	res, err := m.CloseMappingsOn(t.Context(), Device{Major: 8, Minor: 1, Devpath: stick.Devpath})
	if err != nil || len(res) != 1 || res[0].Mapping.Name != req.Name || res[0].Unmount == nil ||
		res[0].Unmount.Entry.MountPoint != path || !res[0].Unmount.Unmounted || res[0].Deferred {
		t.Fatalf("CloseMappingsOn: %+v, %v; want the cleartext unmounted from %s", res, err, path)
	}
	if want := []string{crypt.DefaultPaths[0], "close", "--", req.Name}; !slices.Equal(res[0].Argv, want) {
		t.Errorf("close argv %q, want %q", res[0].Argv, want)
	}
	if len(m.Mappings()) != 0 || len(m.Entries()) != 0 {
		t.Errorf("after the close: mappings %+v, mounts %+v", m.Mappings(), m.Entries())
	}
	if res, err := m.CloseMappingsOn(t.Context(), stick); err != nil || len(res) != 0 {
		t.Errorf("CloseMappingsOn again: %+v, %v", res, err)
	}

	// Unlocked again, never mounted: the removal closes the mapping alone.
	if mp, _, err := m.PlanUnlock(stick, req); err != nil || mp.Cleartext != wantClear {
		t.Fatalf("PlanUnlock after the close: %+v, %v", mp, err)
	}
	if res, err := m.CloseMappingsOn(t.Context(), stick); err != nil || len(res) != 1 || res[0].Unmount != nil || res[0].Argv == nil {
		t.Errorf("CloseMappingsOn of a mapping never mounted: %+v, %v; want the close alone", res, err)
	}
	if _, err := os.Stat(statePath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file: %v; a simulated Mounter writes none", err)
	}
}
