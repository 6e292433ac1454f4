package actions

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/hotplugd/hotplugd/internal/rules"
)

// Notifier delivers notifications to targets other than the log. It lives
// as long as the daemon, so queues survive a reload.
type Notifier struct {
	Log *slog.Logger
}

type notifyAction struct {
	spec *rules.NotifySpec
	deps *Deps
}

func newNotify(a rules.Action, deps *Deps) (Action, error) {
	return &notifyAction{spec: a.(*rules.NotifySpec), deps: deps}, nil
}

// Do logs the message; the log is always a target.
func (a *notifyAction) Do(_ context.Context, c *Context) error {
	msg, err := a.spec.Message.Render(c.Env)
	if err != nil {
		return fmt.Errorf("message: %w", err)
	}
	a.deps.Log.Info("notification", "rule", c.Rule, "devpath", c.Event.DevPath, "message", msg)
	return nil
}
