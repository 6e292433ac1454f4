package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/hotplugd/hotplugd/internal/route"
)

// monitorRoute is `hotplugd monitor --source route`: it prints the
// changes of network links and addresses (only changes: the state found
// at start is not printed), then one summary line of the listener's
// counters on stderr.
func monitorRoute(ctx context.Context, p *printer, filter string, stderr io.Writer, log *slog.Logger) error {
	l, err := route.New(route.Config{}, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "hotplugd monitor: listening to route events (links and addresses)%s\n", filter)
	err = l.Run(ctx, p)
	s := l.Stats()
	fmt.Fprintf(stderr, "hotplugd monitor: received=%d accepted=%d events=%d printed=%d dropped_truncated=%d dropped_sender=%d dropped_creds=%d dropped_parse=%d overruns=%d dumps=%d\n",
		s.Received, s.Accepted, s.Events, p.printed, s.DroppedTruncated, s.DroppedSender, s.DroppedCreds, s.DroppedParse, s.Overruns, s.Dumps)
	if err != nil {
		return err
	}
	if p.err != nil {
		return fmt.Errorf("monitor: write: %w", p.err)
	}
	return nil
}
