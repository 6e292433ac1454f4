package mount

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func testEntry(minor uint32, mp string) Entry {
	return Entry{
		Device:     Device{Major: 259, Minor: minor, Devpath: "/devices/virtual/block/loop0/loop0p" + strconv.Itoa(int(minor)), Devnode: "/dev/loop0p1", Label: "L\n\"x"},
		MountPoint: mp,
		FSType:     "ext4",
		Driver:     "ext4",
		Options:    "nosuid,nodev,noexec,errors=remount-ro",
		Rule:       "usb",
		CreatedDir: true,
		MountedAt:  time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func TestStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "mounts.json")
	got, err := readState(path)
	if err != nil || len(got) != 0 {
		t.Fatalf("missing state file: %v, %v; want empty, nil", got, err)
	}
	want := map[string]Entry{
		"259:1": testEntry(1, "/media/A"),
		"259:2": testEntry(2, "/media/B"),
	}
	if err := writeState(path, want); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", st.Mode().Perm())
	}
	got, err = readState(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(filepath.Dir(path))
	if len(ents) != 1 {
		t.Errorf("state dir holds %d entries, want only mounts.json", len(ents))
	}
}

func TestStateRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"not json":      "{",
		"wrong version": `{"version": 7, "mounts": []}`,
		"unknown field": `{"version": 1, "mounts": [], "x": 1}`,
		"relative path": `{"version": 1, "mounts": [{"device": {"major": 8, "minor": 1}, "mount_point": "media/x"}]}`,
		"dot-dot path":  `{"version": 1, "mounts": [{"device": {"major": 8, "minor": 1}, "mount_point": "/media/x/.."}]}`,
		"root":          `{"version": 1, "mounts": [{"device": {"major": 8, "minor": 1}, "mount_point": "/"}]}`,
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := readState(p); err == nil {
			t.Errorf("%s: readState accepted %s", name, content)
		}
	}
}

// TestStateCorruptMovedAside: a corrupt state file does not stop the
// daemon; it is kept for inspection and an empty state used.
func TestStateCorruptMovedAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mounts.json")
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := NewMounter(Config{MountRoot: dir, StatePath: path})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(m.Entries()); n != 0 {
		t.Errorf("%d entries from a corrupt file", n)
	}
	if b, err := os.ReadFile(path + ".bad"); err != nil || string(b) != "garbage" {
		t.Errorf("corrupt state not moved aside: %q, %v", b, err)
	}
}

// TestStateConcurrentWrites: writes from many goroutines, serialized as
// the Mounter does, always leave a complete, valid file.
func TestStateConcurrentWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mounts.json")
	var mu sync.Mutex
	entries := map[string]Entry{}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			e := testEntry(uint32(i), "/media/d"+strconv.Itoa(i))
			mu.Lock()
			defer mu.Unlock()
			entries[e.Device.DevNum()] = e
			if err := writeState(path, entries); err != nil {
				t.Error(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Error(err)
				return
			}
			var st stateFile
			if err := json.Unmarshal(b, &st); err != nil {
				t.Errorf("state file not valid JSON: %v", err)
			}
		})
	}
	wg.Wait()
	got, err := readState(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 20 {
		t.Errorf("%d entries, want 20", len(got))
	}
}

// writeState replaces the state file with entries and no mappings.
func writeState(path string, entries map[string]Entry) error {
	return writeStateFile(path, entries, nil)
}
