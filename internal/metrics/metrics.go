// Package metrics holds hotplugd's counters and writes them in the
// Prometheus text exposition format, for the control socket's /metrics,
// an optional TCP listener and node_exporter's textfile collector. Names
// follow Prometheus practice: base units, _total counters, and bounded
// labels only; a device's name, label or serial is never a label value.
//
// Counters on the event path are atomic: incrementing one takes no lock
// and allocates nothing once its label set exists. The exposition is
// github.com/VictoriaMetrics/metrics, whose samples this package
// precedes with HELP and TYPE lines (promtool check metrics wants help).
package metrics

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"time"

	vm "github.com/VictoriaMetrics/metrics"
)

// maxSeries bounds the label sets created on the event path (subsystem
// and action of handled events); past it, events count as subsystem
// "other".
const maxSeries = 1024

// family is what HELP and TYPE say of one metric family.
type family struct {
	help, kind string
}

// families are hotplugd's metric families; a sample of any other family
// cannot be written.
var families = map[string]family{
	"hotplugd_build_info":                                   {"Version of the running hotplugd and of the Go it was built with.", "gauge"},
	"hotplugd_uevents_received_total":                       {"Netlink messages read, by source.", "counter"},
	"hotplugd_uevents_dropped_total":                        {"Netlink messages dropped, by reason.", "counter"},
	"hotplugd_netlink_overruns_total":                       {"Kernel receive buffer overruns (ENOBUFS), by source; each is followed by a resync.", "counter"},
	"hotplugd_events_handled_total":                         {"Events run through the rules, by subsystem and action.", "counter"},
	"hotplugd_rule_matches_total":                           {"Events a rule matched.", "counter"},
	"hotplugd_actions_total":                                {"Actions run, by rule, kind and result (ok, failed, skipped).", "counter"},
	"hotplugd_action_duration_seconds":                      {"How long actions took, by kind.", "histogram"},
	"hotplugd_ejects_total":                                 {"Ejects asked for through the control socket, by result.", "counter"},
	"hotplugd_queue_events":                                 {"Events queued or being handled.", "gauge"},
	"hotplugd_mounts":                                       {"Filesystems hotplugd has mounted.", "gauge"},
	"hotplugd_processes_left_behind":                        {"Processes of stopped actions and probes that did not die of SIGKILL.", "gauge"},
	"hotplugd_config_last_reload_successful":                {"Whether the last load of the rules file succeeded.", "gauge"},
	"hotplugd_config_last_reload_success_timestamp_seconds": {"When the rules file last loaded successfully.", "gauge"},
	"hotplugd_broker_connected":                             {"Whether the MQTT broker connection is up.", "gauge"},
	"hotplugd_broker_messages_published_total":              {"Messages the broker acknowledged.", "counter"},
	"hotplugd_broker_messages_dropped_total":                {"Messages dropped before they reached the broker, by reason.", "counter"},
	"hotplugd_broker_queue_messages":                        {"Messages waiting in the on-disk outbox.", "gauge"},
}

// Registry is the daemon's metrics. It is safe for concurrent use.
type Registry struct {
	set *vm.Set

	mu       sync.Mutex // creating series
	handled  sync.Map   // eventKey → *vm.Counter
	nHandled int
	rules    sync.Map // rule name → *Rule
	kinds    map[string]*vm.PrometheusHistogram
	refresh  []func() // called before each exposition
}

type eventKey struct{ subsystem, action string }

// New returns a Registry with hotplugd_build_info set.
func New(version string) *Registry {
	r := &Registry{set: vm.NewSet(), kinds: make(map[string]*vm.PrometheusHistogram)}
	r.set.NewGauge(Name("hotplugd_build_info", "version", version, "goversion", runtime.Version()), func() float64 { return 1 })
	return r
}

// Name is a series name: the family and label pairs, values escaped.
func Name(fam string, labels ...string) string {
	if len(labels) == 0 {
		return fam
	}
	var b strings.Builder
	b.WriteString(fam)
	b.WriteByte('{')
	for i := 0; i+1 < len(labels); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(labels[i])
		b.WriteString(`="`)
		b.WriteString(escapeLabel(labels[i+1]))
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}

// escapeLabel escapes a label value as the text format wants: backslash,
// double quote and line feed. Invalid UTF-8 becomes U+FFFD.
func escapeLabel(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// EventHandled counts one handled event.
func (r *Registry) EventHandled(subsystem, action string) {
	k := eventKey{subsystem, action}
	if c, ok := r.handled.Load(k); ok {
		c.(*vm.Counter).Inc()
		return
	}
	r.mu.Lock()
	if r.nHandled >= maxSeries {
		k = eventKey{"other", "other"}
	}
	c, ok := r.handled.Load(k)
	if !ok {
		c = r.set.GetOrCreateCounter(Name("hotplugd_events_handled_total", "subsystem", k.subsystem, "action", k.action))
		r.handled.Store(k, c)
		r.nHandled++
	}
	r.mu.Unlock()
	c.(*vm.Counter).Inc()
}

// Counter returns the counter of a series, created on first use. It is
// for series whose label values are bounded (a source, a reason); keep
// the pointer rather than asking again per event.
func (r *Registry) Counter(fam string, labels ...string) *vm.Counter {
	mustKnow(fam)
	return r.set.GetOrCreateCounter(Name(fam, labels...))
}

// Gauge registers a gauge whose value f gives at each exposition.
func (r *Registry) Gauge(f func() float64, fam string, labels ...string) {
	mustKnow(fam)
	r.set.GetOrCreateGauge(Name(fam, labels...), f)
}

// OnExpose registers f to run before each exposition, to copy counters
// kept elsewhere (the listener's) into their series.
func (r *Registry) OnExpose(f func()) {
	r.mu.Lock()
	r.refresh = append(r.refresh, f)
	r.mu.Unlock()
}

// duration is the histogram of action durations of kind.
func (r *Registry) duration(kind string) *vm.PrometheusHistogram {
	r.mu.Lock()
	defer r.mu.Unlock()
	h, ok := r.kinds[kind]
	if !ok {
		h = r.set.GetOrCreatePrometheusHistogramExt(Name("hotplugd_action_duration_seconds", "kind", kind),
			[]float64{0.001, 0.01, 0.1, 0.5, 1, 5, 30, 120, 600, 3600})
		r.kinds[kind] = h
	}
	return h
}

func mustKnow(fam string) {
	if _, ok := families[fam]; !ok {
		panic("metrics: unknown family " + fam)
	}
}

// WritePrometheus writes every series, each family after its HELP and
// TYPE lines.
func (r *Registry) WritePrometheus(w io.Writer) error {
	r.mu.Lock()
	refresh := r.refresh
	r.mu.Unlock()
	for _, f := range refresh {
		f()
	}
	var buf bytes.Buffer
	r.set.WritePrometheus(&buf)
	bw := bufio.NewWriter(w)
	last := ""
	for line := range strings.Lines(buf.String()) {
		if strings.HasPrefix(line, "#") {
			continue // the library's own metadata, never enabled here
		}
		fam := familyOf(line)
		if fam != last {
			f, ok := families[fam]
			if !ok {
				return fmt.Errorf("metrics: series of unknown family %q", fam)
			}
			fmt.Fprintf(bw, "# HELP %s %s\n# TYPE %s %s\n", fam, f.help, fam, f.kind)
			last = fam
		}
		bw.WriteString(line)
	}
	return bw.Flush()
}

// familyOf is the family of a sample line: its name without labels and,
// for a histogram, without _bucket, _sum or _count.
func familyOf(line string) string {
	name := line[:strings.IndexAny(line, "{ ")]
	if _, ok := families[name]; ok {
		return name
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if f, ok := families[base]; ok && f.kind == "histogram" {
				return base
			}
		}
	}
	return name
}

// Rule is the counters of one rule: its matches and its actions by kind
// and result, for /metrics and for status.
type Rule struct {
	r         *Registry
	name      string
	matches   *vm.Counter
	lastMatch atomicTime
	mu        sync.Mutex
	actions   map[[2]string]*vm.Counter // kind, result
}

// Rule returns the counters of the rule called name; a reload keeps them.
func (r *Registry) Rule(name string) *Rule {
	if x, ok := r.rules.Load(name); ok {
		return x.(*Rule)
	}
	x, _ := r.rules.LoadOrStore(name, &Rule{
		r: r, name: name, actions: make(map[[2]string]*vm.Counter),
		matches: r.set.GetOrCreateCounter(Name("hotplugd_rule_matches_total", "rule", name)),
	})
	return x.(*Rule)
}

// Matched counts one match.
func (c *Rule) Matched(now time.Time) {
	c.matches.Inc()
	c.lastMatch.store(now)
}

// Action counts one action of kind with result (ok, failed, skipped)
// and its duration.
func (c *Rule) Action(kind, result string, d time.Duration) {
	k := [2]string{kind, result}
	c.mu.Lock()
	ctr, ok := c.actions[k]
	if !ok {
		ctr = c.r.set.GetOrCreateCounter(Name("hotplugd_actions_total", "rule", c.name, "kind", kind, "result", result))
		c.actions[k] = ctr
	}
	c.mu.Unlock()
	ctr.Inc()
	c.r.duration(kind).Update(d.Seconds())
}

// RuleStats is what status says of a rule.
type RuleStats struct {
	Matches, ActionsOK, ActionsFailed uint64
	LastMatch                         time.Time
}

// Stats returns the rule's counts.
func (c *Rule) Stats() RuleStats {
	s := RuleStats{Matches: c.matches.Get(), LastMatch: c.lastMatch.load()}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, ctr := range c.actions {
		switch k[1] {
		case "ok", "skipped":
			s.ActionsOK += ctr.Get()
		case "failed":
			s.ActionsFailed += ctr.Get()
		}
	}
	return s
}
