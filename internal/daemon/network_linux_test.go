package daemon

// `hotplugd run` with settings.network: the built binary, real veth
// pairs (internal/nettest), real processes.

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/hotplugd/hotplugd/internal/nettest"
)

// lines waits until path has at least n lines and returns them.
func lines(t tb, path string, n int) []string {
	t.Helper()
	s := waitFile(t, path, waitAction, func(s string) bool { return strings.Count(s, "\n") >= n })
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// TestBinaryNetworkCarrierRunsOnce: with network: true a rule on the
// carrier of one end of a veth pair runs its command once per carrier
// change, and not for messages that change nothing.
func TestBinaryNetworkCarrierRunsOnce(t *testing.T) {
	bin := needBinary(t)
	p := nettest.Veth(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeRules(t, rulesPath, "network: true\nlog_level: debug", rule{
		name:  "carrier",
		match: fmt.Sprintf(`action in ["carrier", "no-carrier"] && subsystem == "net" && devname == %q`, p.A),
		argv:  []string{"/bin/sh", "-c", `echo "$HOTPLUG_ACTION $HOTPLUG_INTERFACE $HOTPLUG_SOURCE $HOTPLUG_DEVPATH" >> "$0"`, out},
	})
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)

	nettest.IP(t, "link", "set", p.A, "up")
	nettest.IP(t, "link", "set", p.B, "up")
	lines(t, out, 1)
	nettest.IP(t, "link", "set", p.A, "mtu", "1400") // no flag changes
	nettest.IP(t, "link", "set", p.A, "up")
	nettest.IP(t, "link", "set", p.B, "down")
	lines(t, out, 2)
	nettest.IP(t, "link", "set", p.B, "up")
	lines(t, out, 3)
	// A later event of the same interface, which the rule does not
	// match: once it is handled, so are the carrier events before it.
	nettest.IP(t, "addr", "add", "192.0.2.10/24", "dev", p.A)
	d.waitLog(t, regexp.MustCompile(`msg=event action=address-add devpath=/devices/virtual/net/`+p.A), waitAction)

	devpath := "/devices/virtual/net/" + p.A
	want := []string{"carrier " + p.A + " route " + devpath, "no-carrier " + p.A + " route " + devpath, "carrier " + p.A + " route " + devpath}
	if b, _ := os.ReadFile(out); strings.Join(want, "\n")+"\n" != string(b) {
		t.Errorf("the command ran for\n%s\nwant once per carrier change:\n%s", b, strings.Join(want, "\n"))
	}
	text := string(socketGet(t, filepath.Join(dir, "control"), "/metrics"))
	if n := metricValue(t, text, `hotplugd_uevents_received_total{source="route"}`); n < 4 {
		t.Errorf("/metrics counts %v route messages received, want at least 4:\n%s", n, text)
	}
	metricValue(t, text, `hotplugd_uevents_received_total{source="kernel"}`) // and the kernel's, beside it
	socket := filepath.Join(dir, "control")
	if s := statusOf(t, bin, socket); s.Events.BySource["route"] < 4 || s.Events.Received != s.Events.BySource["route"]+s.Events.BySource["kernel"] {
		t.Errorf("status events %+v: want the route messages counted beside the kernel's, and summed", s.Events)
	}
	if out, _, code := ctl(t, bin, nil, "status", "--socket", socket); code != 0 || !regexp.MustCompile(`events: +\d+ received \(kernel \d+, route \d+\)`).MatchString(out) {
		t.Errorf("status (human), exit %d: want the events received by source:\n%s", code, out)
	}
	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, waitExit); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	stop := stopLine(t, d)
	t.Logf("stop line: %v", stop)
	if stop["route_events"] < 4 || stop["route_received"] < stop["route_events"]/2 || stop["route_dropped"] != 0 || stop["events"] < stop["route_events"] {
		t.Errorf("stop line %v: want the route events counted, none dropped, and handled", stop)
	}
}

// TestBinaryNetworkOrderWhileAnotherLinkIsSlow: while a slow action runs
// for a route event of one veth, its later events wait, route events and
// uevents alike, and the other veth's events do not.
func TestBinaryNetworkOrderWhileAnotherLinkIsSlow(t *testing.T) {
	bin := needBinary(t)
	slow, other := nettest.Veth(t).A, nettest.Veth(t).A
	dir := t.TempDir()
	tag := newTag()
	seq := filepath.Join(dir, "seq")
	started, release, finished := filepath.Join(dir, "started"), filepath.Join(dir, "release"), filepath.Join(dir, "finished")
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeRules(t, rulesPath, "network: true\nworkers: 8",
		rule{
			// Until the test releases it (at most a minute), so "while it
			// runs" does not depend on how fast this machine is.
			name:    "slow",
			match:   fmt.Sprintf(`action == "address-add" && devname == %q && env.ADDRESS == "192.0.2.1"`, slow),
			timeout: "2m",
			argv: []string{"/bin/sh", "-c", `echo started > "$0"; i=0
				while [ ! -e "$1" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
				echo done > "$2"`, started, release, finished},
		},
		rule{
			name:  "addresses",
			match: fmt.Sprintf(`action == "address-add" && devname in [%q, %q]`, slow, other),
			argv:  []string{"/bin/sh", "-c", `echo "$HOTPLUG_INTERFACE $HOTPLUG_ADDRESS" >> "$0"`, seq},
		},
		rule{
			name:  "uevent",
			match: fmt.Sprintf(`action == "change" && devpath == "/devices/virtual/net/%s" && env.SYNTH_ARG_T == %q`, slow, tag),
			argv:  []string{"/bin/sh", "-c", `echo "$HOTPLUG_INTERFACE uevent" >> "$0"`, seq},
		},
	)
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)
	killMarked(t, started)

	nettest.IP(t, "addr", "add", "192.0.2.1/32", "dev", slow)
	waitFile(t, started, waitAction, func(s string) bool { return s == "started\n" })
	var later, others []string
	for i := 1; i <= 3; i++ {
		a, b := fmt.Sprintf("198.51.100.%d", i), fmt.Sprintf("198.51.100.%d", 10+i)
		nettest.IP(t, "addr", "add", a+"/32", "dev", slow)
		nettest.IP(t, "addr", "add", b+"/32", "dev", other)
		later, others = append(later, slow+" "+a), append(others, other+" "+b)
	}
	trigger(t, "/sys/class/net/"+slow+"/uevent", newUUID(), tag)

	if got := lines(t, seq, 3); strings.Join(got, "\n") != strings.Join(others, "\n") {
		t.Fatalf("while the slow action runs: %q, want the other link's %q", got, others)
	}
	if _, err := os.Stat(finished); err == nil {
		t.Fatal("the slow action finished before the test released it")
	}
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	got := lines(t, seq, 3+1+len(later)+1)[3:]
	var addrs []string
	for _, l := range got {
		if !strings.HasSuffix(l, " uevent") {
			addrs = append(addrs, l)
		}
	}
	if want := append([]string{slow + " 192.0.2.1"}, later...); strings.Join(addrs, "\n") != strings.Join(want, "\n") || len(got) != len(want)+1 {
		t.Errorf("after the slow action: %q, want %q in this order and the uevent", got, want)
	}
	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, waitExit); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

// TestBinaryNetworkColdplug: with coldplug, the links and addresses
// present at start go through the rules once, with source coldplug; then
// only changes do.
func TestBinaryNetworkColdplug(t *testing.T) {
	bin := needBinary(t)
	p := nettest.Veth(t)
	nettest.IP(t, "link", "set", p.A, "up")
	nettest.IP(t, "link", "set", p.B, "up")
	nettest.IP(t, "addr", "add", "192.0.2.30/24", "dev", p.A)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeRules(t, rulesPath, "network: true\ncoldplug: true", rule{
		name:  "link",
		match: fmt.Sprintf(`subsystem == "net" && devname == %q && action != "add"`, p.A),
		argv:  []string{"/bin/sh", "-c", `echo "$HOTPLUG_ACTION $HOTPLUG_SOURCE $HOTPLUG_ADDRESS" >> "$0"`, out},
	})
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)
	got := lines(t, out, 3)
	want := []string{"link-up coldplug ", "carrier coldplug ", "address-add coldplug 192.0.2.30"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("at start: %q, want %q", got, want)
	}
	d.waitLog(t, regexp.MustCompile(`msg="coldplug: existing devices queued" devices=[1-9]`), waitAction)
	nettest.IP(t, "link", "set", p.B, "down")
	if got := lines(t, out, 4)[3]; got != "no-carrier route " {
		t.Errorf("after the peer went down: %q, want no-carrier route", got)
	}
	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, waitExit); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}
