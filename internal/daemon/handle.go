package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// handle runs the rules for one event; the dispatcher calls it in order
// per device.
func (d *daemon) handle(ctx context.Context, ev *uevent.Event) {
	defer d.handled.Add(1)
	d.metrics.EventHandled(ev.Subsystem, ev.Action)
	if ev.Source == uevent.SourceColdplug && !uevent.IsRouteAction(ev.Action) { // not the links' and addresses' of start
		defer d.coldplugDone()
	}
	d.notePresence(ev)
	st := d.state.Load()
	media := ev.MediaChange()
	if media {
		d.mediaGone(ev)
		defer d.mediaArrived(ctx, ev) // after this event's own rules
	}
	d.pollMedia(ev, st)
	dev := d.devs.For(ctx, *ev)
	defer dev.Done()
	if d.log.Enabled(ctx, slog.LevelDebug) { // its arguments cost allocations on every event
		d.log.Debug("event", "action", ev.Action, "devpath", ev.DevPath, "subsystem", ev.Subsystem,
			"seqnum", ev.Seqnum, "source", ev.Source)
	}
	if st.readsFS {
		dev.PrefetchFS() // recorded by Done, for the remove rules
	}
	// The matched rules go into a buffer kept across events: nothing is
	// allocated per event of a storm that matches no rule.
	buf := d.matched.Get().(*[]*rules.Rule)
	defer func() { clear(*buf); d.matched.Put(buf) }()
	*buf = st.rs.AppendMatched((*buf)[:0], ev, dev)
	if d.broker.Wants(len(*buf)) {
		d.broker.Event(ev, *buf) // to the outbox: never waits for the broker
	}
	if len(*buf) > 0 || ev.Action == "remove" && ev.Subsystem == "block" {
		end := d.inflight.begin(ev, *buf)
		st.acts.Run(d.actx, ev, dev, *buf, eventObserver{d: d, ev: ev})
		end()
	}
}

// eventObserver counts and logs what the actions of one event did.
type eventObserver struct {
	d  *daemon
	ev *uevent.Event
}

func (o eventObserver) Matched(r *rules.Rule) {
	ev := o.ev
	o.d.metrics.Rule(r.Name).Matched(time.Now())
	o.d.log.Info("rule matched", "rule", r.Name, "action", ev.Action, "devpath", ev.DevPath,
		"devname", ev.DevName, "seqnum", ev.Seqnum, "source", ev.Source)
}

func (o eventObserver) Did(r *rules.Rule, st actions.Step, err error) {
	if st.Kind == "mount" || st.Kind == "unmount" {
		defer o.d.mountsChanged()
	}
	if r == nil { // the unmount of a removed device: only its failure counts as an action's
		result := "ok"
		if err != nil {
			result = o.d.finish(o.ev, removalRule, st.Kind, err)
		}
		o.d.metrics.Rule(removalRule).Action(st.Kind, result, st.Duration)
		return
	}
	o.d.metrics.Rule(r.Name).Action(st.Kind, o.d.finish(o.ev, r.Name, st.Kind, err), st.Duration)
}

// removalRule names, in logs and metrics, the unmount that follows the
// removal of a block device whatever the rules say.
const removalRule = "(removal)"

func (o eventObserver) Ended(r *rules.Rule, left int) {
	o.d.log.Info("later actions of the rule not run", "rule", r.Name, "devpath", o.ev.DevPath, "skipped", left)
}

// finish counts and logs the outcome of one action, and says what it
// was: ok, skipped or failed.
func (d *daemon) finish(ev *uevent.Event, rule, kind string, err error) string {
	switch {
	case err == nil:
		d.actionsOK.Add(1)
		return "ok"
	case errors.Is(err, actions.ErrSkipped):
		d.actionsOK.Add(1)
		d.log.Info("action skipped", "rule", rule, "action", kind, "devpath", ev.DevPath, "reason", err)
		return "skipped"
	default:
		d.actionsFailed.Add(1)
		d.setLastErr(fmt.Sprintf("%s: %s: %v", rule, kind, err))
		if ok, suppressed := d.errLog.Allow(ev.DevPath+"\x00"+rule, time.Now()); ok {
			d.log.Error("action failed", "rule", rule, "action", kind, "devpath", ev.DevPath,
				"err", err, "suppressed", suppressed)
		}
		return "failed"
	}
}
