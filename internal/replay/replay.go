package replay

import (
	"context"
	"log/slog"
	"path/filepath"

	"github.com/hotplugd/hotplugd/internal/actions"
	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/device"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// Facts says what the device of an event answered from.
type Facts uint8

// What answered.
const (
	Recorded    Facts = iota // the event's walk and filesystem
	NotRecorded              // nothing: the event has no walk ("" and false)
	Remembered               // a remove: what the replay learnt of the device before
	Unknown                  // a remove of a device no earlier event told of ("" and false)
)

// Outcome is what the rules did with one event.
type Outcome struct {
	Event
	Facts   Facts
	FS      uevent.FS      // of a block device, as fs.* answered (or would have)
	Matched []*rules.Rule  // in file order
	Failed  []rules.Result // rules whose match failed to evaluate
	Steps   []Step         // every action, in the order it ran
}

// Step is what one action would do.
type Step struct {
	Rule *rules.Rule // nil: the unmount that follows a removal
	actions.Step
	Err  error
	Left int // actions of the rule this one kept from running
}

// Replayer replays events in order through one rule set. It is not safe
// for concurrent use: the order is the replay.
type Replayer struct {
	rs      *rules.RuleSet
	set     *actions.Set
	devs    *device.Manager
	readsFS bool
	results []rules.Result
}

// New builds rs's actions plan-only, with a simulated mounter at its
// mount_root (mount.Config.Simulated), and a device database as the
// daemon's.
func New(rs *rules.RuleSet) (*Replayer, error) {
	deps := &actions.Deps{PlanOnly: true, Log: slog.New(slog.DiscardHandler)}
	deps.Mounter, deps.MountErr = mount.NewMounter(mount.Config{
		MountRoot: rs.Settings.MountRoot,
		StatePath: filepath.Join(rs.Settings.StateDir, "mounts.json"),
		Simulated: true,
	})
	if deps.MountErr != nil {
		deps.Mounter = nil // mounts then fail, saying why
	}
	set, err := actions.Build(rs, deps)
	if err != nil {
		return nil, err
	}
	return &Replayer{rs: rs, set: set, devs: device.NewRecorded(device.Config{}), readsFS: rs.ReadsFS()}, nil
}

// Close releases the device database.
func (r *Replayer) Close() { r.devs.Close() }

// Replay runs one event through the rules as the daemon's handler does,
// and returns what they did.
func (r *Replayer) Replay(ctx context.Context, ev Event) Outcome {
	rec := &ev.Rec
	o := Outcome{Event: ev, Facts: facts(rec, r.devs)}
	dev := r.devs.ForRecording(ctx, rec)
	if r.readsFS {
		dev.PrefetchFS()
	}
	r.results = r.rs.AppendMatch(r.results[:0], &rec.Event, dev)
	for _, res := range r.results {
		switch res.Status {
		case rules.Matched:
			o.Matched = append(o.Matched, res.Rule)
		case rules.Failed:
			o.Failed = append(o.Failed, res)
		}
	}
	if len(o.Matched) > 0 || rec.Event.Action == "remove" && rec.Event.Subsystem == "block" {
		r.set.Run(ctx, &rec.Event, dev, o.Matched, observer{&o})
	}
	dev.Done()
	if rec.Event.Subsystem == "block" {
		o.FS = dev.FS() // after Done: the answer is not recorded, so showing it changes nothing
	}
	return o
}

// facts says what the device of rec will answer from.
func facts(rec *uevent.Recording, devs *device.Manager) Facts {
	switch {
	case rec.Event.Action != "remove" && rec.Walk == nil:
		return NotRecorded
	case rec.Event.Action != "remove":
		return Recorded
	}
	if _, ok := devs.Recorded(rec.Event.DevPath); ok {
		return Remembered
	}
	return Unknown
}

// observer collects the steps of an Outcome.
type observer struct{ o *Outcome }

func (observer) Matched(*rules.Rule) {}

func (ob observer) Did(r *rules.Rule, st actions.Step, err error) {
	o := ob.o
	if r == nil && err == nil && st.MountPath == "" && st.Mapping == "" {
		return // the removal of a device the replay neither mounted nor unlocked: the daemon does nothing
	}
	o.Steps = append(o.Steps, Step{Rule: r, Step: st, Err: err})
}

func (ob observer) Ended(_ *rules.Rule, left int) { ob.o.Steps[len(ob.o.Steps)-1].Left = left }
