package daemon

import (
	"fmt"
	"sync"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// stuckSlack is added to the sum of an event's action timeouts to give
// the deadline after which the event counts as stuck: killing, grace
// periods and cleanup fit in it many times over.
const stuckSlack = time.Minute

// inflight knows the events whose actions are running and the deadline
// of each, so a worker that cannot make progress (an action blocked in
// the kernel past every timeout) shows in STATUS=, and the watchdog is no
// longer fed once no worker can.
type inflight struct {
	slack time.Duration // stuckSlack; tests shorten it

	mu       sync.Mutex
	deadline map[*uevent.Event]time.Time
}

// begin records that ev's actions, those of the rules matched, start
// now; the returned func records that they ended.
func (f *inflight) begin(ev *uevent.Event, matched []*rules.Rule) (end func()) {
	budget := f.slack
	if budget == 0 {
		budget = stuckSlack
	}
	for _, r := range matched {
		for _, a := range r.Actions {
			budget += actionTimeout(a)
		}
	}
	if ev.Action == "remove" {
		budget += mount.DefaultMountTimeout // the unmount that follows a removal
	}
	f.mu.Lock()
	if f.deadline == nil {
		f.deadline = make(map[*uevent.Event]time.Time)
	}
	f.deadline[ev] = time.Now().Add(budget)
	f.mu.Unlock()
	return func() {
		f.mu.Lock()
		delete(f.deadline, ev)
		f.mu.Unlock()
	}
}

// actionTimeout is the longest one action may take on its own.
func actionTimeout(a rules.Action) time.Duration {
	switch a := a.(type) {
	case *rules.RunSpec:
		return a.Timeout
	case *rules.MountSpec:
		return a.Timeout
	case *rules.UnmountSpec:
		return mount.DefaultMountTimeout
	}
	return 0 // notify hands over and returns
}

// running counts the events whose actions run now.
func (f *inflight) running() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.deadline)
}

// stuck counts the events past their deadline.
func (f *inflight) stuck(now time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, d := range f.deadline {
		if now.After(d) {
			n++
		}
	}
	return n
}

// trouble is what STATUS= says of stuck workers and of processes left
// behind (alive after SIGKILL), "" when there is none.
func (d *daemon) trouble() string {
	s := ""
	if n := d.inflight.stuck(time.Now()); n > 0 {
		s += fmt.Sprintf("; %d %s stuck past their deadline", n, plural(n, "worker", "workers"))
	}
	if left := d.leftBehind(); left > 0 {
		s += fmt.Sprintf("; %d %s left behind, alive after SIGKILL", left, plural(int(left), "process", "processes"))
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
