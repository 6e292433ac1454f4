package metrics

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func expose(t *testing.T, r *Registry) string {
	t.Helper()
	var b bytes.Buffer
	if err := r.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestExposition(t *testing.T) {
	r := New("1.2.3")
	r.EventHandled("block", "add")
	r.EventHandled("block", "add")
	r.EventHandled("net", "change")
	rule := r.Rule("usb-automount")
	rule.Matched(time.Unix(1700000000, 0))
	rule.Action("mount", "ok", 30*time.Millisecond)
	rule.Action("notify", "failed", time.Millisecond)
	r.Counter("hotplugd_uevents_dropped_total", "reason", "sender").Add(4)
	depth := 7.0
	r.Gauge(func() float64 { return depth }, "hotplugd_queue_events")
	out := expose(t, r)
	for _, want := range []string{
		"# HELP hotplugd_events_handled_total Events run through the rules, by subsystem and action.\n# TYPE hotplugd_events_handled_total counter\n",
		`hotplugd_events_handled_total{subsystem="block",action="add"} 2` + "\n",
		`hotplugd_events_handled_total{subsystem="net",action="change"} 1` + "\n",
		`hotplugd_rule_matches_total{rule="usb-automount"} 1` + "\n",
		`hotplugd_actions_total{rule="usb-automount",kind="mount",result="ok"} 1` + "\n",
		`hotplugd_action_duration_seconds_bucket{kind="mount",le="0.1"} 1` + "\n",
		"# TYPE hotplugd_action_duration_seconds histogram\n",
		`hotplugd_uevents_dropped_total{reason="sender"} 4` + "\n",
		"hotplugd_queue_events 7\n",
		`hotplugd_build_info{version="1.2.3",goversion="go`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %q:\n%s", want, out)
		}
	}
	if got := strings.Count(out, "# TYPE hotplugd_events_handled_total"); got != 1 {
		t.Errorf("TYPE of events_handled written %d times", got)
	}
	s := rule.Stats()
	if s.Matches != 1 || s.ActionsOK != 1 || s.ActionsFailed != 1 || s.LastMatch.Unix() != 1700000000 {
		t.Errorf("rule stats %+v", s)
	}
	promtool(t, out)
}

// promtool runs `promtool check metrics` (Debian package prometheus) on
// an exposition.
func promtool(t *testing.T, out string) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("prerequisite missing: promtool (Debian package prometheus)")
		}
		t.Skip("no promtool")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = strings.NewReader(out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s\n%s", err, b, out)
	}
}

// TestLabelValuesEscaped: a value with quotes, backslashes or a newline
// stays one label value.
func TestLabelValuesEscaped(t *testing.T) {
	r := New(`v"1\` + "\n")
	r.EventHandled(`we"ird\`, "add\n")
	out := expose(t, r)
	if !strings.Contains(out, `hotplugd_events_handled_total{subsystem="we\"ird\\",action="add\n"} 1`) ||
		!strings.Contains(out, `version="v\"1\\\n"`) {
		t.Errorf("escaping:\n%s", out)
	}
	promtool(t, out)
}

// TestSeriesBounded: past maxSeries label sets, events count as other.
func TestSeriesBounded(t *testing.T) {
	r := New("x")
	for i := range maxSeries + 10 {
		r.EventHandled("s"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+time.Duration(i).String(), "add")
	}
	out := expose(t, r)
	if n := strings.Count(out, "hotplugd_events_handled_total{"); n > maxSeries+1 {
		t.Errorf("%d series, bound %d", n, maxSeries)
	}
	if !strings.Contains(out, `hotplugd_events_handled_total{subsystem="other",action="other"} 10`) {
		t.Error("the events past the bound were not counted as other")
	}
}

func TestUnknownFamilyPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("an unknown family was accepted")
		}
	}()
	New("x").Counter("hotplugd_nope_total")
}

// BenchmarkEventHandled is the per-event cost: no lock, no allocation.
func BenchmarkEventHandled(b *testing.B) {
	r := New("x")
	r.EventHandled("net", "change")
	b.ReportAllocs()
	for b.Loop() {
		r.EventHandled("net", "change")
	}
}
