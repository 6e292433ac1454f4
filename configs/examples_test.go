package configs

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hotplugd/hotplugd/internal/keyfile/keytest"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// device is what a rule may ask of a device: its attributes, those of
// its parents, and its filesystem.
type device struct {
	attrs map[string]string
	fs    uevent.FS
}

func (d device) Attr(name string) string            { return d.attrs[name] }
func (d device) Attrs(name string) string           { return d.attrs[name] }
func (d device) HasParent(subsystem, _ string) bool { return subsystem == "usb" }
func (d device) FS() uevent.FS                      { return d.fs }
func (d device) DevNode() string                    { return "" }

// load loads a rules file; the keyfiles it names are made for the test
// (keytest.Rules).
func load(t *testing.T, path string) *rules.RuleSet {
	t.Helper()
	rs, err := rules.Load(keytest.Rules(t, path))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rs
}

func event(t *testing.T, kv ...string) *uevent.Event {
	t.Helper()
	props := []uevent.Property{{Key: "SEQNUM", Value: "1"}}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		props = append(props, uevent.Property{Key: k, Value: v})
	}
	ev, err := uevent.FromProps(props)
	if err != nil {
		t.Fatal(err)
	}
	return &ev
}

// matched returns the names of the rules that match ev.
func matched(rs *rules.RuleSet, ev *uevent.Event, dev rules.Device) []string {
	var names []string
	for _, r := range rs.Match(ev, dev) {
		if r.Status == rules.Matched {
			names = append(names, r.Rule.Name)
		}
	}
	return names
}

// The kernel's change event of a laptop battery, and of the battery of a
// wireless mouse (hid-input: POWER_SUPPLY_SCOPE=Device), both at 2 %.
var (
	laptopBattery = []string{"ACTION=change", "DEVPATH=/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0C0A:00/power_supply/BAT0",
		"SUBSYSTEM=power_supply", "POWER_SUPPLY_NAME=BAT0", "POWER_SUPPLY_TYPE=Battery", "POWER_SUPPLY_STATUS=Discharging",
		"POWER_SUPPLY_PRESENT=1", "POWER_SUPPLY_CAPACITY=2"}
	mouseBattery = []string{"ACTION=change", "DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/0003:046D:C52B.0003/power_supply/hid-4e2b1a3c-battery",
		"SUBSYSTEM=power_supply", "POWER_SUPPLY_NAME=hid-4e2b1a3c-battery", "POWER_SUPPLY_TYPE=Battery", "POWER_SUPPLY_PRESENT=1",
		"POWER_SUPPLY_ONLINE=1", "POWER_SUPPLY_CAPACITY=2", "POWER_SUPPLY_MODEL_NAME=M185", "POWER_SUPPLY_STATUS=Discharging",
		"POWER_SUPPLY_SCOPE=Device"}
)

// TestLowBatterySystemOnly: a peripheral's battery, whose level the
// peripheral reports, neither hibernates the machine nor warns about it.
func TestLowBatterySystemOnly(t *testing.T) {
	rs := load(t, "examples/low-battery.yaml")
	if got := matched(rs, event(t, laptopBattery...), nil); len(got) != 1 || got[0] != "battery-critical" {
		t.Errorf("laptop battery at 2 %%: rules %q, want battery-critical", got)
	}
	if got := matched(rs, event(t, mouseBattery...), nil); len(got) != 0 {
		t.Errorf("mouse battery at 2 %%: rules %q, want none", got)
	}
	if got := matched(rs, event(t, append(laptopBattery, "POWER_SUPPLY_SCOPE=System")...), nil); len(got) != 1 {
		t.Errorf("laptop battery with scope System: rules %q, want battery-critical", got)
	}
}

// TestBackupDiskNotByUUIDAlone: anyone can give a vfat stick the backup
// disk's UUID (mkfs.vfat -i); that alone must not get it the backup.
func TestBackupDiskNotByUUIDAlone(t *testing.T) {
	path := "examples/backup-disk.yaml"
	rs := load(t, path)
	add := event(t, "ACTION=add", "DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host0/target0:0:0/0:0:0:0/block/sdb/sdb1",
		"SUBSYSTEM=block", "DEVTYPE=partition", "DEVNAME=sdb1", "MAJOR=8", "MINOR=17")
	forged := device{attrs: map[string]string{"idVendor": "abcd", "idProduct": "1234", "serial": "0001"},
		fs: uevent.FS{Type: "vfat", UUID: "5E2F-1A3B", Label: "NO NAME", Usage: "filesystem"}}
	if got := matched(rs, add, forged); len(got) != 0 {
		t.Errorf("a stick with the UUID only: rules %q, want none", got)
	}
	disk := device{attrs: map[string]string{"idVendor": "0781", "idProduct": "5581", "serial": "4C530001231219115432"},
		fs: uevent.FS{Type: "vfat", UUID: "5E2F-1A3B", Label: "BACKUP", Usage: "filesystem"}}
	if got := matched(rs, add, disk); len(got) != 1 || got[0] != "backup-disk" {
		t.Errorf("the disk the example describes: rules %q, want backup-disk", got)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "mkfs.vfat -i") {
		t.Errorf("%s does not say that a vfat UUID is set with mkfs.vfat -i", path)
	}
}

// deviceString finds templates that render what a device reports, which
// may start with "-".
var deviceString = regexp.MustCompile(`\b(attrs?\(|fs\.|env\.(?:ID_|NAME|PRODUCT|POWER_SUPPLY_MODEL))`)

// TestExamplesDeviceStringsAfterDoubleDash: a device string in a run
// action's argv comes after "--" or as the value of an option, never
// where a program reads options.
func TestExamplesDeviceStringsAfterDoubleDash(t *testing.T) {
	paths, _ := filepath.Glob("examples/*.yaml")
	for _, p := range append(paths, "rules.yaml") {
		for _, r := range load(t, p).Rules {
			for _, a := range r.Actions {
				run, ok := a.(*rules.RunSpec)
				if !ok {
					continue
				}
				dashed := false
				for i, arg := range run.Argv {
					src := arg.String()
					dashed = dashed || src == "--"
					if i == 0 || dashed || !deviceString.MatchString(src) || !strings.HasPrefix(src, "{{") {
						continue
					}
					if prev := run.Argv[i-1].String(); !strings.HasPrefix(prev, "-") || prev == "-" {
						t.Errorf("%s: rule %s: argv %q: %s may start with - and be read as an option; put it after \"--\"", p, r.Name, src, src)
					}
				}
			}
		}
	}
}

// TestConfigsNameShippedDocuments: the files point to the man pages,
// which are installed with them, not to documents of a source tree.
func TestConfigsNameShippedDocuments(t *testing.T) {
	mdRef := regexp.MustCompile(`[A-Za-z0-9_.-]+\.md\b`)
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, ref := range mdRef.FindAllString(string(data), -1) {
			t.Errorf("%s refers to %s; point to the man pages (hotplugd(8), hotplugd.rules(5)) instead", p, ref)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// route is an event of a network link as the route listener makes it.
func route(t *testing.T, action, iface string, kv ...string) *uevent.Event {
	t.Helper()
	return event(t, append([]string{"ACTION=" + action, "DEVPATH=/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/net/" + iface,
		"SUBSYSTEM=net", "INTERFACE=" + iface, "IFINDEX=3", "OPERSTATE=up", "MTU=1500", "MAC=0e:7e:20:04:f5:a4"}, kv...)...)
}

// TestNetworkCarrierWiredOnly: the cable rules are for wired interfaces,
// the address rule for global IPv4 addresses only.
func TestNetworkCarrierWiredOnly(t *testing.T) {
	rs := load(t, "examples/network-carrier.yaml")
	if !rs.Settings.Network {
		t.Error("the example does not turn settings.network on")
	}
	inet := func(addr, scope string) []string {
		return []string{"ADDRESS=" + addr, "PREFIXLEN=24", "FAMILY=inet", "SCOPE=" + scope}
	}
	tests := []struct {
		name string
		ev   *uevent.Event
		want []string
	}{
		{"cable into enp3s0", route(t, "carrier", "enp3s0"), []string{"wired-carrier"}},
		{"cable into a USB adapter", route(t, "carrier", "enx0e7e2004f5a4"), []string{"wired-carrier"}},
		{"WLAN associated", route(t, "carrier", "wlp2s0"), nil},
		{"veth peer up", route(t, "carrier", "veth0"), nil},
		{"enp3s0 came up without a cable", route(t, "link-up", "enp3s0"), nil},
		{"cable out of enp3s0", route(t, "no-carrier", "enp3s0"), []string{"cable-pulled"}},
		{"DHCP address on enp3s0", route(t, "address-add", "enp3s0", inet("192.0.2.10", "global")...), []string{"global-ipv4"}},
		{"address on lo", route(t, "address-add", "lo", inet("127.0.0.1", "host")...), nil},
		{"IPv6 address", route(t, "address-add", "enp3s0", "ADDRESS=2001:db8::10", "PREFIXLEN=64", "FAMILY=inet6", "SCOPE=global"), nil},
		{"address removed", route(t, "address-remove", "enp3s0", inet("192.0.2.10", "global")...), nil},
		{"kernel add of enp3s0", event(t, "ACTION=add", "DEVPATH=/devices/pci0000:00/0000:00:1c.0/0000:03:00.0/net/enp3s0",
			"SUBSYSTEM=net", "INTERFACE=enp3s0", "IFINDEX=3"), nil},
	}
	for _, tt := range tests {
		if got := matched(rs, tt.ev, nil); !slices.Equal(got, tt.want) {
			t.Errorf("%s: rules %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestLUKSBackup: the encrypted backup disk is unlocked by the UUID of
// its LUKS header, not a filesystem that claims it, and mounted only
// once unlocked.
func TestLUKSBackup(t *testing.T) {
	rs := load(t, "examples/luks-backup.yaml")
	add := event(t, "ACTION=add", "DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host0/target0:0:0/0:0:0:0/block/sdb/sdb1",
		"SUBSYSTEM=block", "DEVTYPE=partition", "DEVNAME=sdb1", "MAJOR=8", "MINOR=17")
	luks := device{fs: uevent.FS{Type: "crypto_LUKS", Usage: "crypto", UUID: "ed32c0be-7d35-4b42-ac27-8e8114bb0e78", Version: "2"}}
	if got := matched(rs, add, luks); len(got) != 1 || got[0] != "backup-luks" {
		t.Errorf("the LUKS disk: rules %q, want backup-luks", got)
	}
	plain := device{fs: uevent.FS{Type: "ext4", Usage: "filesystem", UUID: luks.fs.UUID}}
	if got := matched(rs, add, plain); len(got) != 0 {
		t.Errorf("an ext4 with the UUID: rules %q, want none", got)
	}
	var kinds []string
	for _, a := range rs.Rules[0].Actions {
		kinds = append(kinds, a.Kind())
	}
	if strings.Join(kinds, " ") != "unlock mount run notify" {
		t.Errorf("actions %q, want unlock, then mount, then the backup", kinds)
	}
}
