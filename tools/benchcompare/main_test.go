package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// loChange is the kernel's message for `echo "change <uuid> BC=<bc> N=7" >
// /sys/class/net/lo/uevent`.
func loChange(bc string) []byte {
	return []byte(strings.Join([]string{
		"change@/devices/virtual/net/lo",
		"ACTION=change",
		"DEVPATH=/devices/virtual/net/lo",
		"SUBSYSTEM=net",
		"SYNTH_UUID=0b3a3d56-8a4c-4c1e-9a43-3f4b1e2d5c6a",
		"SYNTH_ARG_BC=" + bc,
		"SYNTH_ARG_N=7",
		"INTERFACE=lo",
		"IFINDEX=1",
		"SEQNUM=4242",
	}, "\x00") + "\x00")
}

func TestHotplugdRuleMatchesOnlyItsToken(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	y := hotplugdRules(dir, "0123abcd", "/tmp/x/benchcompare", "/tmp/x/records")
	if err := os.WriteFile(path, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Load(path)
	if err != nil {
		t.Fatalf("the generated rules do not load: %v\n%s", err, y)
	}
	if rs.Settings.Coldplug {
		t.Error("coldplug on; udevd does none")
	}
	for bc, want := range map[string]rules.Status{"0123abcd": rules.Matched, "0123abce": rules.NotMatched} {
		ev, err := uevent.Parse(loChange(bc))
		if err != nil {
			t.Fatal(err)
		}
		res := rs.Match(&ev, nil)
		if len(res) != 1 || res[0].Status != want {
			t.Errorf("SYNTH_ARG_BC=%s: %+v, want %v", bc, res, want)
		}
	}
	if len(rs.Rules) != 1 || len(rs.Rules[0].Actions) != 1 || rs.Rules[0].Actions[0].Kind() != "run" {
		t.Errorf("want one rule with one run action: %+v", rs.Rules)
	}
}

func TestPeerRules(t *testing.T) {
	udev := udevRule("0123abcd", "/tmp/x/benchcompare", "/tmp/x/records")
	want := `ACTION=="change", SUBSYSTEM=="net", ENV{SYNTH_ARG_BC}=="0123abcd", RUN+="/tmp/x/benchcompare __benchcompare_record /tmp/x/records"` + "\n"
	if udev != want {
		t.Errorf("udev rule:\n%s\nwant\n%s", udev, want)
	}
	// mdev: ENV=regex; prefixes, the device name "lo", no node ("!"), and a
	// command ("*": on every action, change included).
	mdev := mdevConf("0123abcd", "/tmp/x/benchcompare", "/tmp/x/records")
	re := regexp.MustCompile(`^ACTION=\^change\$;SUBSYSTEM=\^net\$;SYNTH_ARG_BC=\^0123abcd\$;lo 0:0 600 ! \*/tmp/x/benchcompare __benchcompare_record /tmp/x/records\n$`)
	if !re.MatchString(mdev) {
		t.Errorf("mdev.conf line: %q", mdev)
	}
	if strings.Count(mdev, "\n") != 1 || strings.Contains(mdev, "#") {
		t.Errorf("mdev.conf line must be one line without '#': %q", mdev)
	}
}

func TestRecorder(t *testing.T) {
	file := filepath.Join(t.TempDir(), "records")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOTPLUG_SYNTH_UUID", "u-1")
	t.Setenv("HOTPLUG_SYNTH_ARG_N", "3")
	before := monotonic()
	if code := recordMain(file); code != 0 {
		t.Fatalf("exit %d", code)
	}
	t.Setenv("SYNTH_UUID", "u-2") // udevd and mdev: no prefix, which wins
	if code := recordMain(file); code != 0 {
		t.Fatalf("exit %d", code)
	}
	rl, err := openRecords(file)
	if err != nil {
		t.Fatal(err)
	}
	defer rl.close()
	var got []record
	if err := rl.read(func(r record) { got = append(got, r) }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].id != "u-1" || got[1].id != "u-2" || got[0].n != 3 || got[0].t < before || got[1].t < got[0].t {
		t.Errorf("records %+v (started at %d)", got, before)
	}
}

func TestRecordsPartialLines(t *testing.T) {
	file := filepath.Join(t.TempDir(), "records")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rl, err := openRecords(file)
	if err != nil {
		t.Fatal(err)
	}
	defer rl.close()
	var got []record
	collect := func(r record) { got = append(got, r) }
	for _, chunk := range []string{"a 1 10", "0\nb 2 2", "", "0\ngarbage\nc 3 30\n"} {
		f.WriteString(chunk)
		if err := rl.read(collect); err != nil {
			t.Fatal(err)
		}
	}
	want := []record{{"a", 1, 100}, {"b", 2, 20}, {"c", 3, 30}}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]time.Duration{50: 100 * time.Millisecond, 99: 198 * time.Millisecond, 100: 200 * time.Millisecond} {
		if got := percentile(d, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if got := percentile(d[:1], 99); got != time.Millisecond {
		t.Errorf("p99 of one = %v", got)
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of none = %v", got)
	}
}

func TestTable(t *testing.T) {
	lat := func(ms ...int) []time.Duration {
		var d []time.Duration
		for _, m := range ms {
			d = append(d, time.Duration(m)*time.Millisecond)
		}
		return d
	}
	results := []*result{
		{name: "hotplugd", sent: 1000, handled: 1000, seconds: 2, latencies: lat(2, 2, 4)},
		{name: "systemd-udevd", sent: 1000, handled: 1000, seconds: 4, latencies: lat(3, 3, 9)},
		{name: "busybox mdev -d", missing: "busybox: not found"},
	}
	var out bytes.Buffer
	printTable(&out, "HEADER", results, []string{"NOTE"})
	s := out.String()
	for _, want := range []string{
		"| hotplugd        |          1000 |    1000 |    2.00 |      500 |       1.00x |     2.00 ms | 4.00 ms |       1.00x |",
		"| systemd-udevd   |          1000 |    1000 |    4.00 |      250 |       0.50x |     3.00 ms | 9.00 ms |       1.50x |",
		"| busybox mdev -d | not installed |",
		"HEADER", "NOTE",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("table lacks %q:\n%s", want, s)
		}
	}
	// Every table line has the same width.
	var width int
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "|") {
			continue
		}
		if width == 0 {
			width = len(line)
		} else if len(line) != width {
			t.Errorf("ragged table line %q", line)
		}
	}
}

func TestUUID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	for range 20 {
		if u := newUUID(); !re.MatchString(u) {
			t.Fatalf("newUUID() = %q", u)
		}
	}
}
