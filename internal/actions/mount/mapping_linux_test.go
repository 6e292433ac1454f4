package mount

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/actions/crypt"
	"github.com/hotplugd/hotplugd/internal/actions/crypt/crypttest"
	"github.com/hotplugd/hotplugd/internal/actions/run"
	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/keyfile"
	"github.com/hotplugd/hotplugd/internal/looptest"
)

// This machine's kernel has no device-mapper: these tests stand a fake
// cryptsetup in for the real one (crypttest; the real one runs in
// internal/e2e's guest), whose mapping's cleartext is a real loop
// partition with an ext4.

const fakeKey = "the key of the test disk"

// cryptFixture is a Mounter whose cryptsetup is the fake, a backing loop
// device, and a cleartext loop partition holding an ext4 "SECRET".
type cryptFixture struct {
	*mountFixture
	crypt   *crypttest.Fake
	key     string // the keyfile
	backing Device
	clear   *testDisk
}

func newCryptFixture(t *testing.T) *cryptFixture {
	t.Helper()
	looptest.Require(t, "mkfs.ext4")
	key := filepath.Join(t.TempDir(), "disk.key")
	writeTestFile(t, key, fakeKey, 0o600)
	clear := newDisk(t, "ext4", "SECRET", diskOptions{populate: map[string]string{"hello.txt": "inside\n"}})
	fake := crypttest.New(t, fakeKey, clear.part, clear.dev.DevNum())
	loop := looptest.Attach(t, looptest.Image(t, 8<<20, ""))
	st := looptest.WaitBlockDevice(t, loop.Dev)
	backing := Device{Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev),
		Devnode: loop.Dev, Devname: filepath.Base(loop.Dev), Devpath: "/devices/virtual/block/" + filepath.Base(loop.Dev),
		UUID: "ed32c0be-7d35-4b42-ac27-8e8114bb0e78"}
	log := slog.New(slog.NewTextHandler(mountLogWriter{t}, nil))
	fx := newMountFixture(t, func(c *Config) {
		c.Roots = host.Roots{Etc: c.Roots.Etc, Sys: fake.Sys, Dev: fake.Dev}
		c.Crypt = &crypt.Cryptsetup{Path: fake.Path, Runner: &run.Runner{Log: log, Grace: 200 * time.Millisecond}}
	})
	return &cryptFixture{mountFixture: fx, crypt: fake, key: key, backing: backing, clear: clear}
}

func writeTestFile(t testing.TB, path, content string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
}

func (fx *cryptFixture) unlock(t *testing.T) (Mapping, bool, error) {
	t.Helper()
	return fx.m.Unlock(t.Context(), fx.backing, UnlockRequest{Name: "luks-test", Keyfile: fx.key, Rule: "r", Timeout: time.Minute})
}

// mountCleartext mounts the cleartext of mp as the mount action does,
// with the probe of the cleartext.
func (fx *cryptFixture) mountCleartext(t *testing.T, mp Mapping) Entry {
	t.Helper()
	dev := mp.Cleartext
	dev.FSUsage, dev.FSType, dev.Label, dev.UUID = "filesystem", "ext4", fx.clear.dev.Label, fx.clear.dev.UUID
	e, err := fx.m.Mount(t.Context(), dev, Request{Rule: "r"})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func stateMappings(t *testing.T, path string) map[string]Mapping {
	t.Helper()
	mps, err := readMappings(path)
	if err != nil {
		t.Fatal(err)
	}
	return mps
}

// TestUnlockMountRemove: unlocked, recorded, the cleartext mounted at its
// label; on removal of the backing device the cleartext is unmounted,
// its directory removed and the mapping closed, plainly.
func TestUnlockMountRemove(t *testing.T) {
	fx := newCryptFixture(t)
	// The disk's diskseq, in the fake's sysfs: the record tells this disk
	// from a later one at the same number.
	seqFile := filepath.Join(fx.crypt.Sys, fx.backing.Devpath, "diskseq")
	if err := os.MkdirAll(filepath.Dir(seqFile), 0o755); err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, seqFile, "4711\n", 0o644)
	mp, opened, err := fx.unlock(t)
	if err != nil || opened {
		t.Fatalf("Unlock: %+v, %v, %v", mp, opened, err)
	}
	if got := stateMappings(t, fx.state)["luks-test"].Backing.Diskseq; got != 4711 {
		t.Errorf("the backing device's diskseq is recorded as %d, want 4711", got)
	}
	want := Device{Major: fx.clear.dev.Major, Minor: fx.clear.dev.Minor, Devpath: "/devices/virtual/block/dm-0",
		Devname: "dm-0", Devnode: filepath.Join(fx.crypt.Dev, "mapper", "luks-test")}
	if mp.Cleartext != want || mp.Name != "luks-test" || mp.Backing.Devnode != fx.backing.Devnode {
		t.Errorf("mapping %+v, want cleartext %+v", mp, want)
	}
	if got := stateMappings(t, fx.state)["luks-test"]; got.Cleartext != want {
		t.Errorf("recorded %+v", got)
	}
	if got, ok := fx.m.MappingOf(want); !ok || got.Name != "luks-test" {
		t.Errorf("MappingOf the cleartext: %+v, %v", got, ok)
	}
	e := fx.mountCleartext(t, mp)
	if e.MountPoint != filepath.Join(fx.root, "SECRET") || mountOn(t, e.MountPoint) == nil {
		t.Fatalf("mounted at %s", e.MountPoint)
	}
	res, err := fx.m.CloseMappingsOn(t.Context(), Device{Major: fx.backing.Major, Minor: fx.backing.Minor, Devpath: fx.backing.Devpath})
	if err != nil || len(res) != 1 {
		t.Fatalf("CloseMappingsOn: %+v, %v", res, err)
	}
	if u := res[0].Unmount; u == nil || !u.Unmounted || u.Lazy || !u.DirRemoved || res[0].Deferred {
		t.Errorf("close result %+v (unmount %+v)", res[0], u)
	}
	if want := []string{fx.crypt.Path, "close", "--", "luks-test"}; !slices.Equal(res[0].Argv, want) {
		t.Errorf("close argv %q, want %q", res[0].Argv, want)
	}
	if mountOn(t, e.MountPoint) != nil || fx.crypt.Open() {
		t.Error("still mounted, or the mapping still open")
	}
	if calls := fx.crypt.Calls(t); len(calls) != 2 || calls[1] != "close -- luks-test" {
		t.Errorf("cryptsetup calls %q", calls)
	}
	if n := len(stateMappings(t, fx.state)) + len(stateEntries(t, fx.state)); n != 0 || len(fx.m.Mappings()) != 0 {
		t.Errorf("%d state records left", n)
	}
}

// TestClosePlanned: a plan-only Mounter of this machine (`hotplugd test`)
// plans the removal of an unlocked and mounted device as the daemon
// takes it, the cleartext unmounted, then the mapping closed, and does
// none of it: the mount, the mapping and the state stay as they are.
func TestClosePlanned(t *testing.T) {
	fx := newCryptFixture(t)
	mp, _, err := fx.unlock(t)
	if err != nil {
		t.Fatal(err)
	}
	e := fx.mountCleartext(t, mp)
	state, err := os.ReadFile(fx.state)
	if err != nil {
		t.Fatal(err)
	}
	cfg := fx.cfg
	cfg.PlanOnly = true
	plan, err := NewMounter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Close()
	for range 2 { // the same plan again: it forgot nothing
		res, err := plan.CloseMappingsOn(t.Context(), fx.backing)
		if err != nil || len(res) != 1 || res[0].Unmount == nil || res[0].Unmount.Entry.MountPoint != e.MountPoint ||
			!res[0].Unmount.Unmounted || !res[0].Unmount.DirRemoved {
			t.Fatalf("planned close: %+v, %v; want the unmount from %s", res, err, e.MountPoint)
		}
		if want := []string{fx.crypt.Path, "close", "--", "luks-test"}; !slices.Equal(res[0].Argv, want) {
			t.Errorf("planned close argv %q, want %q", res[0].Argv, want)
		}
	}
	if mountOn(t, e.MountPoint) == nil || !fx.crypt.Open() || len(fx.crypt.Calls(t)) != 1 {
		t.Errorf("the plan changed something: mounted %v, open %v, cryptsetup calls %q", mountOn(t, e.MountPoint) != nil, fx.crypt.Open(), fx.crypt.Calls(t))
	}
	if got, _ := os.ReadFile(fx.state); string(got) != string(state) || len(plan.Mappings()) != 1 || len(plan.Entries()) != 1 {
		t.Errorf("the plan changed the state:\n%s\nwas\n%s", got, state)
	}
	if _, err := fx.m.CloseMappingsOn(t.Context(), fx.backing); err != nil {
		t.Error(err)
	}
}

// TestCloseBusy: a process in the cleartext filesystem when the backing
// device goes: the filesystem is detached lazily, and the mapping closed
// with --deferred at once, the kernel removing it once the process lets
// go. A mapping in use with its filesystem free is retried deferred.
func TestCloseBusy(t *testing.T) {
	fx := newCryptFixture(t)
	mp, _, err := fx.unlock(t)
	if err != nil {
		t.Fatal(err)
	}
	e := fx.mountCleartext(t, mp)
	sleeper := exec.Command("sleep", "600")
	sleeper.Dir = e.MountPoint
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	fx.crypt.SetBusy(t, true)
	res, err := fx.m.CloseMappingsOn(t.Context(), fx.backing)
	if err != nil || len(res) != 1 {
		t.Fatalf("CloseMappingsOn: %+v, %v", res, err)
	}
	if u := res[0].Unmount; u == nil || !u.Lazy || !u.DirRemoved || !res[0].Deferred {
		t.Errorf("close result %+v (unmount %+v), want lazy and deferred", res[0], u)
	}
	if calls := fx.crypt.Calls(t); len(calls) != 2 || calls[1] != "close --deferred -- luks-test" {
		t.Errorf("cryptsetup calls %q, want one deferred close", calls)
	}
	if len(fx.m.Mappings()) != 0 {
		t.Error("a deferred mapping is still recorded; the kernel removes it")
	}

	// The filesystem free, the mapping held by someone else.
	fx.crypt.SetBusy(t, false)
	fx.crypt.Run(t, fakeKey, "close", "--", "luks-test")
	fx.crypt.ResetCalls(t)
	if _, _, err := fx.unlock(t); err != nil {
		t.Fatal(err)
	}
	fx.crypt.SetBusy(t, true)
	if res, err := fx.m.CloseMappingsOn(t.Context(), fx.backing); err != nil || len(res) != 1 || !res[0].Deferred || res[0].Unmount != nil {
		t.Errorf("CloseMappingsOn: %+v, %v", res, err)
	}
	if calls := fx.crypt.Calls(t); len(calls) != 3 || calls[1] != "close -- luks-test" || calls[2] != "close --deferred -- luks-test" {
		t.Errorf("cryptsetup calls %q, want a close, then a deferred one", calls)
	}
}

// TestUnlockFailures: a wrong key, a keyfile made a symlink after the
// rules loaded, a name hotplugd did not open, and a cryptsetup killed
// half-way: an error, and nothing left open or recorded.
func TestUnlockFailures(t *testing.T) {
	fx := newCryptFixture(t)
	fx.crypt.SetKey(t, "another key")
	if _, _, err := fx.unlock(t); !errors.Is(err, crypt.ErrWrongKey) {
		t.Errorf("wrong key: %v", err)
	}
	fx.crypt.SetKey(t, fakeKey)

	moved := fx.key + ".real"
	if err := os.Rename(fx.key, moved); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(moved, fx.key); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fx.unlock(t); !errors.Is(err, keyfile.ErrUnsafe) {
		t.Errorf("keyfile swapped for a symlink: %v", err)
	}
	if len(fx.crypt.Calls(t)) != 1 {
		t.Errorf("cryptsetup ran with a symlinked keyfile: %q", fx.crypt.Calls(t))
	}
	os.Remove(fx.key)
	if err := os.Rename(moved, fx.key); err != nil {
		t.Fatal(err)
	}

	// A mapping of the name that hotplugd did not open.
	fx.crypt.Run(t, fakeKey, "open", "--", fx.backing.Devnode, "luks-test")
	if _, _, err := fx.unlock(t); !errors.Is(err, ErrMappingExists) {
		t.Errorf("a mapping hotplugd did not open has the name: %v", err)
	}
	fx.crypt.Run(t, fakeKey, "close", "--", "luks-test")
	fx.crypt.ResetCalls(t)

	// Failing after it made the mapping: it is closed again.
	fx.crypt.SetFailing(t, true)
	if _, _, err := fx.unlock(t); !errors.Is(err, crypt.ErrFailed) {
		t.Errorf("a failed open: %v", err)
	}
	if calls := fx.crypt.Calls(t); len(calls) != 2 || calls[1] != "close -- luks-test" {
		t.Errorf("cryptsetup calls %q, want the half-made mapping closed", calls)
	}
	if fx.crypt.Open() || len(fx.m.Mappings()) != 0 || len(stateMappings(t, fx.state)) != 0 {
		t.Error("something is left open or recorded")
	}
}

// TestUnlockAgain: the device's own mapping, opened before (a restart),
// is taken as it is; cryptsetup does not run again.
func TestUnlockAgain(t *testing.T) {
	fx := newCryptFixture(t)
	first, _, err := fx.unlock(t)
	if err != nil {
		t.Fatal(err)
	}
	fx.m.Close()
	m, err := NewMounter(fx.cfg)
	if err != nil {
		t.Fatal(err)
	}
	fx.m = m
	again, opened, err := fx.unlock(t)
	if err != nil || !opened || again.Cleartext != first.Cleartext {
		t.Errorf("again: %+v, %v, %v", again, opened, err)
	}
	if calls := fx.crypt.Calls(t); len(calls) != 1 {
		t.Errorf("cryptsetup calls %q", calls)
	}
	other := fx.backing
	other.Minor++
	other.Devpath += "x"
	if _, _, err := fx.m.Unlock(t.Context(), other, UnlockRequest{Name: "luks-test", Keyfile: fx.key}); !errors.Is(err, ErrMappingExists) {
		t.Errorf("the name, for another device: %v", err)
	}
}

// TestReconcileMappings: after a restart, a mapping whose backing device
// is gone has its cleartext detached and is closed; one whose device is
// there is adopted; one the kernel no longer has is forgotten, and one
// recorded just before cryptsetup opened it (a crash) is found by name.
func TestReconcileMappings(t *testing.T) {
	fx := newCryptFixture(t)
	mp, _, err := fx.unlock(t)
	if err != nil {
		t.Fatal(err)
	}
	e := fx.mountCleartext(t, mp)
	rep, err := fx.m.Reconcile(t.Context(), func(Device) bool { return true })
	if err != nil || len(rep.Adopted) != 1 || len(rep.Kept) != 1 || fx.m.Mappings()[0].Name != "luks-test" {
		t.Fatalf("everything present: %+v, %v", rep, err)
	}
	gone := func(d Device) bool { return d.DevNum() != fx.backing.DevNum() }
	rep, err = fx.m.Reconcile(t.Context(), gone)
	if err != nil || len(rep.Closed) != 1 || len(rep.Kept)+len(rep.Cleaned) != 0 {
		t.Fatalf("backing gone: %+v, %v", rep, err)
	}
	if u := rep.Closed[0].Unmount; u == nil || !u.DirRemoved {
		t.Errorf("closed %+v", rep.Closed[0])
	}
	if mountOn(t, e.MountPoint) != nil || fx.crypt.Open() || len(fx.m.Mappings()) != 0 || len(stateEntries(t, fx.state)) != 0 {
		t.Error("the mapping of a device that is gone is still mounted, open or recorded")
	}

	// Recorded, then a crash before cryptsetup returned.
	pending := Mapping{Name: "luks-test", Backing: fx.backing, OpenedAt: time.Now().UTC()}
	if err := fx.m.putMapping(pending); err != nil {
		t.Fatal(err)
	}
	rep, err = fx.m.Reconcile(t.Context(), gone)
	if err != nil || len(rep.Forgotten) != 1 {
		t.Errorf("recorded, never opened: %+v, %v", rep, err)
	}
	if err := fx.m.putMapping(pending); err != nil {
		t.Fatal(err)
	}
	fx.crypt.Run(t, fakeKey, "open", "--", fx.backing.Devnode, "luks-test")
	rep, err = fx.m.Reconcile(t.Context(), gone)
	if err != nil || len(rep.Closed) != 1 || fx.crypt.Open() {
		t.Errorf("opened, not recorded as such: %+v, %v", rep, err)
	}
}

// TestEjectMapping: eject of the backing disk finds the cleartext mount,
// unmounts it and closes the mapping; a busy one is refused unless
// forced.
func TestEjectMapping(t *testing.T) {
	fx := newCryptFixture(t)
	mp, _, err := fx.unlock(t)
	if err != nil {
		t.Fatal(err)
	}
	e := fx.mountCleartext(t, mp)
	sel, err := fx.m.Select(fx.backing.Devnode)
	if err != nil || len(sel.Entries) != 1 || sel.Entries[0].MountPoint != e.MountPoint || len(sel.Mappings) != 0 {
		t.Fatalf("Select(%s): %+v, %v; want the cleartext's mount, and its mapping only through it", fx.backing.Devnode, sel, err)
	}
	f, err := os.Open(filepath.Join(e.MountPoint, "hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fx.m.Eject(t.Context(), sel.Entries[0].Device, false); !errors.Is(err, ErrBusy) {
		t.Errorf("eject of a busy cleartext: %v", err)
	}
	f.Close()
	if !fx.crypt.Open() || len(fx.m.Mappings()) != 1 {
		t.Fatal("a refused eject closed the mapping")
	}
	res, err := fx.m.Eject(t.Context(), sel.Entries[0].Device, false)
	if err != nil || !res.Unmounted || res.Closed != "luks-test" || res.Deferred {
		t.Errorf("eject: %+v, %v", res, err)
	}
	if mountOn(t, e.MountPoint) != nil || fx.crypt.Open() || len(fx.m.Mappings()) != 0 {
		t.Error("still mounted, open or recorded after the eject")
	}
}

// TestEjectUnmountedMapping: a mapping whose cleartext hotplugd did not
// mount is what an eject of its backing device, or of its cleartext's
// node, takes; EjectMapping closes it, deferred when it is in use. The
// eject of another device takes nothing.
func TestEjectUnmountedMapping(t *testing.T) {
	fx := newCryptFixture(t)
	if _, _, err := fx.unlock(t); err != nil {
		t.Fatal(err)
	}
	node := fx.m.CleartextNode("luks-test")
	for _, target := range []string{fx.backing.Devnode, node} {
		sel, err := fx.m.Select(target)
		if err != nil || len(sel.Entries) != 0 || len(sel.Mappings) != 1 || sel.Mappings[0].Name != "luks-test" {
			t.Errorf("Select(%s): %+v, %v; want the mapping", target, sel, err)
		}
	}
	if sel, err := fx.m.Select(fx.clear.loop); !errors.Is(err, ErrNoSuchMount) {
		t.Errorf("Select of another disk: %+v, %v; want %v", sel, err, ErrNoSuchMount)
	}
	sel, _ := fx.m.Select(fx.backing.Devnode)
	res, err := fx.m.EjectMapping(t.Context(), sel.Mappings[0], false)
	if err != nil || res.Unmounted || res.Closed != "luks-test" || res.Deferred {
		t.Errorf("EjectMapping: %+v, %v", res, err)
	}
	if calls := fx.crypt.Calls(t); len(calls) != 2 || calls[1] != "close -- luks-test" {
		t.Errorf("cryptsetup calls %q", calls)
	}
	if fx.crypt.Open() || len(fx.m.Mappings()) != 0 || len(stateMappings(t, fx.state)) != 0 {
		t.Error("still open or recorded after the eject")
	}
	if sel, err := fx.m.Select(fx.backing.Devnode); !errors.Is(err, ErrNoSuchMount) {
		t.Errorf("Select after the close: %+v, %v; want %v", sel, err, ErrNoSuchMount)
	}

	// Held by someone: closed deferred.
	if _, _, err := fx.unlock(t); err != nil {
		t.Fatal(err)
	}
	fx.crypt.SetBusy(t, true)
	fx.crypt.ResetCalls(t)
	sel, _ = fx.m.Select(fx.backing.Devnode)
	if len(sel.Mappings) != 1 {
		t.Fatalf("Select: %+v", sel)
	}
	if res, err := fx.m.EjectMapping(t.Context(), sel.Mappings[0], false); err != nil || res.Closed != "luks-test" || !res.Deferred {
		t.Errorf("EjectMapping of a mapping in use: %+v, %v; want it deferred", res, err)
	}
	if calls := fx.crypt.Calls(t); len(calls) != 2 || calls[1] != "close --deferred -- luks-test" {
		t.Errorf("cryptsetup calls %q, want a close, then a deferred one", calls)
	}
}

// TestDiskMappings: the mappings of a disk are those on it or on a
// partition of it, by devpath; a disk whose name another's begins with
// holds none of the other's.
func TestDiskMappings(t *testing.T) {
	fx := newCryptFixture(t)
	mp, _, err := fx.unlock(t)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		devpath string
		want    int
	}{
		{fx.backing.Devpath, 1},
		{filepath.Dir(fx.backing.Devpath), 1}, // as if the backing device were a partition of it
		{fx.backing.Devpath + "0", 0},
		{fx.backing.Devpath[:len(fx.backing.Devpath)-1], 0},
		{"", 0},
	} {
		disk := Disk{Devpath: c.devpath}
		if got := fx.m.DiskMappings(disk); len(got) != c.want {
			t.Errorf("DiskMappings(%q): %+v, want %d", c.devpath, got, c.want)
		}
		if got := fx.m.SelectDisk(disk); len(got.Mappings) != c.want || len(got.Entries) != 0 {
			t.Errorf("SelectDisk(%q): %+v, want %d mappings", c.devpath, got, c.want)
		}
	}
	e := fx.mountCleartext(t, mp)
	disk := Disk{Devpath: fx.backing.Devpath}
	if got := fx.m.DiskEntries(disk); len(got) != 1 || got[0].MountPoint != e.MountPoint {
		t.Errorf("DiskEntries: %+v, want the cleartext's mount", got)
	}
	if got := fx.m.SelectDisk(disk); len(got.Entries) != 1 || len(got.Mappings) != 0 {
		t.Errorf("SelectDisk with the cleartext mounted: %+v, want its mount, and its mapping only through it", got)
	}
	if got := fx.m.DiskMappings(disk); len(got) != 1 {
		t.Errorf("DiskMappings with the cleartext mounted: %+v", got)
	}
}

// TestStateWithoutMappings: a state file of before mappings reads as
// one with none, and one with none is written without the key.
func TestStateWithoutMappings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mounts.json")
	writeTestFile(t, path, `{"version": 1, "mounts": []}`, 0o600)
	if mps, err := readMappings(path); err != nil || len(mps) != 0 {
		t.Errorf("readMappings: %v, %v", mps, err)
	}
	if err := writeState(path, map[string]Entry{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); strings.Contains(string(b), "mappings") {
		t.Errorf("state without mappings: %s", b)
	}
	writeTestFile(t, path, `{"version": 1, "mounts": [], "mappings": [{"name": "../x"}]}`, 0o600)
	if _, err := readMappings(path); err == nil {
		t.Error("a mapping named ../x was accepted")
	}
}
