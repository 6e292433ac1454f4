package device

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The fixture tree is a SanDisk USB stick (sdb, partition sdb1) behind an
// xHCI controller, plus loop0, lo, and a device with a broken uevent file.
const (
	fixture   = "testdata/sys"
	pciPath   = "/devices/pci0000:00/0000:00:14.0"
	usbPath   = pciPath + "/usb1/1-1"
	intfPath  = usbPath + "/1-1:1.0"
	scsiPath  = intfPath + "/host0/target0:0:0/0:0:0:0"
	sdbPath   = scsiPath + "/block/sdb"
	sdb1Path  = sdbPath + "/sdb1"
	loop0Path = "/devices/virtual/block/loop0"
)

// newManager returns a Manager on the fixture tree (or sysRoot) whose
// probes fail the test unless the test replaces them.
func newManager(t testing.TB, cfg Config) *Manager {
	t.Helper()
	if cfg.Roots.Sys == "" {
		cfg.Roots.Sys = fixture
	}
	if cfg.Blkid == "" {
		cfg.Blkid = "/nonexistent/blkid"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(tWriter{t}, nil))
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.probe = func(context.Context, string) (uevent.FS, uevent.Partition, error) {
		t.Error("unexpected filesystem probe")
		return uevent.FS{}, uevent.Partition{}, nil
	}
	t.Cleanup(func() { m.Close() })
	return m
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// event builds a checked event from KEY=VALUE strings; SEQNUM defaults
// to 1 and SUBSYSTEM to block.
func event(t testing.TB, action, devpath string, kv ...string) uevent.Event {
	t.Helper()
	props := []uevent.Property{{Key: "ACTION", Value: action}, {Key: "DEVPATH", Value: devpath}}
	has := map[string]bool{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		props = append(props, uevent.Property{Key: k, Value: v})
		has[k] = true
	}
	if !has["SUBSYSTEM"] {
		props = append(props, uevent.Property{Key: "SUBSYSTEM", Value: "block"})
	}
	if !has["SEQNUM"] {
		props = append(props, uevent.Property{Key: "SEQNUM", Value: "1"})
	}
	ev, err := uevent.FromProps(props)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func TestAttr(t *testing.T) {
	m := newManager(t, Config{})
	tests := []struct {
		name    string
		devpath string
		attr    string
		want    string
	}{
		{"usb stick sdb1 size", sdb1Path, "size", "30527488"},
		{"usb stick sdb removable", sdbPath, "removable", "1"},
		{"partition has no removable", sdb1Path, "removable", ""},
		{"trailing spaces kept", scsiPath, "model", "Cruzer Blade    "},
		{"path through a directory", sdbPath, "queue/rotational", "1"},
		{"path through the device link", sdbPath, "device/vendor", "SanDisk "},
		{"driver link reads as its name", intfPath, "driver", "usb-storage"},
		{"subsystem link reads as its name", sdbPath, "subsystem", "block"},
		{"other link is not an attribute", sdbPath, "device", ""},
		{"directory is not an attribute", usbPath, "power", ""},
		{"attribute in a group", usbPath, "power/control", "on"},
		{"uevent file", sdb1Path, "uevent", "MAJOR=8\nMINOR=17\nDEVNAME=sdb1\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=1"},
		{"absent", sdb1Path, "nonexistent", ""},
		{"parent dir refused", sdb1Path, "../size", ""},
		{"dotdot inside refused", sdbPath, "queue/../size", ""},
		{"dot refused", sdbPath, "./size", ""},
		{"absolute refused", sdbPath, "/etc/passwd", ""},
		{"empty refused", sdbPath, "", ""},
		{"trailing slash refused", sdbPath, "size/", ""},
		{"NUL refused", sdbPath, "size\x00", ""},
		{"device gone", sdbPath + "/sdb9", "size", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := m.For(context.Background(), event(t, "add", tt.devpath))
			defer d.Done()
			if got := d.Attr(tt.attr); got != tt.want {
				t.Errorf("Attr(%q) = %q, want %q", tt.attr, got, tt.want)
			}
		})
	}
}

func TestAttrs(t *testing.T) {
	m := newManager(t, Config{})
	tests := []struct {
		name    string
		devpath string
		attr    string
		want    string
	}{
		{"own attribute first", sdb1Path, "size", "30527488"},
		{"removable from the disk", sdb1Path, "removable", "1"},
		{"vendor from the scsi device", sdb1Path, "vendor", "SanDisk "},
		{"driver of the nearest parent with one", sdb1Path, "driver", "sd"},
		{"idVendor of the stick, not of the root hub", sdb1Path, "idVendor", "0781"},
		{"manufacturer", sdb1Path, "manufacturer", "SanDisk"},
		{"from the pci controller", sdb1Path, "class", "0x0c0330"},
		{"root hub's own", pciPath + "/usb1", "idVendor", "1d6b"},
		{"absent everywhere", sdb1Path, "nonexistent", ""},
		{"attribute group dir of a parent is not a device", sdb1Path, "control", ""},
		{"path name", sdb1Path, "power/control", "on"},
		{"refused name", sdb1Path, "../removable", ""},
		{"virtual device", loop0Path, "idVendor", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := m.For(context.Background(), event(t, "add", tt.devpath))
			defer d.Done()
			if got := d.Attrs(tt.attr); got != tt.want {
				t.Errorf("Attrs(%q) = %q, want %q", tt.attr, got, tt.want)
			}
		})
	}
}

func TestHasParent(t *testing.T) {
	m := newManager(t, Config{})
	tests := []struct {
		devpath   string
		subsystem string
		devtype   string
		want      bool
	}{
		{sdb1Path, "usb", "", true},
		{sdb1Path, "usb", "usb_device", true},
		{sdb1Path, "usb", "usb_interface", true},
		{sdb1Path, "usb", "usb_hub", false},
		{sdb1Path, "scsi", "scsi_device", true},
		{sdb1Path, "pci", "", true},
		{sdb1Path, "block", "disk", true},
		{sdb1Path, "block", "partition", false}, // itself, not a parent
		{sdb1Path, "net", "", false},
		{sdb1Path, "", "", false},
		{sdbPath, "block", "", false},
		{sdbPath, "usb", "usb_device", true},
		{pciPath + "/usb1", "usb", "", false},
		{pciPath + "/usb1", "pci", "", true},
		{loop0Path, "usb", "", false},
		{sdbPath + "/sdb9", "usb", "", false}, // device gone
	}
	for _, tt := range tests {
		d := m.For(context.Background(), event(t, "add", tt.devpath))
		if got := d.HasParent(tt.subsystem, tt.devtype); got != tt.want {
			t.Errorf("%s: HasParent(%q, %q) = %v, want %v", tt.devpath, tt.subsystem, tt.devtype, got, tt.want)
		}
		d.Done()
	}
}

// tree builds a sysfs root in a temporary directory: files maps a path to
// its content, links a path to a symlink target.
func tree(t *testing.T, files, links map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for p, c := range files {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for p, target := range links {
		p = filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestAttrBounds(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("outside\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", MaxAttrSize+904)
	root := tree(t, map[string]string{
		"devices/virtual/mem/null/uevent":   "MAJOR=1\nMINOR=3\nDEVNAME=null\n",
		"devices/virtual/mem/null/big":      big,
		"devices/virtual/mem/null/exact":    big[:MaxAttrSize],
		"devices/virtual/mem/null/newlines": "v\n\n\n",
		"devices/virtual/mem/null/empty":    "",
		"devices/virtual/mem/other":         "inside\n",
	}, map[string]string{
		"devices/virtual/mem/null/abs":      secret,
		"devices/virtual/mem/null/relout":   "../../../../../" + secret,
		"devices/virtual/mem/null/sibling":  "../other",
		"devices/virtual/mem/null/module":   "../../../../module/mem",
		"devices/virtual/mem/null/dir/link": "../../../../../../",
	})
	fifo := filepath.Join(root, "devices/virtual/mem/null/fifo")
	if err := mkfifo(fifo); err != nil {
		t.Logf("no FIFO case: %v", err)
	}
	m := newManager(t, Config{Roots: host.Roots{Sys: root}})
	d := m.For(context.Background(), event(t, "add", "/devices/virtual/mem/null", "SUBSYSTEM=mem"))
	defer d.Done()
	tests := []struct{ attr, want string }{
		{"big", big[:MaxAttrSize]},
		{"exact", big[:MaxAttrSize]},
		{"newlines", "v"},
		{"empty", ""},
		{"abs", ""},
		{"relout", ""},
		{"dir/link/etc/passwd", ""},
		{"sibling", ""}, // leaves the device's directory
		{"module", "mem"},
		{"fifo", ""},
	}
	for _, tt := range tests {
		if got := d.Attr(tt.attr); got != tt.want {
			t.Errorf("Attr(%q) = %.40q (%d bytes), want %.40q (%d bytes)", tt.attr, got, len(got), tt.want, len(tt.want))
		}
	}
}

func TestAttrCachedPerEvent(t *testing.T) {
	root := tree(t, map[string]string{
		"devices/virtual/block/loop1/uevent": "MAJOR=7\nMINOR=1\nDEVNAME=loop1\nDEVTYPE=disk\n",
		"devices/virtual/block/loop1/size":   "0\n",
	}, map[string]string{"devices/virtual/block/loop1/subsystem": "../../../../class/block"})
	m := newManager(t, Config{Roots: host.Roots{Sys: root}})
	path := "/devices/virtual/block/loop1"
	d := m.For(context.Background(), event(t, "add", path))
	if got := d.Attr("size"); got != "0" {
		t.Fatalf("Attr(size) = %q, want 0", got)
	}
	if err := os.WriteFile(filepath.Join(root, path, "size"), []byte("2048\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := d.Attr("size"); got != "0" {
		t.Errorf("same event: Attr(size) = %q, want the cached 0", got)
	}
	d.Done()
	d = m.For(context.Background(), event(t, "change", path))
	if got := d.Attr("size"); got != "2048" {
		t.Errorf("next event: Attr(size) = %q, want 2048", got)
	}
	d.Done()
}

func TestEnumerate(t *testing.T) {
	m := newManager(t, Config{})
	t.Run("block", func(t *testing.T) {
		got, err := m.Enumerate("block")
		if err != nil {
			t.Fatal(err)
		}
		want := []uevent.Event{
			coldplug(t, sdbPath, "block", "MAJOR=8", "MINOR=16", "DEVNAME=sdb", "DEVTYPE=disk", "DISKSEQ=9"),
			coldplug(t, sdb1Path, "block", "MAJOR=8", "MINOR=17", "DEVNAME=sdb1", "DEVTYPE=partition", "DISKSEQ=9", "PARTN=1"),
			coldplug(t, loop0Path, "block", "MAJOR=7", "MINOR=0", "DEVNAME=loop0", "DEVTYPE=disk", "DISKSEQ=13"),
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Enumerate(block) (-want +got):\n%s", diff)
		}
	})
	t.Run("net", func(t *testing.T) {
		got, err := m.Enumerate("net")
		if err != nil {
			t.Fatal(err)
		}
		want := []uevent.Event{coldplug(t, "/devices/virtual/net/lo", "net", "INTERFACE=lo", "IFINDEX=1")}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Enumerate(net) (-want +got):\n%s", diff)
		}
	})
	t.Run("all, parents first, broken skipped", func(t *testing.T) {
		evs, err := m.Enumerate("")
		var skip *SkipError
		if !errors.As(err, &skip) || skip.Skipped != 1 || !errors.Is(err, errBadUevent) {
			t.Errorf("Enumerate(\"\") error = %v, want a SkipError of 1 bad uevent file", err)
		}
		var got []string
		for _, ev := range evs {
			got = append(got, ev.Subsystem+" "+ev.DevPath)
		}
		want := []string{
			"pci " + pciPath,
			"usb " + pciPath + "/usb1",
			"usb " + usbPath,
			"usb " + intfPath,
			"scsi " + intfPath + "/host0",
			"scsi " + intfPath + "/host0/target0:0:0",
			"scsi " + scsiPath,
			"block " + sdbPath,
			"block " + sdb1Path,
			"block " + loop0Path,
			"net /devices/virtual/net/lo",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Enumerate(\"\") (-want +got):\n%s", diff)
		}
	})
	t.Run("none", func(t *testing.T) {
		got, err := m.Enumerate("sound")
		if err != nil || len(got) != 0 {
			t.Errorf("Enumerate(sound) = %v, %v; want nothing", got, err)
		}
	})
	t.Run("no sysfs", func(t *testing.T) {
		m := newManager(t, Config{Roots: host.Roots{Sys: t.TempDir()}})
		if _, err := m.Enumerate(""); err == nil || errors.As(err, new(*SkipError)) {
			t.Errorf("Enumerate on an empty root: err = %v, want a fatal error", err)
		}
	})
}

// coldplug is the event Enumerate builds from a uevent file.
func coldplug(t *testing.T, devpath, subsystem string, kv ...string) uevent.Event {
	t.Helper()
	props := []uevent.Property{{Key: "ACTION", Value: "add"}, {Key: "DEVPATH", Value: devpath}, {Key: "SUBSYSTEM", Value: subsystem}}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		props = append(props, uevent.Property{Key: k, Value: v})
	}
	props = append(props, uevent.Property{Key: "SEQNUM", Value: "0"})
	ev, err := uevent.FromProps(props)
	if err != nil {
		t.Fatal(err)
	}
	ev.Source = uevent.SourceColdplug
	return ev
}

// udevFS are the ID_FS_* properties udev adds to a vfat partition whose
// label is `My "Disk" $x` (blkid_safe_string and blkid_encode_string).
var udevFS = []string{
	"ID_FS_LABEL=My__Disk__$x",
	`ID_FS_LABEL_ENC=My\x20\x22Disk\x22\x20\x24x`,
	"ID_FS_UUID=5E2F-1A3B",
	"ID_FS_UUID_ENC=5E2F-1A3B",
	"ID_FS_VERSION=FAT32",
	"ID_FS_TYPE=vfat",
	"ID_FS_USAGE=filesystem",
}

var udevFSWant = uevent.FS{Type: "vfat", Label: `My "Disk" $x`, UUID: "5E2F-1A3B", Usage: "filesystem", Version: "FAT32"}

// TestDatabase follows the USB stick's partition through add, change and
// remove: remove answers what add and change read, without sysfs.
func TestDatabase(t *testing.T) {
	m := newManager(t, Config{})
	add := event(t, "add", sdb1Path, append([]string{"DEVNAME=sdb1", "DEVTYPE=partition"}, udevFS...)...)
	d := m.For(context.Background(), add)
	if !m.db.known(sdb1Path) {
		t.Error("not Known after For(add)")
	}
	if got := d.FS(); got != udevFSWant {
		t.Errorf("add: FS() = %+v, want %+v", got, udevFSWant)
	}
	_ = d.Attr("size")
	_ = d.Attrs("idVendor")
	_ = d.Attrs("removable")
	_ = d.HasParent("usb", "")
	d.Done()
	d.Done() // idempotent

	d = m.For(context.Background(), event(t, "change", sdb1Path, "DEVNAME=sdb1", "DEVTYPE=partition"))
	_ = d.Attr("partition")
	d.Done()

	// The kernel's remove event: no ID_FS_* properties, and sysfs is not
	// read even though the fixture still has the device.
	d = m.For(context.Background(), event(t, "remove", sdb1Path, "DEVNAME=sdb1", "DEVTYPE=partition"))
	defer d.Done()
	if m.db.known(sdb1Path) {
		t.Error("still Known after For(remove)")
	}
	if got := d.FS(); got != udevFSWant {
		t.Errorf("remove: FS() = %+v, want %+v", got, udevFSWant)
	}
	attrTests := []struct {
		f    func(string) string
		name string
		want string
	}{
		{d.Attr, "size", "30527488"},
		{d.Attr, "partition", "1"}, // read by the change
		{d.Attr, "start", ""},      // never read while present
		{d.Attrs, "idVendor", "0781"},
		{d.Attrs, "removable", "1"},
		{d.Attrs, "size", "30527488"}, // own attribute, read by Attr
		{d.Attrs, "manufacturer", ""},
	}
	for _, tt := range attrTests {
		if got := tt.f(tt.name); got != tt.want {
			t.Errorf("remove: %q = %q, want %q", tt.name, got, tt.want)
		}
	}
	// The whole parent chain was recorded, not only the question asked.
	if !d.HasParent("usb", "usb_interface") || !d.HasParent("block", "disk") || d.HasParent("net", "") {
		t.Error("remove: HasParent does not answer from the recorded parents")
	}
	if got := recordedProps(d); len(got) == 0 || got[0].Value != "change" {
		t.Errorf("remove: RecordedProps() = %v, want the change event's", got)
	}
}

func TestDatabaseUnknownRemove(t *testing.T) {
	m := newManager(t, Config{})
	d := m.For(context.Background(), event(t, "remove", sdb1Path, "DEVNAME=sdb1"))
	defer d.Done()
	if d.FS() != (uevent.FS{}) || d.Attr("size") != "" || d.Attrs("idVendor") != "" || d.HasParent("usb", "") || recordedProps(d) != nil {
		t.Error("a remove of an unknown device answers something")
	}
	// A udev remove event carries its ID_FS_* properties itself.
	d = m.For(context.Background(), event(t, "remove", sdb1Path, append([]string{"DEVNAME=sdb1"}, udevFS...)...))
	defer d.Done()
	if got := d.FS(); got != udevFSWant {
		t.Errorf("udev remove: FS() = %+v, want %+v", got, udevFSWant)
	}
}

func TestDatabaseAddReplaces(t *testing.T) {
	m := newManager(t, Config{})
	d := m.For(context.Background(), event(t, "add", sdb1Path, append([]string{"DEVNAME=sdb1"}, udevFS...)...))
	d.FS()
	d.Attr("size")
	d.Done()
	m.For(context.Background(), event(t, "add", sdb1Path, "DEVNAME=sdb1")).Done() // a new stick, nothing read
	d = m.For(context.Background(), event(t, "remove", sdb1Path, "DEVNAME=sdb1"))
	defer d.Done()
	if d.FS() != (uevent.FS{}) || d.Attr("size") != "" {
		t.Error("remove answers what the previous add knew")
	}
}

func TestDatabaseMove(t *testing.T) {
	m := newManager(t, Config{})
	d := m.For(context.Background(), event(t, "add", sdb1Path))
	d.Attr("size")
	d.Done()
	moved := "/devices/virtual/block/sdb1"
	m.For(context.Background(), event(t, "move", moved, "DEVPATH_OLD="+sdb1Path)).Done()
	if m.db.known(sdb1Path) || !m.db.known(moved) {
		t.Errorf("after move: Devpaths() = %v", m.db.devpaths())
	}
	d = m.For(context.Background(), event(t, "remove", moved))
	defer d.Done()
	if got := d.Attr("size"); got != "30527488" {
		t.Errorf("remove after move: Attr(size) = %q", got)
	}
}

// Block devices outlive others in a full database: their remove rules
// and unmounting need what was recorded.
func TestDatabaseKeepsBlockDevices(t *testing.T) {
	m := newManager(t, Config{DBMax: 2})
	lo := "/devices/virtual/net/lo"
	m.For(context.Background(), event(t, "add", sdbPath)).Done()
	m.For(context.Background(), event(t, "add", lo, "SUBSYSTEM=net")).Done()
	m.For(context.Background(), event(t, "add", loop0Path)).Done() // sdb is the oldest, lo goes
	if diff := cmp.Diff([]string{sdbPath, loop0Path}, m.db.devpaths()); diff != "" {
		t.Errorf("Devpaths() (-want +got):\n%s", diff)
	}
}

func TestDatabaseBounded(t *testing.T) {
	m := newManager(t, Config{DBMax: 2})
	paths := []string{sdbPath, sdb1Path, loop0Path}
	m.For(context.Background(), event(t, "add", paths[0])).Done()
	m.For(context.Background(), event(t, "add", paths[1])).Done()
	m.For(context.Background(), event(t, "change", paths[0])).Done() // paths[1] is now the oldest
	m.For(context.Background(), event(t, "add", paths[2])).Done()
	want := []string{sdbPath, loop0Path}
	if diff := cmp.Diff(want, m.db.devpaths()); diff != "" {
		t.Errorf("Devpaths() (-want +got):\n%s", diff)
	}
	if s := m.Stats(); s.Devices != 2 || s.Evictions != 1 {
		t.Errorf("Stats() = %+v, want 2 devices, 1 eviction", s)
	}
	m.db.take(sdbPath)
	if m.db.known(sdbPath) {
		t.Error("Known after Forget")
	}
}

// TestConcurrent runs unrelated devices at once, for the race detector.
func TestConcurrent(t *testing.T) {
	m := newManager(t, Config{DBMax: 8})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 50 {
				p := []string{sdbPath, sdb1Path, loop0Path, usbPath}[(i+j)%4]
				for _, action := range []string{"add", "change", "remove"} {
					d := m.For(context.Background(), event(t, action, p))
					d.Attr("size")
					d.Attrs("idVendor")
					d.HasParent("usb", "")
					d.Done()
				}
				m.db.devpaths()
				m.Stats()
			}
		})
	}
	wg.Wait()
}

func TestFSLazy(t *testing.T) {
	m := newManager(t, Config{})
	var probed []string
	m.probe = func(_ context.Context, devnode string) (uevent.FS, uevent.Partition, error) {
		probed = append(probed, devnode)
		return uevent.FS{Type: "ext4", Usage: "filesystem"}, uevent.Partition{}, nil
	}
	sdb1 := event(t, "add", sdb1Path, "DEVNAME=sdb1")

	m.For(context.Background(), sdb1).Done() // no rule asked
	if len(probed) != 0 {
		t.Fatalf("probed %v without FS()", probed)
	}
	d := m.For(context.Background(), sdb1)
	d.FS()
	d.FS()
	d.Done()
	if diff := cmp.Diff([]string{"/dev/sdb1"}, probed); diff != "" {
		t.Errorf("two FS() in one event probed (-want +got):\n%s", diff)
	}
	probed = nil
	for _, ev := range []uevent.Event{
		event(t, "add", sdb1Path, append([]string{"DEVNAME=sdb1"}, udevFS...)...), // udev probed
		event(t, "add", loop0Path, "DEVNAME=loop0"),                               // size 0
		event(t, "add", usbPath, "SUBSYSTEM=usb", "DEVNAME=bus/usb/001/006"),      // not block
		event(t, "add", sdbPath+"/sdb9"),                                          // no node
		event(t, "remove", sdb1Path, "DEVNAME=sdb1"),                              // gone
	} {
		d := m.For(context.Background(), ev)
		d.FS()
		d.Done()
	}
	if len(probed) != 0 {
		t.Errorf("probed %v, want no probe", probed)
	}
	if s := m.Stats(); s.Probes != 1 || s.ProbeErrors != 0 {
		t.Errorf("Stats() = %+v, want 1 probe", s)
	}
}

// TestFSProbeCancelled: a probe runs on the event's context, so stopping
// the daemon (which ends it) ends a probe that hangs on a dying disk.
func TestFSProbeCancelled(t *testing.T) {
	m := newManager(t, Config{ProbeTimeout: time.Hour})
	started := make(chan struct{})
	m.probe = func(ctx context.Context, _ string) (uevent.FS, uevent.Partition, error) {
		close(started)
		<-ctx.Done()
		return uevent.FS{}, uevent.Partition{}, ctx.Err()
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := m.For(ctx, event(t, "add", sdb1Path, "DEVNAME=sdb1"))
	go func() { <-started; cancel() }()
	done := make(chan uevent.FS, 1)
	go func() { done <- d.FS() }()
	select {
	case fs := <-done:
		if fs != (uevent.FS{}) {
			t.Errorf("FS() of a cancelled probe = %+v, want zero", fs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the probe outlived its event's context")
	}
	d.Done()
}

func TestFSProbeError(t *testing.T) {
	m := newManager(t, Config{})
	m.probe = func(context.Context, string) (uevent.FS, uevent.Partition, error) {
		return uevent.FS{Type: "junk"}, uevent.Partition{}, errors.New("boom")
	}
	d := m.For(context.Background(), event(t, "add", sdb1Path, "DEVNAME=sdb1"))
	if got := d.FS(); got != (uevent.FS{}) {
		t.Errorf("FS() after a failed probe = %+v, want zero", got)
	}
	d.Done()
	if s := m.Stats(); s.ProbeErrors != 1 {
		t.Errorf("Stats() = %+v, want 1 probe error", s)
	}
}

func BenchmarkAttrCached(b *testing.B) {
	m := newManager(b, Config{})
	d := m.For(context.Background(), event(b, "add", sdb1Path))
	defer d.Done()
	d.Attr("size")
	for b.Loop() {
		d.Attr("size")
	}
}

func BenchmarkAttrFirstRead(b *testing.B) {
	m := newManager(b, Config{})
	ev := event(b, "add", sdb1Path)
	for b.Loop() {
		d := m.For(context.Background(), ev)
		d.Attr("size")
		d.Done()
	}
}

func BenchmarkAttrsWalk(b *testing.B) {
	m := newManager(b, Config{})
	ev := event(b, "add", sdb1Path)
	for b.Loop() {
		d := m.For(context.Background(), ev)
		d.Attrs("idVendor")
		d.HasParent("usb", "usb_device")
		d.Done()
	}
}

// recordedProps is what the database held for a remove event's device.
func recordedProps(d *Device) []uevent.Property {
	if d.rec == nil {
		return nil
	}
	return d.rec.props
}

// TestRouteEventLeavesDatabase: an event of a link's state reads sysfs
// but neither changes nor creates what the database holds: a resync
// builds the remove of a vanished interface from its uevents, and a
// carrier arriving after the interface's remove must not bring it back.
func TestRouteEventLeavesDatabase(t *testing.T) {
	m := newManager(t, Config{})
	const lo = "/devices/virtual/net/lo"
	carrier := event(t, "carrier", lo, "SUBSYSTEM=net", "INTERFACE=lo", "IFINDEX=1", "OPERSTATE=unknown")
	d := m.For(context.Background(), carrier)
	if got := d.Attr("mtu"); got != "65536" {
		t.Errorf("Attr(mtu) of a route event = %q, want 65536 from sysfs", got)
	}
	if got := d.DevNode(); got != "" {
		t.Errorf("DevNode() of a route event = %q, want none: an interface has no node", got)
	}
	d.Done()
	if m.db.known(lo) {
		t.Error("a route event made a database record")
	}

	add := event(t, "add", lo, "SUBSYSTEM=net", "INTERFACE=lo", "IFINDEX=1")
	m.For(context.Background(), add).Done()
	m.For(context.Background(), carrier).Done()
	props, ok := m.Recorded(lo)
	if !ok || len(props) == 0 || props[0].Value != "add" {
		t.Errorf("after add and carrier the database holds %v, want the add's properties", props)
	}
}

func (b *db) known(devpath string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.byPath[devpath]
	return ok
}

func (b *db) devpaths() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Sorted(maps.Keys(b.byPath))
}
