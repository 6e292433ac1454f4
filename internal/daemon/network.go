package daemon

import (
	"context"
	"log/slog"

	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/listener"
	"github.com/hotplugd/hotplugd/internal/route"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// routeSource is the route listener (settings.network) as an
// eventSource beside the uevent listener. Its events carry the devpaths
// of their interfaces, so the dispatcher orders them with the uevents of
// the same interface.
type routeSource struct{ l *route.Listener }

// openRoute opens the route listener; with coldplug it announces the
// links and addresses present at start, as coldplug does the devices.
func openRoute(s rules.Settings, roots host.Roots, log *slog.Logger) (eventSource, error) {
	l, err := route.New(route.Config{Roots: roots, Initial: s.Coldplug}, log)
	if err != nil {
		return nil, err
	}
	return routeSource{l}, nil
}

// Run delivers the route events to h. It never calls h.Overrun: the
// route listener recovers from overruns by itself.
func (r routeSource) Run(ctx context.Context, h listener.Handler) error { return r.l.Run(ctx, h) }

func (r routeSource) Source() uevent.Source { return uevent.SourceRoute }

func (r routeSource) Close() error { return r.l.Close() }

// Stats are the route listener's counters in the uevent listener's
// terms: messages received, accepted, dropped by reason, overruns.
func (r routeSource) Stats() listener.Stats {
	s := r.l.Stats()
	return listener.Stats{
		Received:         s.Received,
		Accepted:         s.Accepted,
		DroppedTruncated: s.DroppedTruncated,
		DroppedSender:    s.DroppedSender,
		DroppedCreds:     s.DroppedCreds,
		DroppedParse:     s.DroppedParse,
		Overruns:         s.Overruns,
	}
}

// startNetwork runs the route source, when there is one, beside the
// uevent listener, into the same dispatcher.
func (d *daemon) startNetwork(s *serving) {
	if d.net == nil {
		return
	}
	s.netDone = make(chan error, 1)
	h := handler{d: d, ctx: s.intake, resync: s.resync}
	s.bg.Go(func() { s.netDone <- d.net.Run(s.intake, h) })
}

// netLog is what the "stopped" line says of the route source.
func (d *daemon) netLog() []any {
	if d.net == nil {
		return nil
	}
	s := d.net.Stats()
	out := []any{"route_received", s.Received, "route_dropped", s.Dropped(), "route_overruns", s.Overruns}
	if r, ok := d.net.(routeSource); ok {
		out = append(out, "route_events", r.l.Stats().Events)
	}
	return out
}
