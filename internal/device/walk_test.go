package device

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// stickFS is what blkid says of the fixture stick's partition.
var stickFS = uevent.FS{Type: "vfat", Label: "STICK", UUID: "5E2F-1A3B", Usage: "filesystem", Version: "FAT32"}

// recordManager returns a Manager on the fixture tree whose probe says
// stickFS.
func recordManager(t *testing.T) *Manager {
	t.Helper()
	m := newManager(t, Config{})
	m.blkid = "blkid"
	m.probe = func(context.Context, string) (uevent.FS, uevent.Partition, error) {
		return stickFS, uevent.Partition{}, nil
	}
	return m
}

// recordJSON records ev on the fixture tree and returns it as a replay reads
// it back: through its JSON.
func recordJSON(t *testing.T, m *Manager, ev uevent.Event) *uevent.Recording {
	t.Helper()
	b, err := json.Marshal(m.Record(context.Background(), ev))
	if err != nil {
		t.Fatal(err)
	}
	var r uevent.Recording
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	return &r
}

// attrNames and parents are what the equivalence test asks each device:
// every attribute name of the fixture tests, and then some. A path into a
// child device's directory ("sdb1/size" of sdb) is not among them: a
// walk does not record children (TestRecordWalk).
var (
	attrNames = []string{"size", "removable", "partition", "ro", "dev", "uevent", "vendor", "model", "driver",
		"subsystem", "idVendor", "idProduct", "serial", "manufacturer", "class", "power/control", "power",
		"control", "queue/rotational", "device/vendor", "device/model", "device/driver", "device/subsystem",
		"device/device/vendor", "device", "nonexistent", "../removable", "./size", "/etc/passwd",
		"", "size/", "mtu", "address", "bInterfaceClass", "module"}
	parents = [][2]string{{"usb", ""}, {"usb", "usb_device"}, {"usb", "usb_interface"}, {"usb", "usb_hub"},
		{"scsi", "scsi_device"}, {"scsi", ""}, {"pci", ""}, {"block", "disk"}, {"block", "partition"},
		{"block", ""}, {"net", ""}, {"", ""}}
)

// answers is everything a rule can ask of a device, in order.
func answers(d *Device) []string {
	var out []string
	for _, n := range attrNames {
		out = append(out, "attr "+n+"="+d.Attr(n), "attrs "+n+"="+d.Attrs(n))
	}
	for _, p := range parents {
		out = append(out, "has_parent "+p[0]+","+p[1]+"="+boolString(d.HasParent(p[0], p[1])))
	}
	fs := d.FS()
	return append(out, "fs="+fs.Type+","+fs.Label+","+fs.UUID+","+fs.Usage+","+fs.Version, "devnode="+d.DevNode())
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// TestRecordingAnswersAsSysfs: a device of a recording answers every
// question a rule can ask as the live device it was recorded from does,
// on its add and, from the database, on its remove.
func TestRecordingAnswersAsSysfs(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name string
		ev   uevent.Event
	}{
		{"usb stick sdb1", event(t, "add", sdb1Path, "DEVNAME=sdb1", "DEVTYPE=partition", "MAJOR=8", "MINOR=17")},
		{"usb stick sdb", event(t, "add", sdbPath, "DEVNAME=sdb", "DEVTYPE=disk", "MAJOR=8", "MINOR=16")},
		{"usb interface", event(t, "bind", intfPath, "SUBSYSTEM=usb", "DEVTYPE=usb_interface")},
		{"usb device", event(t, "add", usbPath, "SUBSYSTEM=usb", "DEVTYPE=usb_device")},
		{"loop0", event(t, "change", loop0Path, "DEVNAME=loop0", "DEVTYPE=disk")},
		{"lo", event(t, "change", "/devices/virtual/net/lo", "SUBSYSTEM=net", "INTERFACE=lo")},
	} {
		t.Run(tt.name, func(t *testing.T) {
			live, rec := recordManager(t), NewRecorded(Config{})
			r := recordJSON(t, live, tt.ev)
			d, e := live.For(ctx, tt.ev), rec.ForRecording(ctx, r)
			want := answers(d)
			if diff := cmp.Diff(want, answers(e)); diff != "" {
				t.Errorf("recorded device answers differently (-sysfs +recording):\n%s", diff)
			}
			if !slices.Contains(want, "attr subsystem="+tt.ev.Subsystem) {
				t.Errorf("the live device does not answer: %q", want)
			}
			d.Done()
			e.Done()
			remove := event(t, "remove", tt.ev.DevPath, "SUBSYSTEM="+tt.ev.Subsystem)
			d, e = live.For(ctx, remove), rec.ForRecording(ctx, &uevent.Recording{Event: remove, Walk: []uevent.WalkDevice{}})
			defer d.Done()
			defer e.Done()
			if diff := cmp.Diff(answers(d), answers(e)); diff != "" {
				t.Errorf("on remove, the recorded device answers differently (-sysfs +recording):\n%s", diff)
			}
		})
	}
}

// TestRecordWalk: what a walk holds of the stick's partition.
func TestRecordWalk(t *testing.T) {
	r := recordJSON(t, recordManager(t), event(t, "add", sdb1Path, "DEVNAME=sdb1", "DEVTYPE=partition"))
	if r.FS == nil || *r.FS != stickFS {
		t.Errorf("fs %+v, want %+v", r.FS, stickFS)
	}
	var got []string
	for _, d := range r.Walk {
		got = append(got, d.DevPath+" "+d.Subsystem+" "+d.DevType+" "+d.Driver)
	}
	want := []string{
		sdb1Path + " block partition ",
		sdbPath + " block disk ",
		scsiPath + " scsi scsi_device sd",
		scsiPath[:len(scsiPath)-len("/0:0:0:0")] + " scsi scsi_target ",
		intfPath + "/host0 scsi scsi_host ",
		intfPath + " usb usb_interface usb-storage",
		usbPath + " usb usb_device usb",
		pciPath + "/usb1 usb usb_device usb",
		pciPath + " pci  xhci_hcd",
		"/devices/pci0000:00   ",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("walk (-want +got):\n%s", diff)
	}
	disk := r.Walk[1]
	if disk.Attrs["queue/rotational"] != "1" || disk.Links["device"] != scsiPath {
		t.Errorf("sdb: attrs %v, links %v: want queue/rotational and the device link", disk.Attrs, disk.Links)
	}
	for name := range disk.Attrs {
		if name == "sdb1/size" || name == "subsystem" || name == "device" {
			t.Errorf("sdb: attribute %q recorded: a child device's, or a link", name)
		}
	}
	if usb := r.Walk[6]; usb.Attrs["power/control"] != "on" || usb.Attrs["idVendor"] != "0781" {
		t.Errorf("usb device: attrs %v", usb.Attrs)
	}
}

// TestRecordRemove: a removed device has no walk and no fs, and one not
// recorded answers nothing.
func TestRecordRemove(t *testing.T) {
	m := recordManager(t)
	r := recordJSON(t, m, event(t, "remove", sdb1Path))
	if r.FS != nil || r.Walk == nil || len(r.Walk) != 0 {
		t.Errorf("remove recorded with fs %v, walk %#v; want none and empty", r.FS, r.Walk)
	}
	ev := event(t, "add", sdb1Path, "DEVNAME=sdb1")
	d := NewRecorded(Config{}).ForRecording(context.Background(), &uevent.Recording{Event: ev})
	defer d.Done()
	if got := answers(d); slices.ContainsFunc(got, func(s string) bool {
		return s != "fs=,,,," && s != "devnode=/dev/sdb1" && s[len(s)-1] != '=' && s[len(s)-6:] != "=false"
	}) {
		t.Errorf("a device without a walk answers %q", got)
	}
	if _, err := NewRecorded(Config{}).Enumerate(""); err == nil {
		t.Error("a Manager of recordings enumerated a sysfs")
	}
}
