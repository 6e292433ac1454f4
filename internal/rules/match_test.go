package rules

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expr-lang/expr/vm"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// capture parses a uevent captured from a real kernel (copied from
// internal/uevent's testdata).
func capture(t testing.TB, name string) *uevent.Event {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "events", name))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := uevent.Parse(data)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return &ev
}

// fakeDevice answers from maps, and counts filesystem probes.
type fakeDevice struct {
	attr    map[string]string // the device's own attributes
	attrs   map[string]string // first value walking up, own included
	parents []string          // "subsystem" or "subsystem/devtype" of each ancestor
	fs      uevent.FS
	fsCalls int
	devnode string
}

func (d *fakeDevice) DevNode() string          { return d.devnode }
func (d *fakeDevice) Attr(name string) string  { return d.attr[name] }
func (d *fakeDevice) Attrs(name string) string { return d.attrs[name] }
func (d *fakeDevice) FS() uevent.FS            { d.fsCalls++; return d.fs }
func (d *fakeDevice) HasParent(subsystem, devtype string) bool {
	for _, p := range d.parents {
		s, t, _ := strings.Cut(p, "/")
		if s == subsystem && (devtype == "" || t == devtype) {
			return true
		}
	}
	return false
}

// loopPartition is the device of the loop0p1 captures: a partition with
// an ext4 filesystem on a loop disk.
func loopPartition() *fakeDevice {
	return &fakeDevice{
		attr:    map[string]string{"size": "32768", "partition": "1", "start": "2048"},
		attrs:   map[string]string{"size": "32768", "partition": "1", "removable": "0", "ro": "0"},
		parents: []string{"block/disk"},
		fs:      uevent.FS{Type: "ext4", Label: "BACKUP", UUID: "0b3e6e3c-8d3c-4a57-9f2e-2f6a1c1d9c11", Usage: "filesystem", Version: "1.0"},
	}
}

// usbStick is a partition of a USB stick: what has_parent and attrs see
// for /devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/.../sdb/sdb1.
func usbStick() *fakeDevice {
	return &fakeDevice{
		attr:    map[string]string{"size": "60063744", "partition": "1"},
		attrs:   map[string]string{"removable": "1", "idVendor": "0781", "idProduct": "5581", "manufacturer": "SanDisk"},
		parents: []string{"block/disk", "scsi/scsi_device", "scsi/scsi_target", "scsi/scsi_host", "usb/usb_interface", "usb/usb_device", "pci"},
		fs:      uevent.FS{Type: "vfat", Label: "", UUID: "5E2F-1A3B", Usage: "filesystem", Version: "FAT32"},
	}
}

func evalOne(t *testing.T, match string, ev *uevent.Event, dev Device) (bool, error) {
	t.Helper()
	c, probs := compile(match, modeMatch)
	if len(probs) > 0 {
		t.Fatalf("compile %q: %s", match, probs[0].msg)
	}
	r := &Rule{Name: "t", prog: c.prog, needs: c.needs, filter: c.filter}
	return r.eval(NewEnv(ev, dev))
}

func TestMatchCaptured(t *testing.T) {
	tests := []struct {
		name    string
		capture string
		dev     Device // nil: EventOnly
		match   string
		want    bool
	}{
		{"loop0p1 add: action and subsystem", "loop0p1-partition-add.kernel", nil, `action == "add" && subsystem == "block"`, true},
		{"loop0p1 add: names", "loop0p1-partition-add.kernel", nil, `devtype == "partition" && devname == "loop0p1" && devnode == "/dev/loop0p1"`, true},
		{"loop0p1 add: devpath", "loop0p1-partition-add.kernel", nil, `devpath == "/devices/virtual/block/loop0/loop0p1"`, true},
		{"loop0p1 add: seqnum is an int", "loop0p1-partition-add.kernel", nil, `seqnum == 835 && seqnum > 800`, true},
		{"loop0p1 add: source", "loop0p1-partition-add.kernel", nil, `source == "kernel"`, true},
		{"loop0p1 add: env", "loop0p1-partition-add.kernel", nil, `env.PARTN == "1" && env["MAJOR"] == "259" && int(env.DISKSEQ) == 13`, true},
		{"loop0p1 add: missing env key is empty", "loop0p1-partition-add.kernel", nil, `env.ID_FS_TYPE == "" && env["ID_VENDOR"] == "" && env?.ID_MODEL == ""`, true},
		{"loop0p1 add: missing key is not nil", "loop0p1-partition-add.kernel", nil, `env.ID_FS_TYPE != nil`, true},
		{"loop0p1 add: fs without a device", "loop0p1-partition-add.kernel", nil, `fs.type == "" && fs.usage == ""`, true},
		{"loop0p1 add: fs from the device", "loop0p1-partition-add.kernel", loopPartition(), `fs.type == "ext4" && fs.label == "BACKUP" && fs.usage == "filesystem" && fs.version == "1.0"`, true},
		{"loop0p1 add: fs.uuid", "loop0p1-partition-add.kernel", loopPartition(), `fs.uuid == "0b3e6e3c-8d3c-4a57-9f2e-2f6a1c1d9c11"`, true},
		{"loop0p1 add: ?? prefers a label", "loop0p1-partition-add.kernel", loopPartition(), `(fs.label ?? devname) == "BACKUP"`, true},
		{"loop0p1 add: ?? falls back on empty", "loop0p1-partition-add.kernel", nil, `(fs.label ?? devname) == "loop0p1"`, true},
		{"loop0p1 add: attr", "loop0p1-partition-add.kernel", loopPartition(), `attr("size") == "32768" && attr("removable") == ""`, true},
		{"loop0p1 add: attrs walks up", "loop0p1-partition-add.kernel", loopPartition(), `attrs("removable") == "0"`, true},
		{"loop0p1 add: has_parent with devtype", "loop0p1-partition-add.kernel", loopPartition(), `has_parent("block", "disk") && !has_parent("block", "partition")`, true},
		{"loop0p1 add: not on usb", "loop0p1-partition-add.kernel", loopPartition(), `has_parent("usb")`, false},
		{"loop0p1 add: attrs without a device", "loop0p1-partition-add.kernel", nil, `attr("size") == "" && attrs("removable") == "" && !has_parent("block")`, true},
		{"loop0p1 add: glob", "loop0p1-partition-add.kernel", nil, `glob("loop*p[0-9]", devname) && glob("/devices/virtual/*", devpath)`, true},
		{"loop0p1 add: glob mismatch", "loop0p1-partition-add.kernel", nil, `glob("sd?[0-9]", devname)`, false},
		{"loop0p1 add: builtins", "loop0p1-partition-add.kernel", nil, `devname startsWith "loop" && devname matches "^loop[0-9]+p[0-9]+$" && "partition" in [devtype]`, true},
		{"loop0p1 add: mount.path is empty", "loop0p1-partition-add.kernel", nil, `true`, true},
		{"loop0p1 udev add: udev properties", "loop0p1-partition-add.udev", nil, `source == "udev" && devname == "loop0p1" && env.DEVNAME == "/dev/loop0p1" && env.ID_PART_ENTRY_TYPE == "0x83"`, true},
		{"loop0p1 udev remove", "loop0p1-partition-remove.udev", nil, `action == "remove" && env.ID_PART_TABLE_TYPE == "dos"`, true},
		{"loop0p1 remove", "loop0p1-partition-remove.kernel", nil, `action in ["remove", "unbind"] && subsystem == "block"`, true},
		{"loop0p1 synthetic remove", "loop0p1-synth-remove.kernel", nil, `action == "remove" && env.SYNTH_UUID == "0"`, true},
		{"loop0 media change", "loop0-media-change.kernel", nil, `action == "change" && devtype == "disk" && env.DISK_MEDIA_CHANGE == "1"`, true},
		{"loop0 disk change: no media change", "loop0-disk-change.kernel", nil, `env.DISK_MEDIA_CHANGE == "1"`, false},
		{"lo change: no devnode", "net-lo-change.kernel", nil, `subsystem == "net" && env.INTERFACE == "lo" && devnode == "" && devname == "" && devtype == ""`, true},
		{"lo udev change", "net-lo-change.udev", nil, `source == "udev" && int(env.IFINDEX) == 1`, true},
		{"usb stick: the shipped automount", "loop0p1-partition-add.kernel", usbStick(),
			`action == "add" && subsystem == "block" && fs.usage == "filesystem" && (has_parent("usb") || attrs("removable") == "1")`, true},
		{"usb stick: vendor", "loop0p1-partition-add.kernel", usbStick(), `has_parent("usb", "usb_device") && attrs("idVendor") == "0781"`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := evalOne(t, tt.match, capture(t, tt.capture), tt.dev)
			if err != nil {
				t.Fatalf("eval %q: %v", tt.match, err)
			}
			if got != tt.want {
				t.Errorf("%q = %v, want %v", tt.match, got, tt.want)
			}
		})
	}
}

func TestEvalError(t *testing.T) {
	ev := capture(t, "loop0p1-partition-add.kernel")
	_, err := evalOne(t, `int(env.ID_FS_VERSION) > 1`, ev, nil)
	if err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("err = %q, want a one-line error", err)
	}
}

func TestLazy(t *testing.T) {
	tests := []struct {
		match string
		want  needs
	}{
		{`action == "add"`, needVars},
		{`env.ID_BUS == "usb"`, needVars | needEnv},
		{`fs.type == "ext4"`, needVars | needFS},
		{`attr("fs") == "x"`, needVars}, // a string, not the variable
		{`$env.action == "add"`, needVars | needEnv | needFS},
		{`let x = fs.label; x != "" && env.A == ""`, needVars | needEnv | needFS},
	}
	for _, tt := range tests {
		c, probs := compile(tt.match, modeMatch)
		if len(probs) > 0 {
			t.Fatalf("%q: %s", tt.match, probs[0].msg)
		}
		if c.needs != tt.want {
			t.Errorf("%q needs %b, want %b", tt.match, c.needs, tt.want)
		}
	}

	// The filesystem is probed only for rules that read fs.*, once per
	// event however many do.
	rs := mustParse(t, `rules:
  - name: a
    match: action == "add"
  - name: b
    match: fs.type == "ext4"
  - name: c
    match: fs.uuid != "" && env.PARTN == "1"
`)
	ev := capture(t, "loop0p1-partition-add.kernel")
	dev := loopPartition()
	if got := statuses(rs.Match(ev, dev)); !slices.Equal(got, []Status{Matched, Matched, Matched}) {
		t.Errorf("statuses = %v", got)
	}
	if dev.fsCalls != 1 {
		t.Errorf("FS() called %d times, want 1", dev.fsCalls)
	}
	rs.Rules = rs.Rules[:1]
	dev = loopPartition()
	rs.Match(ev, dev)
	if dev.fsCalls != 0 {
		t.Errorf("FS() called %d times for rules that do not read fs, want 0", dev.fsCalls)
	}
}

func statuses(rs []Result) []Status {
	var s []Status
	for _, r := range rs {
		s = append(s, r.Status)
	}
	return s
}

func TestPrefilter(t *testing.T) {
	tests := []struct {
		match               string
		actions, subsystems []string
	}{
		{`action == "add"`, []string{"add"}, nil},
		{`"add" == action && subsystem == "block"`, []string{"add"}, []string{"block"}},
		{`action in ["remove", "add"] && env.X == ""`, []string{"add", "remove"}, nil},
		{`(action == "add" || action == "change") && subsystem in ["block"]`, []string{"add", "change"}, []string{"block"}},
		{`action == "add" and subsystem == "net" and devname != ""`, []string{"add"}, []string{"net"}},
		{`action == "add" && action == "remove"`, []string{}, nil}, // can never match
		{`action in ["add", "change"] && action != "change" && action == "add"`, []string{"add"}, nil},
		{`let x = fs.label; let y = x + "-"; action == "add" && subsystem == "block" && y != "-"`, []string{"add"}, []string{"block"}},
		{`let x = 1; devtype == "disk" && (let y = 2; action == "add")`, []string{"add"}, nil}, // a let is its body
		// Not conjuncts, or not literal: no filter.
		{`action == "add" || subsystem == "block"`, nil, nil},
		{`!(action == "add")`, nil, nil},
		{`action != "add"`, nil, nil},
		{`action not in ["add"]`, nil, nil},
		{`action == devtype`, nil, nil},
		{`action in [devtype, "add"]`, nil, nil},
		{`(action == "add" || subsystem == "x") && true`, nil, nil},
		{`env.ACTION == "add"`, nil, nil},
	}
	for _, tt := range tests {
		c, probs := compile(tt.match, modeMatch)
		if len(probs) > 0 {
			t.Fatalf("%q: %s", tt.match, probs[0].msg)
		}
		got := [][]string{c.filter.actions, c.filter.subsystems}
		if diff := cmp.Diff([][]string{tt.actions, tt.subsystems}, got); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tt.match, diff)
		}
	}
}

// TestPrefilterSound checks that every rule the pre-filter skips would
// indeed not have matched, for every combination of action and
// subsystem.
func TestPrefilterSound(t *testing.T) {
	matches := []string{
		`action == "add"`,
		`action == "add" && subsystem == "block"`,
		`action in ["add", "change"] && subsystem == "net"`,
		`(action == "remove" || action == "unbind") && (subsystem == "block" || subsystem == "usb")`,
		`"change" == action and "power_supply" == subsystem`,
		`action == "add" && action == "remove"`,
		`action == "add" || subsystem == "block"`,
		`subsystem == "block" && (action == "add" || devtype == "disk")`,
		`subsystem in ["tty"] && glob("ttyUSB*", devname)`,
		`let x = devname; subsystem == "block" && action == "add" && x != ""`,
		`let x = devtype; let y = x + "1"; action in ["add", "change"] && y != "1"`,
	}
	base := capture(t, "loop0p1-partition-add.kernel")
	subsystems := []string{"block", "net", "usb", "tty", "power_supply", "input"}
	checked, skipped := 0, 0
	for _, m := range matches {
		full, probs := compile(m, modeMatchFull)
		if len(probs) > 0 {
			t.Fatalf("%q: %s", m, probs[0].msg)
		}
		elided, _ := compile(m, modeMatch)
		for _, action := range allActions() {
			for _, subsystem := range subsystems {
				ev := withFields(t, base, action, subsystem)
				ok, _ := full.filter.allows(actionBit(ev.Action), ev.Subsystem)
				matched := run(t, full, ev)
				checked++
				if !ok {
					skipped++
					if matched {
						t.Errorf("%q: pre-filter skips %s/%s, but it matches", m, action, subsystem)
					}
					continue
				}
				// Where the pre-filter lets the event through, the
				// program without the conjuncts it decided agrees.
				if got := run(t, elided, ev); got != matched {
					t.Errorf("%q on %s/%s: elided program says %v, whole program %v", m, action, subsystem, got, matched)
				}
			}
		}
	}
	if skipped == 0 || skipped == checked {
		t.Errorf("skipped %d of %d: the test does not exercise the pre-filter", skipped, checked)
	}
}

// run runs a compiled match on ev without the pre-filter.
func run(t *testing.T, c compiled, ev *uevent.Event) bool {
	t.Helper()
	env := NewEnv(ev, loopPartition())
	env.load(c.needs)
	out, err := vm.Run(c.prog, env.m)
	if err != nil {
		t.Fatalf("%s on %s/%s: %v", c.prog.Source().String(), ev.Action, ev.Subsystem, err)
	}
	return out == true
}

// withFields returns a copy of ev with another action and subsystem.
func withFields(t *testing.T, ev *uevent.Event, action, subsystem string) *uevent.Event {
	t.Helper()
	props := slices.Clone(ev.Props)
	for i := range props {
		switch props[i].Key {
		case "ACTION":
			props[i].Value = action
		case "SUBSYSTEM":
			props[i].Value = subsystem
		}
	}
	out, err := uevent.FromProps(props)
	if err != nil {
		t.Fatal(err)
	}
	out.Source = ev.Source
	return &out
}

func TestMatchResults(t *testing.T) {
	rs := mustParse(t, `rules:
  - name: net-only
    match: subsystem == "net"
  - name: any-add
    match: action == "add"
  - name: no
    match: devname == "sda"
  - name: broken
    match: int(env.NOPE) > 0
  - name: stop
    match: subsystem == "block"
    continue: false
  - name: after-stop
    match: "true"
`)
	ev := capture(t, "loop0p1-partition-add.kernel")
	got := rs.Match(ev, nil)
	var summary []string
	for _, r := range got {
		s := r.Rule.Name + " " + r.Status.String()
		if r.Reason != "" {
			s += " " + r.Reason
		}
		if r.Err != nil {
			s += ": " + r.Err.Error()
		}
		summary = append(summary, s)
	}
	want := []string{
		"net-only skipped subsystem",
		"any-add matched",
		"no not matched",
		"broken failed: invalid operation: int()",
		"stop matched",
	}
	if diff := cmp.Diff(want, summary); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	// continue: false only stops after a match.
	ev = capture(t, "net-lo-change.kernel")
	got = rs.Match(ev, nil)
	if n := len(got); n != 6 || got[5].Status != Matched || got[4].Status != Skipped {
		t.Errorf("net event: %d results, %v", n, statuses(got))
	}
}

func TestEvalErrorRateLimited(t *testing.T) {
	rs := mustParse(t, "rules:\n  - name: broken\n    match: int(env.NOPE) > 0\n")
	var buf bytes.Buffer
	rs.SetLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	})))
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rs.now = func() time.Time { return now }
	ev := capture(t, "loop0p1-partition-add.kernel")
	for range 3 {
		if got := rs.Match(ev, nil); got[0].Status != Failed || got[0].Err == nil {
			t.Fatalf("result %+v, want Failed", got[0])
		}
	}
	now = now.Add(evalErrorInterval)
	rs.Match(ev, nil)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	want := []string{
		`level=ERROR msg="rule evaluation failed; rule treated as not matched" rule=broken pos=t.yaml:2:5 devpath=/devices/virtual/block/loop0/loop0p1 action=add err="invalid operation: int()" suppressed=0`,
		`level=ERROR msg="rule evaluation failed; rule treated as not matched" rule=broken pos=t.yaml:2:5 devpath=/devices/virtual/block/loop0/loop0p1 action=add err="invalid operation: int()" suppressed=2`,
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("log (-want +got):\n%s", diff)
	}
}

func TestTemplates(t *testing.T) {
	ev := capture(t, "loop0p1-partition-add.kernel")
	hostile := loopPartition()
	hostile.fs.Label = `$(reboot); "x" {{ devnode }} %s`
	tests := []struct {
		tmpl string
		dev  Device
		want string
	}{
		{"plain text", nil, "plain text"},
		{"{{ devnode }}", nil, "/dev/loop0p1"},
		{"--device={{devnode}}", nil, "--device=/dev/loop0p1"},
		{"{{ seqnum }}/{{ has_parent(\"usb\") }}/{{ 1.5 }}/{{ 2 + 3 }}", nil, "835/false/1.5/5"},
		{"{{ fs.label ?? devname }}", nil, "loop0p1"},
		{"{{ fs.label ?? devname }}", loopPartition(), "BACKUP"},
		{`{{ env.NOPE }}[{{ attr("nope") }}]`, nil, "[]"},
		{`{{ "}}" }} and {{ '{{' }}`, nil, "}} and {{"},
		{"{{ upper(env.DEVTYPE) }} {{ devtype == \"partition\" ? \"part\" : \"disk\" }}", nil, "PARTITION part"},
		// A device string is data: nothing in it is interpreted.
		{"label={{ fs.label }}", hostile, `label=$(reboot); "x" {{ devnode }} %s`},
	}
	for _, tt := range tests {
		tpl, _, probs := compileTemplate(tt.tmpl)
		if len(probs) > 0 {
			t.Fatalf("%q: %s", tt.tmpl, probs[0].msg)
		}
		got, err := tpl.Render(NewEnv(ev, tt.dev))
		if err != nil {
			t.Errorf("%q: %v", tt.tmpl, err)
			continue
		}
		if got != tt.want {
			t.Errorf("%q = %q, want %q", tt.tmpl, got, tt.want)
		}
	}

	env := NewEnv(ev, nil)
	env.SetMountPath("/media/BACKUP")
	if got, err := tmpl("at {{ mount.path }}").Render(env); err != nil || got != "at /media/BACKUP" {
		t.Errorf("mount.path: %q, %v", got, err)
	}

	bad := []struct{ tmpl, err string }{
		{"{{ int(env.NOPE) }}", `{{ int(env.NOPE) }}: invalid operation: int()`},
		{"{{ devtype == \"x\" ? 1 : env }}", `{{ devtype == "x" ? 1 : env }}: cannot render a map[string]string as text`},
	}
	for _, tt := range bad {
		_, err := tmpl(tt.tmpl).Render(NewEnv(ev, nil))
		if err == nil || err.Error() != tt.err {
			t.Errorf("%q: err = %v, want %s", tt.tmpl, err, tt.err)
		}
	}
	huge := loopPartition()
	huge.fs.Label = strings.Repeat("x", MaxRendered+1)
	if _, err := tmpl("{{ fs.label }}").Render(NewEnv(ev, huge)); err == nil {
		t.Error("a huge rendering did not fail")
	}
}

func TestGlob(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"", "", true},
		{"", "a", false},
		{"*", "", true},
		{"*", "a/b", true},
		{"sd?", "sdb", true},
		{"sd?", "sdb1", false},
		{"sd[a-c]1", "sdb1", true},
		{"sd[!a-c]1", "sdb1", false},
		{"sd[^a-c]1", "sdd1", true},
		{"ttyUSB*", "ttyUSB0", true},
		{"ttyUSB*", "ttyACM0", false},
		{"/devices/*/usb*/*", "/devices/pci0000:00/0000:00:14.0/usb2/2-1", true},
		{"*.txt", "a.txt.bak", false},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "aXbY", false},
		{`\*`, "*", true},
		{`\*`, "a", false},
		{"[]]", "]", true},
		{"[a-]", "-", true},
		{"é?", "éü", true},
		{"[é]", "é", true},
		{"sd[a", "sda", false}, // malformed: matches nothing
		{"a\\", "a", false},
		{strings.Repeat("*a", 30) + "b", strings.Repeat("a", 100), false}, // no exponential backtracking
	}
	for _, tt := range tests {
		if got := glob(tt.pattern, tt.s); got != tt.want {
			t.Errorf("glob(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
	for _, bad := range []string{"[", "[a", "a\\", "[z-a]", "x[]"} {
		if checkGlob(bad) == nil {
			t.Errorf("checkGlob(%q) = nil", bad)
		}
	}
	for _, good := range []string{"", "*", "sd[a-z]*", `\[`, "[]]"} {
		if err := checkGlob(good); err != nil {
			t.Errorf("checkGlob(%q) = %v", good, err)
		}
	}
}

func TestEventOnly(t *testing.T) {
	ev := capture(t, "net-lo-change.kernel")
	props := append(slices.Clone(ev.Props), uevent.Property{Key: "ID_FS_TYPE", Value: "vfat"}, uevent.Property{Key: "ID_FS_LABEL", Value: "STICK"},
		uevent.Property{Key: "ID_FS_UUID", Value: "5E2F-1A3B"}, uevent.Property{Key: "ID_FS_USAGE", Value: "filesystem"}, uevent.Property{Key: "ID_FS_VERSION", Value: "FAT32"})
	e, err := uevent.FromProps(props)
	if err != nil {
		t.Fatal(err)
	}
	d := EventOnly{Event: &e}
	want := uevent.FS{Type: "vfat", Label: "STICK", UUID: "5E2F-1A3B", Usage: "filesystem", Version: "FAT32"}
	if diff := cmp.Diff(want, d.FS()); diff != "" {
		t.Errorf("FS (-want +got):\n%s", diff)
	}
	if d.Attr("x") != "" || d.Attrs("x") != "" || d.HasParent("usb", "") || (EventOnly{}).FS() != (uevent.FS{}) {
		t.Error("EventOnly answers what it cannot know")
	}
}

func TestStatusString(t *testing.T) {
	for s, want := range map[Status]string{NotMatched: "not matched", Matched: "matched", Skipped: "skipped", Failed: "failed", 9: "unknown"} {
		if s.String() != want {
			t.Errorf("%d: %q", s, s.String())
		}
	}
	if err := (Errors{{File: "f", Line: 1, Col: 2, Msg: "m"}, {File: "f", Line: 3, Col: 4, Rule: "r", Msg: "n"}}).Error(); err != "f:1:2: m\nf:3:4: rule \"r\": n" {
		t.Errorf("Errors.Error() = %q", err)
	}
	_ = errors.New
}

// TestMatchConcurrent runs one RuleSet from many goroutines, as the
// daemon's workers do (run with -race).
func TestMatchConcurrent(t *testing.T) {
	rs := mixedRules(t)
	add := capture(t, "loop0p1-partition-add.kernel")
	change := capture(t, "net-lo-change.kernel")
	want := map[*uevent.Event][]Status{add: statuses(rs.Match(add, usbStick())), change: statuses(rs.Match(change, usbStick()))}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				ev := add
				if (i+j)%2 == 0 {
					ev = change
				}
				if got := statuses(rs.Match(ev, usbStick())); !slices.Equal(got, want[ev]) {
					t.Errorf("goroutine %d: %v, want %v", i, got, want[ev])
					return
				}
			}
		})
	}
	wg.Wait()
}

// AppendMatched, the daemon's path through the per-action index, returns
// exactly the rules Match reports as matched, for every action and
// subsystem, including continue: false.
func TestAppendMatchedAgreesWithMatch(t *testing.T) {
	rs := mustParse(t, `rules:
  - name: any
    match: devpath startsWith "/devices/"
  - name: add-block
    match: action == "add" && subsystem == "block"
  - name: add-or-change-net
    match: action in ["add", "change"] && subsystem == "net"
  - name: remove
    match: action == "remove"
  - name: stop-on-bind
    match: action == "bind"
    continue: false
  - name: after-stop
    match: action in ["bind", "add"]
  - name: never
    match: action == "add" && subsystem == "none"
`)
	base := capture(t, "loop0p1-partition-add.kernel")
	matchedSome := 0
	for _, action := range allActions() {
		for _, subsystem := range []string{"block", "net", "usb"} {
			ev := withFields(t, base, action, subsystem)
			var want []string
			for _, r := range rs.Match(ev, loopPartition()) {
				if r.Status == Matched {
					want = append(want, r.Rule.Name)
				}
			}
			var got []string
			for _, r := range rs.AppendMatched(nil, ev, loopPartition()) {
				got = append(got, r.Name)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s/%s (-Match +AppendMatched):\n%s", action, subsystem, diff)
			}
			matchedSome += len(got)
		}
	}
	if matchedSome == 0 {
		t.Error("no rule matched anything: the test checks nothing")
	}
}

func BenchmarkAppendMatchedPrefiltered(b *testing.B) {
	rs := mixedRules(b)
	ev := capture(b, "net-lo-change.kernel")
	dev := usbStick()
	buf := make([]*Rule, 0, 8)
	b.ReportAllocs()
	for b.Loop() {
		buf = rs.AppendMatched(buf[:0], ev, dev)
	}
}

// eval runs the rule's match against env, pre-filter included.
func (r *Rule) eval(env *Env) (bool, error) {
	if ok, _ := r.filter.allows(actionBit(env.ev.Action), env.ev.Subsystem); !ok {
		return false, nil
	}
	env.load(r.needs)
	out, err := vm.Run(r.prog, env.m)
	if err != nil {
		return false, runtimeErr(err)
	}
	return out == true, nil
}
