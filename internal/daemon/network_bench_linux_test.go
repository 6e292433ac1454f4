package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/nettest"
)

// BenchmarkRouteStorm: 10,000 address add/remove pairs on a veth, as fast
// as the kernel makes them, through the built daemon with network: true.
// In "matched" a rule matches every one of them (it has no action:
// matching is the handling, and each match is logged); in "unmatched" the
// rule names another interface, so the events are handled without a
// match. After each storm an address on the same veth runs the latency
// probe; its events are handled after the storm's, in order.
//
// Reported: route events/s handled (from the first request to the probe),
// the storm's own rate (changes/s), lost (events the storm made minus
// those matched, or handled), and the route listener's overruns and drops.
func BenchmarkRouteStorm(b *testing.B) {
	b.Run("matched", func(b *testing.B) { benchRouteStorm(b, true) })
	b.Run("unmatched", func(b *testing.B) { benchRouteStorm(b, false) })
}

func benchRouteStorm(b *testing.B, match bool) {
	const pairs = 10_000
	bin, probe := needBinary(b), needProbe(b)
	p := nettest.Veth(b)
	nettest.IP(b, "link", "set", p.A, "up")
	index := nettest.Index(b, p.A)
	dir := b.TempDir()
	ps := newProbeSocket(b)
	rulesPath := filepath.Join(dir, "rules.yaml")
	stormLink := p.A
	if !match {
		stormLink = p.B
	}
	src := fmt.Sprintf(`settings: {network: true, coldplug: false, state_dir: %s, mount_root: %s}
rules:
  - name: storm
    match: action in ["address-add", "address-remove"] && devname == %q && env.ADDRESS startsWith "198.18."
  - name: probe
    match: action == "address-add" && devname == %q && env.ADDRESS == "203.0.113.99"
    actions: [{run: {argv: [%q, %q]}}]
`, jsonString(filepath.Join(dir, "state")), jsonString(filepath.Join(dir, "media")), stormLink, p.A, probe, ps.path)
	if err := os.WriteFile(rulesPath, []byte(src), 0o600); err != nil {
		b.Fatal(err)
	}
	d := startDaemon(b, bin, rulesPath)
	d.ready(b)

	var handling, storming time.Duration
	for b.Loop() {
		start := time.Now()
		nettest.Storm(b, index, pairs, nil)
		storming += time.Since(start)
		nettest.IP(b, "addr", "add", "203.0.113.99/32", "dev", p.A)
		end := ps.wait(b, "", time.Minute) // the probe's event has no SYNTH_UUID
		handling += time.Unix(0, end).Sub(start)
		nettest.IP(b, "addr", "del", "203.0.113.99/32", "dev", p.A)
	}
	d.signal(b, syscall.SIGTERM)
	if code := d.wait(b, waitExit); code != 0 {
		b.Fatalf("exit code %d", code)
	}
	st := stopLine(b, d)
	made := int64(2 * pairs * b.N)
	got := int64(d.logCount(regexp.MustCompile(`msg="rule matched" rule=storm `)))
	if !match {
		got = st["events"] - int64(2*b.N) // less the probe's address, added and removed
	}
	b.ReportMetric(float64(made)/handling.Seconds(), "events/s")
	b.ReportMetric(float64(made)/storming.Seconds(), "changes/s")
	b.ReportMetric(float64(max(0, made-got)), "lost")
	b.ReportMetric(float64(st["route_overruns"]), "overruns")
	b.ReportMetric(float64(st["route_dropped"]), "dropped")
}
