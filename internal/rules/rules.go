package rules

import (
	"log/slog"
	"math/bits"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/expr-lang/expr/vm"

	"github.com/hotplugd/hotplugd/internal/account"
	"github.com/hotplugd/hotplugd/internal/ratelimit"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// RuleSet is a loaded rules file: its settings and its rules in file
// order. It is safe for concurrent use by multiple goroutines once
// loaded.
type RuleSet struct {
	File     string
	Settings Settings
	Rules    []*Rule

	log  *slog.Logger
	now  func() time.Time
	pool sync.Pool // of *evaluator
	// byAction lists, per actionBit, the rules whose pre-filter admits
	// that action, in file order: AppendMatched looks at no other rule.
	byAction [16][]*Rule
}

// index builds byAction.
func (rs *RuleSet) index() {
	for bit := range numActions() {
		for _, r := range rs.Rules {
			if r.filter.actions == nil || r.filter.actionMask&(1<<bit) != 0 {
				rs.byAction[bit] = append(rs.byAction[bit], r)
			}
		}
	}
}

// Settings are the daemon settings of a rules file, defaults filled in.
type Settings struct {
	Source        string        // kernel, udev or auto
	Coldplug      bool          // feed existing devices as "add" at start
	Workers       int           // concurrent device handlers
	ActionTimeout time.Duration // default deadline of one action
	MountRoot     string        // where automatic mount points are created
	StateDir      string        // where mounts.json lives
	LogLevel      slog.Level
	Control       ControlSettings
	Metrics       MetricsSettings
	Network       bool          // also listen to NETLINK_ROUTE: links and addresses
	MQTT          *MQTTSettings // nil: no broker
}

// ControlSettings are settings.control.
type ControlSettings struct {
	Socket string // the control socket's path
	Group  string // may read the daemon's state; "" for root only
	GID    int    // Group's gid; -1 without one
}

// MetricsSettings are settings.metrics.
type MetricsSettings struct {
	Listen   string        // host:port to serve /metrics on; "" for none
	Textfile string        // file written for node_exporter; "" for none
	Interval time.Duration // how often Textfile is written
}

// DefaultSettings returns the settings of a file that sets none.
func DefaultSettings() Settings {
	return Settings{
		Source:        "kernel",
		Coldplug:      true,
		Workers:       8,
		ActionTimeout: 30 * time.Second,
		MountRoot:     "/media",
		StateDir:      "/run/hotplugd",
		LogLevel:      slog.LevelInfo,
		Control:       ControlSettings{Socket: "/run/hotplugd/control", GID: -1},
		Metrics:       MetricsSettings{Interval: 15 * time.Second},
	}
}

// Rule is one compiled rule.
type Rule struct {
	Name     string
	Match    string // the match expression as written
	Actions  []Action
	Continue bool // keep evaluating later rules after this one matched
	Pos      Pos  // where the rule starts

	prog   *vm.Program
	needs  needs
	filter prefilter
	errLog ratelimit.Limiter // of evaluation errors: one per evalErrorInterval
}

// ReadsFS reports whether the rule's match reads fs.*. The daemon then
// probes block devices when they appear, so that a remove rule can match
// on what the device database recorded.
func (r *Rule) ReadsFS() bool { return r.needs&needFS != 0 }

// ReadsFS reports whether some rule's match reads fs.*.
func (rs *RuleSet) ReadsFS() bool {
	for _, r := range rs.Rules {
		if r.ReadsFS() {
			return true
		}
	}
	return false
}

// Requires returns the actions and subsystems the pre-filter allows the
// rule to match; nil means any.
func (r *Rule) Requires() (actions, subsystems []string) {
	return slices.Clone(r.filter.actions), slices.Clone(r.filter.subsystems)
}

// Action is one action of a rule: *RunSpec, *MountSpec, *UnmountSpec,
// *NotifySpec or *UnlockSpec.
type Action interface {
	// Kind is the action's key in the rules file: run, mount, unmount,
	// notify or unlock.
	Kind() string
	// Position is where the action is written.
	Position() Pos
}

// User is a resolved user account: ids, home and groups.
type User = account.User

// RunSpec runs a program directly, without a shell.
type RunSpec struct {
	Pos Pos
	// Argv is the program and its arguments; Argv[0] is an absolute path
	// without {{ }}. Each element renders to exactly one argument.
	Argv    []*Template
	Timeout time.Duration // the rule's, or Settings.ActionTimeout
	User    *User         // nil: the daemon's own user
	Env     map[string]*Template
}

// MountSpec mounts the event's block device under Settings.MountRoot.
type MountSpec struct {
	Pos Pos
	// Options are added to the safe defaults (nosuid, nodev, noexec and
	// the filesystem's own); each is on an allow-list and has no ','.
	Options []string
	Owner   *User // owner for filesystems without permissions; nil: root
	Exec    bool  // drop noexec
	Timeout time.Duration
}

// UnmountSpec unmounts what hotplugd mounted for the event's device.
type UnmountSpec struct {
	Pos Pos
}

// NotifySpec sends a message to the log and to Targets.
type NotifySpec struct {
	Pos     Pos
	Message *Template
	Targets []Target
}

// Kind returns "run".
func (*RunSpec) Kind() string { return "run" }

// Kind returns "mount".
func (*MountSpec) Kind() string { return "mount" }

// Kind returns "unmount".
func (*UnmountSpec) Kind() string { return "unmount" }

// Kind returns "notify".
func (*NotifySpec) Kind() string { return "notify" }

// Position returns where the action is written.
func (s *RunSpec) Position() Pos { return s.Pos }

// Position returns where the action is written.
func (s *MountSpec) Position() Pos { return s.Pos }

// Position returns where the action is written.
func (s *UnmountSpec) Position() Pos { return s.Pos }

// Position returns where the action is written.
func (s *NotifySpec) Position() Pos { return s.Pos }

// Target is where a notification goes besides the log: *LogTarget,
// *WebhookTarget, *DesktopTarget or *MQTTTarget.
type Target interface {
	// Kind is the target's key in the rules file: log, webhook,
	// desktop or mqtt.
	Kind() string
}

// LogTarget is the log, where every notification goes anyway.
type LogTarget struct{}

// WebhookTarget POSTs a JSON document to URL.
type WebhookTarget struct {
	URL         *url.URL // http or https
	Headers     map[string]string
	Timeout     time.Duration // of one attempt
	MaxAttempts int
}

// DesktopTarget shows a freedesktop notification in active graphical
// sessions.
type DesktopTarget struct{}

// Kind returns "log".
func (*LogTarget) Kind() string { return "log" }

// Kind returns "webhook".
func (*WebhookTarget) Kind() string { return "webhook" }

// Kind returns "desktop".
func (*DesktopTarget) Kind() string { return "desktop" }

// Status is the outcome of one rule for one event.
type Status uint8

// The outcomes.
const (
	NotMatched Status = iota // the match was false
	Matched                  // the match was true
	Skipped                  // the pre-filter ruled it out without running it
	Failed                   // evaluating the match failed; treated as not matched
)

func (s Status) String() string {
	switch s {
	case NotMatched:
		return "not matched"
	case Matched:
		return "matched"
	case Skipped:
		return "skipped"
	case Failed:
		return "failed"
	}
	return "unknown"
}

// Result is the outcome of one rule for one event.
type Result struct {
	Rule   *Rule
	Status Status
	Reason string // Skipped: the field the pre-filter rejected, "action" or "subsystem"
	Err    error  // Failed: why
}

// SetLogger makes Match log evaluation errors to l, at most one line per
// rule per minute (with the number suppressed). Call it before Match is
// used.
func (rs *RuleSet) SetLogger(l *slog.Logger) { rs.log = l }

// evaluator is what one goroutine needs to run programs: a VM and an Env,
// reused through RuleSet.pool.
type evaluator struct {
	vm  vm.VM
	env *Env
}

// Match runs the rules in file order against ev and returns one Result
// per rule, stopping after a matched rule whose Continue is false. dev
// answers attr, attrs, has_parent and fs.*; nil means EventOnly{ev}.
func (rs *RuleSet) Match(ev *uevent.Event, dev Device) []Result {
	return rs.AppendMatch(make([]Result, 0, len(rs.Rules)), ev, dev)
}

// AppendMatched appends the rules that match ev to dst, in file order,
// stopping after one whose Continue is false. It is Match for the daemon:
// the rules the pre-filter rules out for the event's action are never
// looked at, and nothing is recorded for rules that do not match.
// Evaluation errors are logged as by Match.
func (rs *RuleSet) AppendMatched(dst []*Rule, ev *uevent.Event, dev Device) []*Rule {
	action := actionBit(ev.Action)
	cands := rs.Rules // an unknown action: Parse lets none through
	if action != 0 {
		cands = rs.byAction[bits.TrailingZeros16(action)]
	}
	if len(cands) == 0 {
		return dst
	}
	ctx, _ := rs.pool.Get().(*evaluator)
	if ctx == nil {
		ctx = &evaluator{env: newEnv()}
	}
	ctx.env.reset(ev, dev)
	for _, r := range cands {
		if ok, _ := r.filter.allows(action, ev.Subsystem); !ok {
			continue
		}
		ctx.env.load(r.needs)
		out, err := ctx.vm.Run(r.prog, ctx.env.m)
		if err != nil {
			rs.logEvalError(r, ev, runtimeErr(err))
			continue
		}
		if out == true {
			dst = append(dst, r)
			if !r.Continue {
				break
			}
		}
	}
	ctx.env.release()
	rs.pool.Put(ctx)
	return dst
}

// AppendMatch is Match appending to results, so a caller that keeps a
// slice allocates nothing per event.
func (rs *RuleSet) AppendMatch(results []Result, ev *uevent.Event, dev Device) []Result {
	ctx, _ := rs.pool.Get().(*evaluator)
	if ctx == nil {
		ctx = &evaluator{env: newEnv()}
	}
	ctx.env.reset(ev, dev)
	action := actionBit(ev.Action)
	for _, r := range rs.Rules {
		if ok, field := r.filter.allows(action, ev.Subsystem); !ok {
			results = append(results, Result{Rule: r, Status: Skipped, Reason: field})
			continue
		}
		ctx.env.load(r.needs)
		out, err := ctx.vm.Run(r.prog, ctx.env.m)
		if err != nil {
			err = runtimeErr(err)
			results = append(results, Result{Rule: r, Status: Failed, Err: err})
			rs.logEvalError(r, ev, err)
			continue
		}
		if out != true {
			results = append(results, Result{Rule: r, Status: NotMatched})
			continue
		}
		results = append(results, Result{Rule: r, Status: Matched})
		if !r.Continue {
			break
		}
	}
	ctx.env.release()
	rs.pool.Put(ctx)
	return results
}

// evalErrorInterval is how often one rule may log an evaluation error: a
// rule that fails on every event of a storm must not flood the log.
const evalErrorInterval = time.Minute

func (rs *RuleSet) logEvalError(r *Rule, ev *uevent.Event, err error) {
	if rs.log == nil {
		return
	}
	now := time.Now
	if rs.now != nil {
		now = rs.now
	}
	if ok, suppressed := r.errLog.Allow(now()); ok {
		rs.log.Error("rule evaluation failed; rule treated as not matched",
			"rule", r.Name, "pos", r.Pos.String(), "devpath", ev.DevPath, "action", ev.Action,
			"err", err, "suppressed", suppressed)
	}
}
