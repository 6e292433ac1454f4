package actions

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/hotplugd/hotplugd/internal/actions/run"
	"github.com/hotplugd/hotplugd/internal/rules"
)

type runAction struct {
	spec *rules.RunSpec
	user *run.Credential
	deps *Deps
}

func newRun(a rules.Action, deps *Deps) (Action, error) {
	spec := a.(*rules.RunSpec)
	act := &runAction{spec: spec, deps: deps}
	if spec.User != nil {
		act.user = run.NewCredential(spec.User)
	}
	return act, nil
}

// Do renders argv and the rule's environment, each template one string,
// and runs the program (see run.Runner.Run).
func (a *runAction) Do(ctx context.Context, c *Context) (Step, error) {
	st := Step{Kind: "run", Timeout: a.spec.Timeout}
	if a.user != nil {
		st.User = a.user.Name
	}
	for i, t := range a.spec.Argv {
		v, err := t.Render(c.Env)
		if err != nil {
			return st, fmt.Errorf("argv[%d] %s: %w", i, t, err)
		}
		st.Argv = append(st.Argv, v)
	}
	for _, k := range slices.Sorted(maps.Keys(a.spec.Env)) {
		v, err := a.spec.Env[k].Render(c.Env)
		if err != nil {
			return st, fmt.Errorf("env %s: %w", k, err)
		}
		st.Env = append(st.Env, k+"="+v)
	}
	if a.deps.PlanOnly {
		return st, nil
	}
	_, err := a.deps.Runner.Run(ctx, run.RunRequest{
		Argv: st.Argv, Env: st.Env, Event: c.Event, DevNode: c.Dev.DevNode(), Rule: c.Rule,
		User: a.user, Timeout: a.spec.Timeout,
	})
	return st, err
}
