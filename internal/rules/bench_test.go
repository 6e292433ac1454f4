package rules

import (
	"fmt"
	"strings"
	"testing"
)

// mixedRules is 100 rules of the kinds a real rules file holds, each
// gated on an action and a subsystem: disks by UUID, network interfaces,
// serial adapters, batteries, keyboards, webcams, USB devices.
func mixedRules(tb testing.TB) *RuleSet {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range 100 {
		var match string
		switch i % 8 {
		case 0:
			match = fmt.Sprintf(`action == "add" && subsystem == "block" && fs.usage == "filesystem" && fs.uuid == "%04X-%04X"`, i, i*7)
		case 1:
			match = fmt.Sprintf(`action == "add" && subsystem == "net" && glob("enx%06x*", env.INTERFACE)`, i)
		case 2:
			match = fmt.Sprintf(`action == "add" && subsystem == "tty" && has_parent("usb") && attrs("idVendor") == "%04x" && attrs("idProduct") == "6001"`, i)
		case 3:
			match = fmt.Sprintf(`action == "change" && subsystem == "power_supply" && env.POWER_SUPPLY_TYPE == "Battery" && int(env.POWER_SUPPLY_CAPACITY ?? "100") < %d`, i%20+5)
		case 4:
			match = fmt.Sprintf(`action == "remove" && subsystem == "block" && fs.label == "DISK%d"`, i)
		case 5:
			match = fmt.Sprintf(`action in ["add", "bind"] && subsystem == "usb" && env.PRODUCT == "46d/c%03x/111"`, i)
		case 6:
			match = fmt.Sprintf(`action == "add" && subsystem == "input" && env.ID_INPUT_KEYBOARD == "1" && env.NAME contains "Keyboard %d"`, i)
		case 7:
			match = fmt.Sprintf(`action == "add" && subsystem == "video4linux" && attr("name") contains "Camera %d"`, i)
		}
		fmt.Fprintf(&b, "  - name: rule-%d\n    match: '%s'\n    actions:\n      - notify: {message: 'rule %d: {{ devname }}'}\n", i, match, i)
	}
	return mustParse(tb, b.String())
}

// diskRules is 100 rules that all apply to a block "add" and so must all
// be evaluated for one: a file configuring many known disks.
func diskRules(tb testing.TB) *RuleSet {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range 100 {
		var match string
		switch i % 5 {
		case 0:
			match = fmt.Sprintf(`action == "add" && subsystem == "block" && fs.uuid == "%04X-%04X"`, i, i*7)
		case 1:
			match = fmt.Sprintf(`action == "add" && subsystem == "block" && env.ID_SERIAL == "WDC_WD%04d_SERIAL"`, i)
		case 2:
			match = fmt.Sprintf(`action == "add" && subsystem == "block" && has_parent("usb") && attrs("idVendor") == "%04x"`, i)
		case 3:
			match = fmt.Sprintf(`action in ["add", "change"] && subsystem == "block" && glob("sd*", devname) && fs.label == "BACKUP%d"`, i)
		case 4:
			match = fmt.Sprintf(`action == "add" && subsystem == "block" && devtype == "partition" && fs.type in ["ext4", "xfs"] && attrs("serial") == "%08x"`, i)
		}
		fmt.Fprintf(&b, "  - name: disk-%d\n    match: '%s'\n", i, match)
	}
	return mustParse(tb, b.String())
}

// BenchmarkMatchPrefiltered is one event that the pre-filter rules out
// for all 100 rules: a net "change" against rules for other events.
func BenchmarkMatchPrefiltered(b *testing.B) {
	rs := mixedRules(b)
	ev := capture(b, "net-lo-change.kernel")
	dev := usbStick()
	if res := rs.Match(ev, dev); countStatus(res, Skipped) != 100 {
		b.Fatalf("skipped %d of %d", countStatus(res, Skipped), len(res))
	}
	b.ReportAllocs()
	var res []Result
	for b.Loop() {
		res = rs.AppendMatch(res[:0], ev, dev)
	}
}

// BenchmarkMatchAllEvaluated is one block "add" that all 100 rules must
// be evaluated for (none matches).
func BenchmarkMatchAllEvaluated(b *testing.B) {
	rs := diskRules(b)
	ev := capture(b, "loop0p1-partition-add.kernel")
	dev := usbStick()
	if res := rs.Match(ev, dev); countStatus(res, NotMatched) != 100 {
		b.Fatalf("evaluated %d of %d", countStatus(res, NotMatched), len(res))
	}
	b.ReportAllocs()
	var res []Result
	for b.Loop() {
		res = rs.AppendMatch(res[:0], ev, dev)
	}
}

// BenchmarkMatchAllEvaluatedParallel is the same from every CPU, as the
// daemon's workers call it.
func BenchmarkMatchAllEvaluatedParallel(b *testing.B) {
	rs := diskRules(b)
	ev := capture(b, "loop0p1-partition-add.kernel")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		dev := usbStick()
		for pb.Next() {
			rs.Match(ev, dev)
		}
	})
}

// BenchmarkLoad compiles the 100 mixed rules.
func BenchmarkLoad(b *testing.B) {
	var src strings.Builder
	src.WriteString("rules:\n")
	for i := range 100 {
		fmt.Fprintf(&src, "  - name: r%d\n    match: 'action == \"add\" && subsystem == \"block\" && fs.uuid == \"%04X\"'\n", i, i)
	}
	data := []byte(src.String())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := parse("b.yaml", data, fakeUsers); err != nil {
			b.Fatal(err)
		}
	}
}

func countStatus(res []Result, s Status) int {
	n := 0
	for _, r := range res {
		if r.Status == s {
			n++
		}
	}
	return n
}
