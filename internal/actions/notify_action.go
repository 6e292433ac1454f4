package actions

import (
	"context"
	"fmt"

	"github.com/hotplugd/hotplugd/internal/actions/notify"
	"github.com/hotplugd/hotplugd/internal/rules"
)

type notifyAction struct {
	spec   *rules.NotifySpec
	sender *notify.Sender
	deps   *Deps
}

func newNotify(a rules.Action, deps *Deps) (Action, error) {
	spec := a.(*rules.NotifySpec)
	act := &notifyAction{spec: spec, deps: deps}
	if deps.PlanOnly {
		return act, nil
	}
	s, err := notify.NewSender(deps.Notifier, deps.Log, spec.Targets)
	if err != nil {
		return nil, err
	}
	act.sender = s
	return act, nil
}

// Do renders the message and hands it to the targets (see
// notify.Sender.Send): it never waits for a delivery. The webhook
// document asks the device for fs.*, cached if a match or template read it
// already, on the goroutine that handles the event, as rules.Device
// requires.
func (a *notifyAction) Do(ctx context.Context, c *Context) (Step, error) {
	st := Step{Kind: "notify", Targets: a.spec.Targets}
	msg, err := a.spec.Message.Render(c.Env)
	if err != nil {
		return st, fmt.Errorf("message: %w", err)
	}
	st.Message = msg
	if a.deps.PlanOnly {
		return st, nil
	}
	return st, a.sender.Send(ctx, notify.Notification{
		Rule: c.Rule, Message: msg, Event: c.Event, DevNode: c.Dev.DevNode(), FS: c.Dev.FS, MountPath: c.MountPath,
	})
}
