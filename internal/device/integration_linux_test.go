package device

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/looptest"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// These tests run against the real kernel: a disk image with a DOS
// partition table on a loop device, its partition added with partx (the
// kernel here has no partition parser), a filesystem made on it.

func needRoot(t *testing.T) {
	t.Helper()
	need(t, os.Geteuid() == 0, "root")
	_, err := os.Stat("/dev/loop-control")
	need(t, err == nil, "/dev/loop-control")
}

// cmdOut runs a tool and fails the test if it fails.
func cmdOut(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(needTool(t, name), args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// loopPartition attaches a 64 MiB image with one partition of DOS type
// ptype and returns the disk and partition names ("loop3", "loop3p1").
// The cleanup of looptest.Attach removes the partition and detaches the
// loop device even when the test fails.
func loopPartition(t *testing.T, ptype string) (disk, part string) {
	t.Helper()
	loop := looptest.Attach(t, looptest.Image(t, 64<<20, "label: dos\nstart=2048, type="+ptype+"\n"))
	loop.AddPartitions(t, 1)
	return loop.Name, loop.PartName(1)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// realManager is a Manager on the real /sys and /dev.
func realManager(t *testing.T) *Manager {
	t.Helper()
	m, err := New(Config{Blkid: needTool(t, "blkid"), Logger: slog.New(slog.NewTextHandler(tWriter{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// coldplugEvents enumerates block devices and returns the add events of
// disk and part, checking the disk comes first.
func coldplugEvents(t *testing.T, m *Manager, disk, part string) (diskEv, partEv uevent.Event) {
	t.Helper()
	evs, err := m.Enumerate("block")
	if skip, ok := errors.AsType[*SkipError](err); ok {
		t.Logf("enumerate: %v", skip)
	} else if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(evs, func(ev uevent.Event) bool { return ev.DevName == disk })
	j := slices.IndexFunc(evs, func(ev uevent.Event) bool { return ev.DevName == part })
	if i < 0 || j < 0 {
		t.Fatalf("Enumerate(block) lacks %s (%d) or %s (%d)", disk, i, part, j)
	}
	if i > j {
		t.Errorf("Enumerate(block): %s after its partition %s", disk, part)
	}
	partEv = evs[j]
	if partEv.DevType != "partition" || partEv.Get("PARTN") != "1" || partEv.Source != uevent.SourceColdplug || partEv.Action != "add" {
		t.Errorf("coldplug event of %s: %+v", part, partEv)
	}
	return evs[i], partEv
}

// removeEvent is the kernel's remove event of ev's device.
func removeEvent(t *testing.T, ev uevent.Event) uevent.Event {
	t.Helper()
	props := slices.Clone(ev.Props)
	for i, p := range props {
		switch p.Key {
		case "ACTION":
			props[i].Value = "remove"
		case "SEQNUM":
			props[i].Value = "4242"
		}
	}
	rm, err := uevent.FromProps(props)
	if err != nil {
		t.Fatal(err)
	}
	rm.Source = uevent.SourceKernel
	return rm
}

// blkidValue asks blkid for one tag, as a user would.
func blkidValue(t *testing.T, tag, devnode string) string {
	return cmdOut(t, "", "blkid", "-p", "-s", tag, "-o", "value", devnode)
}

func TestRealExt4AddRemove(t *testing.T) {
	needRoot(t)
	m := realManager(t)
	disk, part := loopPartition(t, "83")
	devnode := "/dev/" + part
	const label = "usb$(id);`x` 'y'" // 16 bytes, ext4's limit
	cmdOut(t, "", "mkfs.ext4", "-q", "-F", "-L", label, devnode)

	_, add := coldplugEvents(t, m, disk, part)
	d := m.For(context.Background(), add)
	want := uevent.FS{Type: "ext4", Label: label, UUID: blkidValue(t, "UUID", devnode), Usage: "filesystem", Version: "1.0"}
	if diff := cmp.Diff(want, d.FS()); diff != "" {
		t.Errorf("add: FS() (-want +got):\n%s", diff)
	}
	sysSize, err := os.ReadFile("/sys/class/block/" + part + "/size")
	if err != nil {
		t.Fatal(err)
	}
	size := strings.TrimSpace(string(sysSize))
	if got := d.Attr("size"); got != size || size == "0" {
		t.Errorf("add: Attr(size) = %q, sysfs says %q", got, size)
	}
	if got := d.Attr("partition"); got != "1" {
		t.Errorf("add: Attr(partition) = %q, want 1", got)
	}
	if got := d.Attrs("ro"); got != "0" {
		t.Errorf("add: Attrs(ro) = %q, want 0", got)
	}
	if !d.HasParent("block", "disk") || d.HasParent("usb", "") {
		t.Error("add: HasParent wrong for a loop partition")
	}
	d.Done()
	if s := m.Stats(); s.Probes != 1 || s.ProbeErrors != 0 {
		t.Errorf("Stats() = %+v, want one good probe", s)
	}

	cmdOut(t, "", "partx", "-d", "/dev/"+disk)
	waitFor(t, part+" to leave sysfs", func() bool {
		_, err := os.Stat("/sys/class/block/" + part)
		return errors.Is(err, os.ErrNotExist)
	})

	d = m.For(context.Background(), removeEvent(t, add))
	defer d.Done()
	if diff := cmp.Diff(want, d.FS()); diff != "" {
		t.Errorf("remove: FS() from the database (-want +got):\n%s", diff)
	}
	if got := d.Attr("size"); got != size {
		t.Errorf("remove: Attr(size) = %q, want %q from the database", got, size)
	}
	if !d.HasParent("block", "disk") {
		t.Error("remove: HasParent(block, disk) = false, want the recorded parent")
	}
	if m.db.known(add.DevPath) {
		t.Error("device still in the database after its remove")
	}
	if s := m.Stats(); s.Probes != 1 {
		t.Errorf("remove probed: Stats() = %+v", s)
	}
}

func TestRealOtherFilesystems(t *testing.T) {
	needRoot(t)
	m := realManager(t)
	tests := []struct {
		name  string
		ptype string
		mkfs  []string
		want  uevent.FS // UUID filled in from blkid
	}{
		{"vfat", "c", []string{"mkfs.vfat", "-n", "HOTPLUG"}, uevent.FS{Type: "vfat", Label: "HOTPLUG", Usage: "filesystem", Version: "FAT16"}},
		{"ntfs", "7", []string{"mkntfs", "-Q", "-F", "-L", "Fotos Müller $x"}, uevent.FS{Type: "ntfs", Label: "Fotos Müller $x", Usage: "filesystem"}},
		{"none", "83", nil, uevent.FS{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			disk, part := loopPartition(t, tt.ptype)
			devnode := "/dev/" + part
			if tt.mkfs != nil {
				cmdOut(t, "", tt.mkfs[0], append(tt.mkfs[1:], devnode)...)
				tt.want.UUID = blkidValue(t, "UUID", devnode)
			}
			_, add := coldplugEvents(t, m, disk, part)
			d := m.For(context.Background(), add)
			defer d.Done()
			if diff := cmp.Diff(tt.want, d.FS()); diff != "" {
				t.Errorf("FS() (-want +got):\n%s", diff)
			}
		})
	}
	if s := m.Stats(); s.ProbeErrors != 0 {
		t.Errorf("Stats() = %+v, want no probe errors", s)
	}
}

// TestRealEnumerate walks the whole of the real /sys/devices.
func TestRealEnumerate(t *testing.T) {
	_, err := os.Stat("/sys/devices")
	need(t, err == nil, "/sys")
	m := realManager(t)
	evs, err := m.Enumerate("")
	if _, ok := errors.AsType[*SkipError](err); err != nil && !ok {
		t.Fatal(err)
	}
	t.Logf("%d devices, %v", len(evs), err)
	seen := map[string]bool{}
	for _, ev := range evs {
		for p := ev.DevPath; p != "/devices"; p = filepath.Dir(p) {
			if p != ev.DevPath && !seen[p] {
				if _, err := os.Stat(filepath.Join("/sys", p, "subsystem")); err == nil {
					t.Errorf("%s enumerated before its parent %s", ev.DevPath, p)
				}
			}
		}
		seen[ev.DevPath] = true
	}
	if !slices.ContainsFunc(evs, func(ev uevent.Event) bool { return ev.Subsystem == "net" && ev.Get("INTERFACE") == "lo" }) {
		t.Error("no event for lo")
	}
}
