package actions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/user"
	"strconv"

	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// Context is what an action knows of the event it runs for. Actions of
// one rule share it, so a mount's path is seen by the actions after it
// ({{ mount.path }}).
type Context struct {
	Event *uevent.Event
	Dev   rules.Device
	Env   *rules.Env
	Rule  string
	// MountPath is set by a mount action for the actions after it.
	MountPath string
}

// NewContext returns the context of the actions of one matched rule.
func NewContext(ev *uevent.Event, dev rules.Device, rule string) *Context {
	return &Context{Event: ev, Dev: dev, Env: rules.NewEnv(ev, dev), Rule: rule}
}

// Action is one built action of a rule.
type Action interface {
	Do(ctx context.Context, c *Context) error
}

// Deps are the long-lived executors actions use. Mounter is nil when
// mounting is not possible (MountErr says why, e.g. not root).
type Deps struct {
	Log      *slog.Logger
	Runner   *Runner
	Mounter  *Mounter
	MountErr error
	Notifier *Notifier
}

// constructors is the table from a rules-file action key to what builds
// it; Build consults nothing else.
var constructors = map[string]func(rules.Action, *Deps) (Action, error){
	"run":     newRun,
	"mount":   newMount,
	"unmount": newUnmount,
	"notify":  newNotify,
}

// Build builds the actions of every rule of rs, in order, keyed by rule
// name. It is called when rules load, so nothing is looked up per event.
func Build(rs *rules.RuleSet, deps *Deps) (map[string][]Action, error) {
	out := make(map[string][]Action, len(rs.Rules))
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
			out[r.Name] = append(out[r.Name], a)
		}
	}
	return out, errors.Join(errs...)
}

type runAction struct {
	spec *rules.RunSpec
	user *Credential
	deps *Deps
}

func newRun(a rules.Action, deps *Deps) (Action, error) {
	spec := a.(*rules.RunSpec)
	act := &runAction{spec: spec, deps: deps}
	if spec.User != nil {
		cred, err := credential(spec.User)
		if err != nil {
			return nil, err
		}
		act.user = cred
	}
	return act, nil
}

// credential resolves a user's supplementary groups and home once, at load.
func credential(u *rules.User) (*Credential, error) {
	c := &Credential{Uid: u.UID, Gid: u.GID, Name: u.Name, Home: "/"}
	pw, err := user.LookupId(strconv.FormatUint(uint64(u.UID), 10))
	if err != nil {
		return nil, fmt.Errorf("user %s: %w", u.Name, err)
	}
	if pw.HomeDir != "" {
		c.Home = pw.HomeDir
	}
	gids, err := pw.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("groups of user %s: %w", u.Name, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err == nil {
			c.Groups = append(c.Groups, uint32(n))
		}
	}
	return c, nil
}

func (a *runAction) Do(ctx context.Context, c *Context) error {
	argv := make([]string, len(a.spec.Argv))
	for i, t := range a.spec.Argv {
		v, err := t.Render(c.Env)
		if err != nil {
			return fmt.Errorf("argv[%d] %s: %w", i, t, err)
		}
		argv[i] = v
	}
	var env []string
	for k, t := range a.spec.Env {
		v, err := t.Render(c.Env)
		if err != nil {
			return fmt.Errorf("env %s: %w", k, err)
		}
		env = append(env, k+"="+v)
	}
	_, err := a.deps.Runner.Run(ctx, RunRequest{
		Argv: argv, Env: env, Event: c.Event, Rule: c.Rule, User: a.user, Timeout: a.spec.Timeout,
	})
	return err
}

// errNoMounter is the clear error of a mount or unmount that cannot work
// at all in this process.
var errNoMounter = errors.New("mounting is not available")

type mountAction struct {
	spec *rules.MountSpec
	deps *Deps
}

func newMount(a rules.Action, deps *Deps) (Action, error) {
	spec := a.(*rules.MountSpec)
	if err := ValidateMountOptions(spec.Options); err != nil {
		return nil, err
	}
	return &mountAction{spec: spec, deps: deps}, nil
}

// Request is the MountRequest of the action.
func (a *mountAction) request(rule string) MountRequest {
	req := MountRequest{Rule: rule, Options: a.spec.Options, Exec: a.spec.Exec}
	if a.spec.Owner != nil {
		req.UID, req.GID = a.spec.Owner.UID, a.spec.Owner.GID
	}
	return req
}

func (a *mountAction) Do(ctx context.Context, c *Context) error {
	if a.deps.Mounter == nil {
		return fmt.Errorf("%w: %v", errNoMounter, a.deps.MountErr)
	}
	dev, err := DeviceOf(c.Event, c.Dev)
	if err != nil {
		return err
	}
	if a.spec.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.spec.Timeout)
		defer cancel()
	}
	e, err := a.deps.Mounter.Mount(ctx, dev, a.request(c.Rule))
	if err != nil {
		return err
	}
	c.MountPath = e.MountPoint
	c.Env.SetMountPath(e.MountPoint)
	a.deps.Log.Info("mounted", "rule", c.Rule, "devnode", dev.Devnode, "path", e.MountPoint,
		"type", e.FSType, "options", e.Options)
	return nil
}

// PlanMount is what the mount action of spec would do for the event,
// computed without creating or mounting anything.
func PlanMount(m *Mounter, spec *rules.MountSpec, rule string, ev *uevent.Event, d rules.Device) (Plan, error) {
	dev, err := DeviceOf(ev, d)
	if err != nil {
		return Plan{}, err
	}
	return m.Plan(dev, (&mountAction{spec: spec}).request(rule))
}

type unmountAction struct{ deps *Deps }

func newUnmount(_ rules.Action, deps *Deps) (Action, error) { return &unmountAction{deps: deps}, nil }

func (a *unmountAction) Do(ctx context.Context, c *Context) error {
	if a.deps.Mounter == nil {
		return fmt.Errorf("%w: %v", errNoMounter, a.deps.MountErr)
	}
	_, err := UnmountDevice(ctx, a.deps.Mounter, a.deps.Log, c.Event, c.Dev)
	return err
}

// UnmountDevice unmounts what hotplugd mounted for the event's device and
// logs the outcome; a device hotplugd did not mount is not an error.
// Removal calls it for every block device, whatever the rules say.
func UnmountDevice(ctx context.Context, m *Mounter, log *slog.Logger, ev *uevent.Event, d rules.Device) (UnmountResult, error) {
	dev, err := DeviceOf(ev, d)
	if err != nil {
		return UnmountResult{}, err
	}
	res, err := m.Unmount(ctx, dev)
	switch {
	case errors.Is(err, ErrNotMounted):
		return res, nil
	case err != nil:
		return res, err
	case res.Lazy:
		log.Warn("removed while in use: lazily unmounted", "devnode", dev.Devnode, "path", res.Entry.MountPoint,
			"dir_removed", res.DirRemoved)
	default:
		log.Info("unmounted", "devnode", dev.Devnode, "path", res.Entry.MountPoint, "dir_removed", res.DirRemoved)
	}
	return res, nil
}

// DeviceOf describes the event's block device for Mount and Unmount.
func DeviceOf(ev *uevent.Event, d rules.Device) (Device, error) {
	dev := Device{Devpath: ev.DevPath, Devnode: ev.DevNode(), Devname: ev.DevName}
	major, err1 := strconv.ParseUint(ev.Get("MAJOR"), 10, 32)
	minor, err2 := strconv.ParseUint(ev.Get("MINOR"), 10, 32)
	if err1 != nil || err2 != nil {
		return Device{}, fmt.Errorf("%s: %w", ev.DevPath, errDeviceNumber)
	}
	dev.Major, dev.Minor = uint32(major), uint32(minor)
	if ev.Action != "remove" {
		fs := d.FS()
		dev.FSUsage, dev.FSType, dev.Label, dev.UUID = fs.Usage, fs.Type, fs.Label, fs.UUID
		dev.PartUUID = ev.Get("ID_PART_ENTRY_UUID")
		dev.PartLabel = ev.Get("ID_PART_ENTRY_NAME")
	}
	return dev, nil
}
