package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions"
	"github.com/hotplugd/hotplugd/internal/actions/crypt"
	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/actions/notify"
	"github.com/hotplugd/hotplugd/internal/actions/run"
	"github.com/hotplugd/hotplugd/internal/actions/scope"
	"github.com/hotplugd/hotplugd/internal/broker"
	"github.com/hotplugd/hotplugd/internal/control"
	"github.com/hotplugd/hotplugd/internal/device"
	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/listener"
	"github.com/hotplugd/hotplugd/internal/metrics"
	"github.com/hotplugd/hotplugd/internal/ratelimit"
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
	// Version is the daemon's version, for status and metrics.
	Version string

	// openSource opens what events come from; nil opens the netlink
	// listener of the rules' source. Tests pass their own.
	openSource func(rules.Settings, host.Roots, *slog.Logger) (eventSource, error)
	// crypt runs cryptsetup for the unlocks; nil is the system's. Tests
	// pass a fake, where the kernel has no device-mapper.
	crypt *crypt.Cryptsetup
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
	if c.openSource == nil {
		c.openSource = openListener
	}
}

// eventSource is what the daemon reads events from: the netlink listener
// (*listener.Listener).
type eventSource interface {
	// Run delivers events and overruns to h until ctx ends or Close.
	Run(ctx context.Context, h listener.Handler) error
	Source() uevent.Source
	Stats() listener.Stats
	Close() error
}

func openListener(s rules.Settings, roots host.Roots, log *slog.Logger) (eventSource, error) {
	return listener.New(listener.Config{Source: s.Source, Roots: roots}, log)
}

// ruleState is one loaded rules file with its built actions. Events take
// the state current when they start and finish on it, across reloads.
type ruleState struct {
	rs      *rules.RuleSet
	acts    *actions.Set
	readsFS bool // some match reads fs.*: probe block devices on add
	mounts  bool // some rule mounts
}

type daemon struct {
	cfg      Config
	log      *slog.Logger
	sd       notifier
	src      eventSource
	net      eventSource // the route listener (settings.network), or nil
	devs     *device.Manager
	deps     *actions.Deps
	disp     *dispatcher
	state    atomic.Pointer[ruleState]
	errLog   ratelimit.Keyed
	inflight inflight
	metrics  *metrics.Registry
	control  *control.Server
	extra    *exposition    // metrics on TCP and in a textfile, when set
	broker   *broker.Client // settings.mqtt's, nil without one

	startedAt time.Time
	reloadMu  sync.Mutex // one load of the rules file at a time
	config    atomic.Pointer[control.ConfigStatus]

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
	d, err := newDaemon(cfg)
	if err != nil {
		return err
	}
	defer d.close()
	return d.serve(ctx)
}

// newDaemon loads the rules and opens everything the daemon needs: the
// event source (bound, so events queue from now on), the device manager
// and the actions' executors.
func newDaemon(cfg Config) (_ *daemon, err error) {
	cfg.defaults()
	d := &daemon{cfg: cfg, log: cfg.Logger, sd: notifier{log: cfg.Logger}, present: make(map[string]string),
		errLog: ratelimit.Keyed{Period: time.Minute, Burst: 3}}
	d.matched.New = func() any { return new([]*rules.Rule) }
	d.startedAt = time.Now()
	d.metrics = metrics.New(cfg.Version)
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	st, err := d.load(nil)
	if err != nil {
		return nil, err
	}
	d.noteLoad(nil)
	settings := st.rs.Settings
	cfg.Level.Set(settings.LogLevel)
	checkMountNamespace(d.log, cfg.Roots)
	if d.src, err = cfg.openSource(settings, cfg.Roots, d.log); err != nil {
		return nil, err
	}
	if settings.Network {
		if d.net, err = openRoute(settings, cfg.Roots, d.log); err != nil {
			return nil, err
		}
	}
	if d.devs, err = device.New(device.Config{Roots: cfg.Roots, Logger: d.log}); err != nil {
		return nil, err
	}
	if err := d.openBroker(settings); err != nil {
		return nil, err
	}
	d.deps = newDeps(settings, cfg.Roots, cfg.crypt, d.log, d.notifyPublisher())
	d.deps.Probe = d.devs.Probe // the cleartext of an unlock
	if errors.Is(d.deps.MountErr, mount.ErrLocked) {
		return nil, d.deps.MountErr
	}
	if st.acts, err = actions.Build(st.rs, d.deps); err != nil {
		return nil, err
	}
	d.state.Store(st)
	d.registerMetrics()
	if d.control, err = d.listenControl(settings.Control); err != nil {
		return nil, err
	}
	return d, nil
}

// listenControl makes the control socket. One a live daemon answers on
// is an error; as an ordinary user, who cannot make /run/hotplugd, the
// daemon goes on without one.
func (d *daemon) listenControl(c rules.ControlSettings) (*control.Server, error) {
	srv, err := control.Listen(control.Config{Socket: c.Socket, Group: c.GID, Handlers: controlHandlers{d}, Log: d.log})
	switch {
	case err == nil:
		return srv, nil
	case errors.Is(err, control.ErrLive) || os.Geteuid() == 0:
		return nil, err
	}
	d.log.Warn("no control socket", "err", err)
	return nil, nil
}

// newDeps makes the actions' executors. Mounting needs root; as another
// user everything else works for what that user may do.
func newDeps(s rules.Settings, roots host.Roots, cs *crypt.Cryptsetup, log *slog.Logger, mqtt notify.Publisher) *actions.Deps {
	scopes := scope.New(roots, log)
	deps := &actions.Deps{Log: log, Runner: &run.Runner{Log: log},
		Notifier: notify.NewNotifier(notify.NotifierConfig{Log: log, Scopes: scopes, MQTT: mqtt})}
	if uid := os.Geteuid(); uid != 0 {
		deps.MountErr = fmt.Errorf("hotplugd runs as uid %d, and mounting needs root", uid)
	} else {
		deps.Mounter, deps.MountErr = mount.NewMounter(mount.Config{
			MountRoot: s.MountRoot,
			StatePath: filepath.Join(s.StateDir, "mounts.json"),
			Roots:     roots,
			Logger:    log,
			Scopes:    scopes,
			Crypt:     cs,
		})
	}
	if deps.MountErr != nil && !errors.Is(deps.MountErr, mount.ErrLocked) {
		log.Warn("mounting is disabled", "err", deps.MountErr)
	}
	return deps
}

// close releases what newDaemon opened; notifications still queued get a
// few seconds to go out.
func (d *daemon) close() {
	if d.deps != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.deps.Notifier.Close(ctx)
		if d.deps.Mounter != nil {
			d.deps.Mounter.Close()
		}
	}
	d.closeBroker()
	if d.devs != nil {
		d.devs.Close()
	}
	if d.control != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		d.control.Close(ctx)
		cancel()
	}
	if d.src != nil {
		d.src.Close()
	}
	if d.net != nil {
		d.net.Close()
	}
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
	st := &ruleState{rs: rs, readsFS: rs.ReadsFS()}
	for _, r := range rs.Rules {
		for _, a := range r.Actions {
			st.mounts = st.mounts || a.Kind() == "mount"
		}
	}
	if old != nil {
		if st.acts, err = actions.Build(rs, d.deps); err != nil {
			return nil, err
		}
		a, b := old.rs.Settings, rs.Settings
		if a.Source != b.Source || a.Workers != b.Workers || a.MountRoot != b.MountRoot || a.StateDir != b.StateDir || a.Coldplug != b.Coldplug || a.Network != b.Network {
			d.log.Warn("source, workers, coldplug, network, mount_root and state_dir take effect at the next start; the rest is in force now")
		}
		d.warnMQTTReload(a.MQTT, b.MQTT)
	}
	return st, nil
}

// reload is SIGHUP and `hotplugd reload`: a bad file keeps the old rules
// in force.
func (d *daemon) reload() (*ruleState, error) {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	d.sd.reloading()
	st, err := d.load(d.state.Load())
	d.noteLoad(err)
	if err != nil {
		first, _, _ := strings.Cut(err.Error(), "\n")
		d.setLastErr("reload failed: " + first)
		d.log.Error("reload failed; the previous rules stay in force", "file", d.cfg.RulesPath, "err", err)
		d.sd.ready(d.status())
		return nil, err
	}
	d.state.Store(st)
	d.cfg.Level.Set(st.rs.Settings.LogLevel)
	d.setLastErr("")
	d.log.Info("rules reloaded", "file", st.rs.File, "rules", len(st.rs.Rules))
	d.sd.ready(d.status())
	return st, nil
}

// noteLoad records the outcome of a load of the rules file.
func (d *daemon) noteLoad(err error) {
	c := control.ConfigStatus{Path: d.cfg.RulesPath, ReloadOK: err == nil}
	if old := d.config.Load(); old != nil {
		c.LoadedAt = old.LoadedAt
	}
	if err == nil {
		c.LoadedAt = time.Now()
	} else {
		c.Error = err.Error()
	}
	d.config.Store(&c)
}

func (d *daemon) configStatus() control.ConfigStatus { return *d.config.Load() }

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
		len(st.rs.Rules), d.handled.Load(), d.actionsOK.Load(), d.actionsFailed.Load(), mounts) + d.trouble()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lastErr != "" {
		s += "; last error: " + d.lastErr
	}
	return s
}
