package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions"
	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/actions/notify"
	"github.com/hotplugd/hotplugd/internal/actions/run"
	"github.com/hotplugd/hotplugd/internal/device"
	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/listener"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// Config configures Run. Host paths default to the real system.
type Config struct {
	RulesPath string     // the rules file
	Roots     host.Roots // the host directories; zero fields are the real system's
	// StopTimeout is how long SIGTERM lets running actions finish before
	// their process groups are killed (default 10s).
	StopTimeout time.Duration
	// QueueMax bounds the events waiting for a worker (default 4096).
	QueueMax int
	Logger   *slog.Logger
	// Level is the logger's level; log_level sets it on start and reload.
	Level *slog.LevelVar
}

func (c *Config) defaults() {
	c.Roots = c.Roots.WithDefaults()
	if c.StopTimeout <= 0 {
		c.StopTimeout = 10 * time.Second
	}
	if c.QueueMax <= 0 {
		c.QueueMax = 4096
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Level == nil {
		c.Level = new(slog.LevelVar)
	}
}

// ruleState is one loaded rules file with its built actions. Events take
// the state current when they start and finish on it, across reloads.
type ruleState struct {
	rs      *rules.RuleSet
	acts    *actions.Set
	readsFS bool // some match reads fs.*: probe block devices on add
}

type daemon struct {
	cfg    Config
	log    *slog.Logger
	sd     notifier
	lst    *listener.Listener
	devs   *device.Manager
	deps   *actions.Deps
	disp   *dispatcher
	state  atomic.Pointer[ruleState]
	errLog errLimiter

	// actx is the context of running actions; it outlives intake so
	// SIGTERM can let them finish.
	actx context.Context

	handled, actionsOK, actionsFailed, resyncs atomic.Uint64
	coldplugLeft                               atomic.Int64
	resyncing, resyncAgain                     atomic.Bool

	mu      sync.Mutex
	lastErr string

	// present is every device an event said exists (devpath → subsystem),
	// what a resync compares /sys with. Unlike the device database it is
	// never evicted; it holds one entry per device of the machine.
	presentMu sync.Mutex
	present   map[string]string

	matched sync.Pool // of *[]*rules.Rule, for handle
}

// Run is `hotplugd run`: it returns nil after an orderly stop when ctx is
// cancelled (SIGTERM/SIGINT), and an error when it cannot start.
func Run(ctx context.Context, cfg Config) error {
	cfg.defaults()
	d := &daemon{cfg: cfg, log: cfg.Logger, sd: notifier{log: cfg.Logger}, present: make(map[string]string)}
	d.matched.New = func() any { return new([]*rules.Rule) }
	d.errLog.init(time.Minute, 3)

	st, err := d.load(nil)
	if err != nil {
		return err
	}
	settings := st.rs.Settings
	cfg.Level.Set(settings.LogLevel)
	checkMountNamespace(d.log, cfg.Roots)

	d.lst, err = listener.New(listener.Config{Source: settings.Source, Roots: cfg.Roots}, d.log)
	if err != nil {
		return err
	}
	defer d.lst.Close()
	d.devs, err = device.New(device.Config{Roots: cfg.Roots, Logger: d.log})
	if err != nil {
		return err
	}
	defer d.devs.Close()

	d.deps = &actions.Deps{Log: d.log, Runner: &run.Runner{Log: d.log}, Notifier: notify.NewNotifier(notify.NotifierConfig{Log: d.log})}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.deps.Notifier.Close(ctx)
	}()
	if uid := os.Geteuid(); uid != 0 {
		// Everything else works for what this user may do.
		d.deps.MountErr = fmt.Errorf("hotplugd runs as uid %d, and mounting needs root", uid)
	} else {
		d.deps.Mounter, d.deps.MountErr = mount.NewMounter(mount.Config{
			MountRoot: settings.MountRoot,
			StatePath: filepath.Join(settings.StateDir, "mounts.json"),
			Roots:     cfg.Roots,
			Logger:    d.log,
		})
	}
	if d.deps.MountErr != nil {
		d.log.Warn("mounting is disabled", "err", d.deps.MountErr)
	}
	if st.acts, err = actions.Build(st.rs, d.deps); err != nil {
		return err
	}
	d.state.Store(st)

	actx, killActions := context.WithCancel(context.WithoutCancel(ctx))
	defer killActions()
	d.actx = actx
	if m := d.deps.Mounter; m != nil {
		d.reconcileMounts(ctx)
	}

	intake, stopIntake := context.WithCancel(ctx)
	defer stopIntake()
	d.disp = newDispatcher(settings.Workers, cfg.QueueMax, d.handle)
	stopWake := d.disp.wakeOnDone(intake)
	defer stopWake()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	resync := make(chan struct{}, 1)
	var bg sync.WaitGroup
	lstDone := make(chan error, 1)
	bg.Go(func() { lstDone <- d.lst.Run(intake, handler{d: d, ctx: intake, resync: resync}) })
	if settings.Coldplug {
		d.disp.beginColdplug()
		d.coldplugLeft.Store(1)
		bg.Go(func() { d.coldplug(intake) })
	}
	d.log.Info("hotplugd running", "rules", len(st.rs.Rules), "file", st.rs.File, "source", d.lst.Source(),
		"workers", settings.Workers, "coldplug", settings.Coldplug)
	d.sd.ready(d.status())

	wd := watchdogInterval()
	var wdTick <-chan time.Time
	if wd > 0 {
		t := time.NewTicker(wd)
		defer t.Stop()
		wdTick = t.C
	}
	statusTick := time.NewTicker(5 * time.Second)
	defer statusTick.Stop()
	lastStatus := ""

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-lstDone:
			lstDone <- err
			if err != nil {
				runErr = fmt.Errorf("listener: %w", err)
			}
			break loop
		case <-hup:
			d.reload()
		case <-resync:
			// One resync at a time; overruns meanwhile make it go again.
			if d.resyncing.Swap(true) {
				d.resyncAgain.Store(true)
				break
			}
			bg.Go(func() {
				defer d.resyncing.Store(false)
				for {
					d.resync(intake)
					if !d.resyncAgain.Swap(false) || intake.Err() != nil {
						return
					}
				}
			})
		case <-wdTick:
			// Stats takes the dispatcher's lock: a wedged dispatcher stops
			// the pings and systemd restarts the service.
			d.disp.Stats()
			d.sd.watchdog()
		case <-statusTick.C:
			if s := d.status(); s != lastStatus {
				d.sd.status(s)
				lastStatus = s
			}
		}
	}

	d.sd.stopping()
	d.log.Info("stopping: no new events; waiting for running actions", "deadline", cfg.StopTimeout)
	stopIntake()
	<-lstDone
	closed := make(chan struct{})
	go func() { d.disp.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(cfg.StopTimeout):
		d.log.Warn("stop deadline passed: killing running actions")
		killActions()
		<-closed
	}
	bg.Wait()
	ls := d.lst.Stats()
	d.log.Info("stopped", "events", d.handled.Load(), "received", ls.Received, "dropped", ls.Dropped(),
		"overruns", ls.Overruns, "actions_ok", d.actionsOK.Load(), "actions_failed", d.actionsFailed.Load())
	return runErr
}

// load reads, checks and compiles the rules file. old, when not nil, is
// the state in force, whose non-reloadable settings are compared.
func (d *daemon) load(old *ruleState) (*ruleState, error) {
	path := d.cfg.RulesPath
	problems, err := rules.UnsafePermissions(path, os.Geteuid())
	if err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("refusing %s: it decides what runs as root, so only root (or this daemon's user) may be able to change it: %s",
			path, strings.Join(problems, "; "))
	}
	rs, err := rules.Load(path)
	if err != nil {
		return nil, err
	}
	rs.SetLogger(d.log)
	st := &ruleState{rs: rs}
	for _, r := range rs.Rules {
		st.readsFS = st.readsFS || r.ReadsFS()
	}
	if old != nil {
		if st.acts, err = actions.Build(rs, d.deps); err != nil {
			return nil, err
		}
		a, b := old.rs.Settings, rs.Settings
		if a.Source != b.Source || a.Workers != b.Workers || a.MountRoot != b.MountRoot || a.StateDir != b.StateDir || a.Coldplug != b.Coldplug {
			d.log.Warn("source, workers, coldplug, mount_root and state_dir take effect at the next start; the rest is in force now")
		}
	}
	return st, nil
}

// reload is SIGHUP: a bad file keeps the old rules in force.
func (d *daemon) reload() {
	d.sd.reloading()
	st, err := d.load(d.state.Load())
	if err != nil {
		first, _, _ := strings.Cut(err.Error(), "\n")
		d.setLastErr("reload failed: " + first)
		d.log.Error("reload failed; the previous rules stay in force", "file", d.cfg.RulesPath, "err", err)
		d.sd.ready(d.status())
		return
	}
	d.state.Store(st)
	d.cfg.Level.Set(st.rs.Settings.LogLevel)
	d.setLastErr("")
	d.log.Info("rules reloaded", "file", st.rs.File, "rules", len(st.rs.Rules))
	d.sd.ready(d.status())
}

// handler feeds the listener's events to the dispatcher.
type handler struct {
	d      *daemon
	ctx    context.Context
	resync chan<- struct{}
}

func (h handler) Event(ev uevent.Event) {
	h.d.disp.Submit(h.ctx, &ev)
}

func (h handler) Overrun() {
	select {
	case h.resync <- struct{}{}:
	default: // one is pending already
	}
}

// handle runs the rules for one event; the dispatcher calls it in order
// per device.
func (d *daemon) handle(ctx context.Context, ev *uevent.Event) {
	defer d.handled.Add(1)
	if ev.Source == uevent.SourceColdplug {
		defer d.coldplugDone()
	}
	d.notePresence(ev)
	st := d.state.Load()
	dev := d.devs.For(*ev)
	defer dev.Done()
	if d.log.Enabled(ctx, slog.LevelDebug) { // its arguments cost allocations on every event
		d.log.Debug("event", "action", ev.Action, "devpath", ev.DevPath, "subsystem", ev.Subsystem,
			"seqnum", ev.Seqnum, "source", ev.Source)
	}
	if st.readsFS && ev.Subsystem == "block" && (ev.Action == "add" || ev.Action == "change") {
		dev.FS() // recorded by Done, for the remove rules
	}
	// The matched rules go into a buffer kept across events: nothing is
	// allocated per event of a storm that matches no rule.
	buf := d.matched.Get().(*[]*rules.Rule)
	defer func() { clear(*buf); d.matched.Put(buf) }()
	*buf = st.rs.AppendMatched((*buf)[:0], ev, dev)
	if len(*buf) > 0 || ev.Action == "remove" && ev.Subsystem == "block" {
		st.acts.Run(d.actx, ev, dev, *buf, eventObserver{d: d, ev: ev})
	}
}

// eventObserver counts and logs what the actions of one event did.
type eventObserver struct {
	d  *daemon
	ev *uevent.Event
}

func (o eventObserver) Matched(r *rules.Rule) {
	ev := o.ev
	o.d.log.Info("rule matched", "rule", r.Name, "action", ev.Action, "devpath", ev.DevPath,
		"devname", ev.DevName, "seqnum", ev.Seqnum, "source", ev.Source)
}

func (o eventObserver) Did(r *rules.Rule, st actions.Step, err error) {
	if r == nil { // the unmount of a removed device
		if err != nil {
			o.d.finish(o.ev, "(removal)", st.Kind, err)
		}
		return
	}
	o.d.finish(o.ev, r.Name, st.Kind, err)
}

func (o eventObserver) Ended(r *rules.Rule, left int) {
	o.d.log.Info("later actions of the rule not run", "rule", r.Name, "devpath", o.ev.DevPath, "skipped", left)
}

// finish counts and logs the outcome of one action.
func (d *daemon) finish(ev *uevent.Event, rule, kind string, err error) {
	switch {
	case err == nil:
		d.actionsOK.Add(1)
	case errors.Is(err, actions.ErrSkipped):
		d.actionsOK.Add(1)
		d.log.Info("action skipped", "rule", rule, "action", kind, "devpath", ev.DevPath, "reason", err)
	default:
		d.actionsFailed.Add(1)
		d.setLastErr(fmt.Sprintf("%s: %s: %v", rule, kind, err))
		if ok, suppressed := d.errLog.allow(ev.DevPath + "\x00" + rule); ok {
			d.log.Error("action failed", "rule", rule, "action", kind, "devpath", ev.DevPath,
				"err", err, "suppressed", suppressed)
		}
	}
}

func (d *daemon) setLastErr(s string) {
	d.mu.Lock()
	d.lastErr = s
	d.mu.Unlock()
}

// status is the STATUS= line: short, for `systemctl status`.
func (d *daemon) status() string {
	st := d.state.Load()
	mounts := 0
	if d.deps != nil && d.deps.Mounter != nil {
		mounts = len(d.deps.Mounter.Entries())
	}
	s := fmt.Sprintf("%d rules; %d events; actions %d ok, %d failed; %d mounts",
		len(st.rs.Rules), d.handled.Load(), d.actionsOK.Load(), d.actionsFailed.Load(), mounts)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lastErr != "" {
		s += "; last error: " + d.lastErr
	}
	return s
}

// coldplug feeds every present device as an "add" (source coldplug).
// Until those are handled, a device that also sends a live "add" is
// handled once (the dispatcher's coldplug window).
func (d *daemon) coldplug(ctx context.Context) {
	defer d.coldplugDone()
	evs, err := d.devs.Enumerate("")
	if err != nil {
		d.log.Warn("coldplug: some devices could not be read", "err", err)
	}
	for i := range evs {
		d.coldplugLeft.Add(1)
		if d.disp.Submit(ctx, &evs[i]) != queued {
			d.coldplugLeft.Add(-1)
		}
	}
	d.log.Info("coldplug: existing devices queued", "devices", len(evs))
}

func (d *daemon) coldplugDone() {
	if d.coldplugLeft.Add(-1) == 0 {
		d.disp.endColdplug()
		d.log.Debug("coldplug done")
	}
}

// resync runs after the kernel dropped events (ENOBUFS): devices that
// appeared meanwhile get an "add", devices that vanished a "remove"
// (source resync), and mounts are reconciled.
func (d *daemon) resync(ctx context.Context) {
	n := d.resyncs.Add(1)
	evs, err := d.devs.Enumerate("")
	if err != nil {
		d.log.Warn("resync: some devices could not be read", "err", err)
	}
	known := d.presentDevices()
	present := make(map[string]bool, len(evs))
	added, removed := 0, 0
	for i := range evs {
		e := &evs[i]
		present[e.DevPath] = true
		// A device with events still queued is up to date once they
		// are handled; only devices nothing was heard of get an "add".
		if _, ok := known[e.DevPath]; !ok && !d.disp.pending(e.DevPath) {
			e.Source = uevent.SourceResync
			if d.disp.Submit(ctx, e) == queued {
				added++
			}
		}
	}
	for p, subsystem := range known {
		if present[p] || d.disp.pending(p) {
			continue
		}
		if ev, ok := d.removeEvent(p, subsystem); ok && d.disp.Submit(ctx, ev) == queued {
			removed++
		}
	}
	d.log.Warn("events were lost (kernel buffer overrun): resynced with /sys", "resync", n, "added", added, "removed", removed)
	if d.deps.Mounter != nil {
		d.reconcileMounts(ctx)
	}
}

// notePresence keeps d.present up to date with one event.
func (d *daemon) notePresence(ev *uevent.Event) {
	d.presentMu.Lock()
	defer d.presentMu.Unlock()
	switch ev.Action {
	case "remove":
		delete(d.present, ev.DevPath)
	case "move":
		delete(d.present, ev.Get("DEVPATH_OLD"))
		d.present[ev.DevPath] = ev.Subsystem
	default:
		if d.present[ev.DevPath] != ev.Subsystem {
			d.present[ev.DevPath] = ev.Subsystem
		}
	}
}

// presentDevices is a copy of d.present.
func (d *daemon) presentDevices() map[string]string {
	d.presentMu.Lock()
	defer d.presentMu.Unlock()
	return maps.Clone(d.present)
}

// removeEvent builds the "remove" of a device that vanished unseen, from
// what the device database recorded, else from its devpath and subsystem.
func (d *daemon) removeEvent(devpath, subsystem string) (*uevent.Event, bool) {
	props, ok := d.devs.Recorded(devpath)
	if !ok {
		props = []uevent.Property{{Key: "DEVPATH", Value: devpath}, {Key: "SUBSYSTEM", Value: subsystem}}
	}
	out := make([]uevent.Property, 0, len(props))
	for _, p := range props {
		switch p.Key {
		case "ACTION", "SEQNUM":
			continue
		}
		out = append(out, p)
	}
	out = append(out, uevent.Property{Key: "ACTION", Value: "remove"}, uevent.Property{Key: "SEQNUM", Value: "0"})
	ev, err := uevent.FromProps(out)
	if err != nil {
		return nil, false
	}
	ev.Source = uevent.SourceResync
	return &ev, true
}

// reconcileMounts cleans up mounts of devices that are gone.
func (d *daemon) reconcileMounts(ctx context.Context) {
	rep, err := d.deps.Mounter.Reconcile(ctx, nil)
	if err != nil {
		d.log.Error("reconciling mounts", "err", err)
	}
	for _, e := range rep.Cleaned {
		d.log.Info("cleaned up the mount of a device that is gone", "path", e.MountPoint, "devnode", e.Device.Devnode)
	}
	for _, e := range rep.Failed {
		d.log.Error("could not clean up the mount of a device that is gone; will retry", "path", e.MountPoint, "devnode", e.Device.Devnode)
	}
	if len(rep.Kept)+len(rep.Cleaned)+len(rep.Failed) > 0 {
		d.log.Info("mounts reconciled", "kept", len(rep.Kept), "cleaned", len(rep.Cleaned), "failed", len(rep.Failed))
	}
}

// errLimiter lets through a few log lines per key and period, counting
// the rest, so a device that fails on every event cannot flood the log.
type errLimiter struct {
	mu     sync.Mutex
	period time.Duration
	burst  int
	keys   map[string]*limitState
}

type limitState struct {
	start      time.Time
	n          int
	suppressed int
}

func (l *errLimiter) init(period time.Duration, burst int) {
	l.period, l.burst, l.keys = period, burst, make(map[string]*limitState)
}

// allow reports whether to log for key now, and how many lines were
// suppressed since the last one that was let through.
func (l *errLimiter) allow(key string) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	s := l.keys[key]
	if s == nil || now.Sub(s.start) > l.period {
		if len(l.keys) > 4096 {
			clear(l.keys)
		}
		prev := 0
		if s != nil {
			prev = s.suppressed
		}
		l.keys[key] = &limitState{start: now, n: 1}
		return true, prev
	}
	if s.n < l.burst {
		s.n++
		return true, 0
	}
	s.suppressed++
	return false, 0
}
