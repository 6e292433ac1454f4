package actions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/actions/notify"
	"github.com/hotplugd/hotplugd/internal/actions/run"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// ErrSkipped is wrapped by the error of an action that deliberately did
// nothing (a device that is not a filesystem, one listed in fstab): it
// still ends its rule, but is worth an info line, not an error.
var ErrSkipped = mount.ErrSkipped

// Context is what the actions of one matched rule share: the event, its
// device and the expression environment, in which a mount sets
// {{ mount.path }} for the actions after it.
type Context struct {
	Event *uevent.Event
	Dev   rules.Device
	Env   *rules.Env
	Rule  string
	// MountPath is set by a mount (or unmount) for the actions after it.
	MountPath string
	// Unlocked is the mapping an unlock opened (with PlanOnly, would
	// open), for the actions after it: a mount mounts its cleartext.
	Unlocked *mount.Mapping
}

func newContext(ev *uevent.Event, dev rules.Device, rule string) *Context {
	if dev == nil {
		dev = rules.EventOnly{Event: ev}
	}
	return &Context{Event: ev, Dev: dev, Env: rules.NewEnv(ev, dev), Rule: rule}
}

func (c *Context) setMountPath(path string) {
	c.MountPath = path
	c.Env.SetMountPath(path)
}

func (c *Context) setUnlocked(mp *mount.Mapping) {
	c.Unlocked = mp
	c.Env.SetUnlockDevice(mp.Cleartext.Devnode)
}

// Step is what one action did, or with Deps.PlanOnly would do: its
// templates rendered and its defaults applied by the same code either way.
type Step struct {
	Kind    string        // run, mount, unmount, notify, unlock
	Argv    []string      // run: after templates; unlock: cryptsetup's open; unmount: the close of a mapping
	Env     []string      // run: the rule's NAME=VALUE additions, by name
	User    string        // run: its user, mount: the owner; "" the daemon's user (run) or root (mount)
	Timeout time.Duration // run, mount, unlock
	Devnode string        // mount, unmount, unlock
	// MountPath is where a mount mounted (or would), or where an unmount
	// unmounted from; "" when nothing was, or a dry run cannot know.
	MountPath string
	Mount     *mount.Plan // PlanOnly mount: filesystem, driver, the whole option string
	Lazy      bool        // unmount: the filesystem was busy and was detached lazily
	Message   string      // notify: after templates
	Targets   []rules.Target
	Duration  time.Duration // how long it took

	// Mapping is the LUKS mapping an unlock opens, or that an unmount
	// closed after unmounting its cleartext.
	Mapping string
	// Cleartext is the device an unlock opens, /dev/mapper/<Mapping>.
	Cleartext string
	// Keyfile is the key's path (its contents are never in a Step).
	Keyfile string
	// Opened: the unlock found the mapping open already, by hotplugd for
	// this device (before a restart).
	Opened bool
	// Deferred: the mapping an unmount closed was in use; the kernel
	// removes it once its last user lets go.
	Deferred bool
}

// Action is one built action of a rule.
type Action interface {
	Do(ctx context.Context, c *Context) (Step, error)
}

// Deps are the long-lived executors actions use. Mounter is nil when
// mounting is not possible (MountErr says why, e.g. not root). With
// PlanOnly, actions render, resolve and plan, and execute nothing; the
// Mounter is then a plan-only one. Probe is the filesystem probe of a
// block device by its kernel name, for the cleartext of an unlock
// (device.Manager.Probe).
type Deps struct {
	Log      *slog.Logger
	Runner   *run.Runner
	Mounter  *mount.Mounter
	MountErr error
	Notifier *notify.Notifier
	PlanOnly bool
	Probe    func(ctx context.Context, devname string) (uevent.FS, error)
}

// constructors is the table from a rules-file action key to what builds
// it; Build consults nothing else.
var constructors = map[string]func(rules.Action, *Deps) (Action, error){
	"run":     newRun,
	"mount":   newMount,
	"unmount": newUnmount,
	"notify":  newNotify,
	"unlock":  newUnlock,
}

// Set is the built actions of a rule set.
type Set struct {
	deps *Deps
	acts map[string][]Action // by rule name
}

// Build builds the actions of every rule of rs, in order. It is called
// when rules load, so nothing is looked up per event.
func Build(rs *rules.RuleSet, deps *Deps) (*Set, error) {
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	s := &Set{deps: deps, acts: make(map[string][]Action, len(rs.Rules))}
	var errs []error
	for _, r := range rs.Rules {
		for _, spec := range r.Actions {
			mk, ok := constructors[spec.Kind()]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: rule %q: no action %q", spec.Position(), r.Name, spec.Kind()))
				continue
			}
			a, err := mk(spec, deps)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: rule %q: %s: %w", spec.Position(), r.Name, spec.Kind(), err))
				continue
			}
			s.acts[r.Name] = append(s.acts[r.Name], a)
		}
	}
	return s, errors.Join(errs...)
}

// Observer hears what the actions of one event did: the daemon counts and
// logs it, the dry run prints it.
type Observer interface {
	// Matched is called before the actions of each matched rule.
	Matched(r *rules.Rule)
	// Did is called after each action with what it did and its error.
	// r is nil for the unmount that follows the removal of a device.
	Did(r *rules.Rule, st Step, err error)
	// Ended is called when a failed or skipped action ends r before its
	// last action; left actions are not run.
	Ended(r *rules.Rule, left int)
}

// Run runs the actions of the rules that matched ev, rule by rule in
// order. A rule's actions run in order, and a failed or skipped one ends
// the rule: a run after a mount must not get an empty {{ mount.path }}.
// Then, when a block device is removed, what hotplugd mounted for it is
// unmounted, and the LUKS mappings it opened on it closed, whatever the
// rules said.
func (s *Set) Run(ctx context.Context, ev *uevent.Event, dev rules.Device, matched []*rules.Rule, obs Observer) {
	for _, r := range matched {
		obs.Matched(r)
		c := newContext(ev, dev, r.Name)
		acts := s.acts[r.Name]
		for i, a := range acts {
			start := time.Now()
			st, err := a.Do(ctx, c)
			st.Duration = time.Since(start)
			obs.Did(r, st, err)
			if err != nil && i < len(acts)-1 {
				obs.Ended(r, len(acts)-1-i)
				break
			}
		}
	}
	if ev.Action == "remove" && ev.Subsystem == "block" && s.deps.Mounter != nil {
		start := time.Now()
		st, err := releaseDevice(ctx, s.deps, newContext(ev, dev, ""))
		st.Duration = time.Since(start)
		if err != nil || st.MountPath != "" || st.Mapping != "" || s.deps.PlanOnly {
			obs.Did(nil, st, err)
		}
	}
}
