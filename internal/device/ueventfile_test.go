package device

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// Device strings as a hostile USB keyboard with a battery reports them:
// the kernel copies them into uevent files unescaped, newlines included.
const (
	evilName = "a\nID_INPUT_KEYBOARD=1\nDEVNAME=input/event0\nZ="
	evilHID  = "Evil\nMAJOR=8\nMINOR=0\nDEVNAME=sda\nHID_PHYS=forged\nMODALIAS=hid:forged"
	evilUniq = "S\nPOWER_SUPPLY_SCOPE=System\nPOWER_SUPPLY_TYPE=Mains"
)

const (
	kbdPath = "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0"
	hidPath = kbdPath + "/0003:1234:5678.0001"
	inPath  = hidPath + "/input/input7"
	evPath  = inPath + "/event7"
	batPath = hidPath + "/power_supply/hid-" + evilUniq + "-battery"
)

// injectionTree is a sysfs holding the keyboard's HID device, its input
// device and event node, and its battery, with the uevent files the
// kernel writes for them (input_dev_uevent, hid_uevent,
// power_supply_uevent, dev_uevent), plus devices whose files no kernel
// writes.
func injectionTree(t *testing.T) string {
	t.Helper()
	files := map[string]string{
		hidPath + "/uevent": "DRIVER=hid-generic\nHID_ID=0003:00001234:00005678\nHID_NAME=" + evilHID +
			"\nHID_PHYS=usb-0000:00:14.0-2/input0\nHID_UNIQ=" + evilUniq + "\nMODALIAS=hid:b0003g0001v00001234p00005678\n",
		inPath + "/uevent": "PRODUCT=3/1234/5678/111\nNAME=\"" + evilName + "\"\nPHYS=\"usb-0000:00:14.0-2/input0\"\nUNIQ=\"" + evilUniq +
			"\"\nPROP=0\nEV=120013\nKEY=e080ffdf01cfffff fffffffffffffffe\nMSC=10\nLED=7\nMODALIAS=input:b0003v1234p5678e0111-e0,1,4,11,14,k71,72,ram4,l0,1,2,sfw\n",
		inPath + "/name":                     evilName + "\n",
		inPath + "/phys":                     "usb-0000:00:14.0-2/input0\n",
		inPath + "/uniq":                     evilUniq + "\n",
		evPath + "/uevent":                   "MAJOR=13\nMINOR=71\nDEVNAME=input/event7\n",
		evPath + "/dev":                      "13:71\n",
		batPath + "/uevent":                  "POWER_SUPPLY_NAME=hid-" + evilUniq + "-battery\nPOWER_SUPPLY_TYPE=Battery\nPOWER_SUPPLY_PRESENT=1\nPOWER_SUPPLY_ONLINE=1\nPOWER_SUPPLY_CAPACITY=2\nPOWER_SUPPLY_MODEL_NAME=a\nPOWER_SUPPLY_STATUS=Discharging\nPOWER_SUPPLY_SCOPE=Device\n",
		"/devices/virtual/misc/liar/uevent":  "MAJOR=10\nMINOR=200\nDEVNAME=sda\n",
		"/devices/virtual/misc/liar/dev":     "10:237\n",
		"/devices/virtual/misc/nodev/uevent": "MAJOR=8\nMINOR=0\nDEVNAME=sda\n",
		"/devices/virtual/odd/odd0/uevent":   "ODD_NAME=x\nDEVNAME=sda\nID_FS_USAGE=filesystem\nSEQNUM=7\nODD_ID=1\n",
	}
	links := map[string]string{
		hidPath + "/subsystem":                  "../../../../../../../bus/hid",
		inPath + "/subsystem":                   "../../../../../../../../../class/input",
		evPath + "/subsystem":                   "../../../../../../../../../../class/input",
		batPath + "/subsystem":                  "../../../../../../../../../class/power_supply",
		"/devices/virtual/misc/liar/subsystem":  "../../../../class/misc",
		"/devices/virtual/misc/nodev/subsystem": "../../../../class/misc",
		"/devices/virtual/odd/odd0/subsystem":   "../../../../class/odd",
	}
	return tree(t, files, links)
}

// TestEnumerateDeviceStrings: a newline in a device string neither adds
// a property to a coldplug event nor gives it a device node; the values
// are those the kernel's netlink message would carry.
func TestEnumerateDeviceStrings(t *testing.T) {
	m := newManager(t, Config{Roots: host.Roots{Sys: injectionTree(t)}})
	got, err := m.Enumerate("")
	var skip *SkipError
	if !errors.As(err, &skip) || skip.Skipped != 2 || !errors.Is(err, errBadUevent) {
		t.Errorf("Enumerate error = %v, want a SkipError of liar and nodev, bad uevent files", err)
	}
	want := []uevent.Event{
		coldplug(t, hidPath, "hid", "DRIVER=hid-generic", "HID_ID=0003:00001234:00005678", "HID_NAME="+evilHID,
			"HID_PHYS=usb-0000:00:14.0-2/input0", "HID_UNIQ="+evilUniq, "MODALIAS=hid:b0003g0001v00001234p00005678"),
		coldplug(t, inPath, "input", "PRODUCT=3/1234/5678/111", `NAME="`+evilName+`"`, `PHYS="usb-0000:00:14.0-2/input0"`,
			`UNIQ="`+evilUniq+`"`, "PROP=0", "EV=120013", "KEY=e080ffdf01cfffff fffffffffffffffe", "MSC=10", "LED=7",
			"MODALIAS=input:b0003v1234p5678e0111-e0,1,4,11,14,k71,72,ram4,l0,1,2,sfw"),
		coldplug(t, evPath, "input", "MAJOR=13", "MINOR=71", "DEVNAME=input/event7"),
		coldplug(t, batPath, "power_supply", "POWER_SUPPLY_NAME=hid-"+evilUniq+"-battery", "POWER_SUPPLY_TYPE=Battery",
			"POWER_SUPPLY_PRESENT=1", "POWER_SUPPLY_ONLINE=1", "POWER_SUPPLY_CAPACITY=2", "POWER_SUPPLY_MODEL_NAME=a",
			"POWER_SUPPLY_STATUS=Discharging", "POWER_SUPPLY_SCOPE=Device"),
		// A driver this package does not know: lines no kernel writes
		// there continue the value before them; ODD_ID cannot be told
		// from a property.
		coldplug(t, "/devices/virtual/odd/odd0", "odd", "ODD_NAME=x\nDEVNAME=sda\nID_FS_USAGE=filesystem\nSEQNUM=7", "ODD_ID=1"),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Enumerate (-want +got):\n%s", diff)
	}
	for _, ev := range got {
		if ev.DevPath != evPath && ev.DevName != "" {
			t.Errorf("%q: devname %q, want none", ev.DevPath, ev.DevName)
		}
		for _, k := range []string{"ID_INPUT_KEYBOARD", "ID_FS_USAGE", "Z"} {
			if v, ok := ev.Lookup(k); ok {
				t.Errorf("%q: injected %s=%q", ev.DevPath, k, v)
			}
		}
	}
}

// TestEnumerateUeventFile covers how lines are told from values in one
// uevent file.
func TestEnumerateUeventFile(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string // below the device
		want    []string          // properties after SUBSYSTEM; nil: skipped
		devname string
	}{
		{"disk with dev_t", map[string]string{"uevent": "MAJOR=8\nMINOR=16\nDEVNAME=sdb\nDEVTYPE=disk\nDISKSEQ=9\n", "dev": "8:16\n"},
			[]string{"MAJOR=8", "MINOR=16", "DEVNAME=sdb", "DEVTYPE=disk", "DISKSEQ=9"}, "sdb"},
		{"node mode and owner", map[string]string{"uevent": "MAJOR=10\nMINOR=125\nDEVNAME=vhost-net\nDEVMODE=0666\nDEVUID=0\nDEVGID=5\n", "dev": "10:125\n"},
			[]string{"MAJOR=10", "MINOR=125", "DEVNAME=vhost-net", "DEVMODE=0666", "DEVUID=0", "DEVGID=5"}, "vhost-net"},
		{"dev_t but DEVNAME late", map[string]string{"uevent": "MAJOR=8\nMINOR=16\nDEVTYPE=disk\nDEVNAME=sda\n", "dev": "8:16\n"},
			nil, ""},
		{"MAJOR not dev", map[string]string{"uevent": "MAJOR=8\nMINOR=0\nDEVNAME=sda\n", "dev": "8:16\n"}, nil, ""},
		{"DEVNAME without dev_t", map[string]string{"uevent": "DEVNAME=sda\n"}, nil, ""},
		{"DEVTYPE and DRIVER only first", map[string]string{"uevent": "DEVTYPE=usb_interface\nDRIVER=usbhid\nINTERFACE=3/1/1\nDRIVER=sd\nDEVTYPE=disk\n"},
			[]string{"DEVTYPE=usb_interface", "DRIVER=usbhid", "INTERFACE=3/1/1\nDRIVER=sd\nDEVTYPE=disk"}, ""},
		{"line without =", map[string]string{"uevent": "FOO=a\nb c\n"}, []string{"FOO=a\nb c"}, ""},
		{"first line without =", map[string]string{"uevent": "b c\nFOO=a\n"}, nil, ""},
		{"duplicate key", map[string]string{"uevent": "FOO=a\nFOO=b\n"}, nil, ""},
		{"empty", map[string]string{"uevent": ""}, []string{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{}
			for name, c := range tt.files {
				files["devices/virtual/misc/d0/"+name] = c
			}
			root := tree(t, files, map[string]string{"devices/virtual/misc/d0/subsystem": "../../../../class/misc"})
			got, err := newManager(t, Config{Roots: host.Roots{Sys: root}}).Enumerate("")
			if tt.want == nil {
				if len(got) != 0 || !errors.As(err, new(*SkipError)) {
					t.Errorf("Enumerate = %v, %v; want d0 skipped", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := []uevent.Event{coldplug(t, "/devices/virtual/misc/d0", "misc", tt.want...)}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Enumerate (-want +got):\n%s", diff)
			}
			if got[0].DevName != tt.devname {
				t.Errorf("devname %q, want %q", got[0].DevName, tt.devname)
			}
		})
	}
}

// TestEnumerateNewlineInName: a device whose own name holds a newline
// cannot have a device node (DEVNAME could be that name and run on).
func TestEnumerateNewlineInName(t *testing.T) {
	dir := "devices/virtual/misc/x\nMAJOR=1"
	root := tree(t, map[string]string{dir + "/uevent": "MAJOR=10\nMINOR=1\nDEVNAME=x\nMAJOR=1\n", dir + "/dev": "10:1\n"},
		map[string]string{dir + "/subsystem": "../../../../class/misc"})
	got, err := newManager(t, Config{Roots: host.Roots{Sys: root}}).Enumerate("")
	if len(got) != 0 || !errors.Is(err, errBadUevent) || !strings.Contains(err.Error(), "newline") {
		t.Errorf("Enumerate = %v, %v; want the device skipped for the newline in its name", got, err)
	}
}

// FuzzUeventFile: however a uevent file reads, its properties are the
// file's lines, each either starting a property or continuing one.
func FuzzUeventFile(f *testing.F) {
	for _, s := range []string{
		"MAJOR=13\nMINOR=71\nDEVNAME=input/event7",
		"PRODUCT=3/1234/5678/111\nNAME=\"" + evilName + "\"\nPHYS=\"\"\nPROP=0\nMODALIAS=input:b0003",
		"DRIVER=hid-generic\nHID_ID=0003:00001234:00005678\nHID_NAME=" + evilHID + "\nHID_PHYS=\nHID_UNIQ=\nMODALIAS=hid:b0003",
		"POWER_SUPPLY_NAME=hid-" + evilUniq + "-battery\nPOWER_SUPPLY_TYPE=Battery",
		"FOO=a\nb c\nID_X=1",
	} {
		for _, sub := range []string{"input", "hid", "power_supply", "mmc"} {
			f.Add(s, sub, strings.HasPrefix(s, "MAJOR"))
		}
	}
	devs := map[bool]*os.Root{}
	for _, devt := range []bool{false, true} {
		dir := f.TempDir()
		files := map[string]string{"name": evilName + "\n", "phys": "\n", "uniq": "\n\n\n"}
		if devt {
			files["dev"] = "13:71\n"
		}
		for name, c := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(c), 0o644); err != nil {
				f.Fatal(err)
			}
		}
		r, err := os.OpenRoot(dir)
		if err != nil {
			f.Fatal(err)
		}
		f.Cleanup(func() { r.Close() })
		devs[devt] = r
	}
	f.Fuzz(func(t *testing.T, text, subsystem string, devt bool) {
		u := ueventFile{dir: devs[devt], name: "event7", subsystem: subsystem, buf: make([]byte, MaxAttrSize+1)}
		props, err := u.props(text)
		if err != nil {
			return
		}
		var lines []string
		for _, p := range props {
			lines = append(lines, p.Key+"="+p.Value)
		}
		if got := strings.Join(lines, "\n"); got != text {
			t.Errorf("props %q do not make up the file %q", props, text)
		}
	})
}

// TestHasParentDevTypeForged: a parent's DEVTYPE is read as coldplug
// reads its uevent file, so an input device named "x\nDEVTYPE=usb_device"
// does not make has_parent("input", "usb_device") true for its event node.
func TestHasParentDevTypeForged(t *testing.T) {
	const name = "x\nDEVTYPE=usb_device\nZ="
	in := "/devices/virtual/input/input9"
	root := tree(t, map[string]string{
		in + "/uevent":        "PRODUCT=0/0/0/0\nNAME=\"" + name + "\"\nPROP=0\n",
		in + "/name":          name + "\n",
		in + "/event9/uevent": "MAJOR=13\nMINOR=73\nDEVNAME=input/event9\n",
		in + "/event9/dev":    "13:73\n",
	}, map[string]string{
		in + "/subsystem":        "../../../../class/input",
		in + "/event9/subsystem": "../../../../../class/input",
	})
	m := newManager(t, Config{Roots: host.Roots{Sys: root}})
	d := m.For(context.Background(), event(t, "add", in+"/event9", "SUBSYSTEM=input", "DEVNAME=input/event9"))
	defer d.Done()
	if !d.HasParent("input", "") {
		t.Fatal("the input device is not seen as the event node's parent")
	}
	if d.HasParent("input", "usb_device") {
		t.Error(`has_parent("input", "usb_device") is true: the device's name chose its parent's DEVTYPE`)
	}
}
