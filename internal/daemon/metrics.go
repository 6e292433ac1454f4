package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	vm "github.com/VictoriaMetrics/metrics"

	"github.com/hotplugd/hotplugd/internal/listener"
	"github.com/hotplugd/hotplugd/internal/rules"
)

// registerMetrics makes the series read from elsewhere at each
// exposition: the listener's counters, the queue, the mounts, the
// configuration's state.
func (d *daemon) registerMetrics() {
	m := d.metrics
	sources := []eventSource{d.src}
	if d.net != nil {
		sources = append(sources, d.net)
	}
	drop := func(reason string) *vm.Counter { return m.Counter("hotplugd_uevents_dropped_total", "reason", reason) }
	truncated, sender, creds, header, parse := drop("truncated"), drop("sender"), drop("credentials"), drop("udev_header"), drop("parse")
	type perSource struct{ received, overruns *vm.Counter }
	per := make([]perSource, len(sources))
	for i, src := range sources {
		name := string(src.Source())
		per[i] = perSource{m.Counter("hotplugd_uevents_received_total", "source", name), m.Counter("hotplugd_netlink_overruns_total", "source", name)}
	}
	m.OnExpose(func() {
		var all listener.Stats
		for i, src := range sources {
			ls := src.Stats()
			per[i].received.Set(ls.Received)
			per[i].overruns.Set(ls.Overruns)
			all = addStats(all, ls)
		}
		truncated.Set(all.DroppedTruncated)
		sender.Set(all.DroppedSender)
		creds.Set(all.DroppedCreds)
		header.Set(all.DroppedUdevHeader)
		parse.Set(all.DroppedParse)
	})
	m.Gauge(func() float64 { return float64(d.disp.Stats().Queued) }, "hotplugd_queue_events")
	m.Gauge(func() float64 { return float64(d.mountCount()) }, "hotplugd_mounts")
	m.Gauge(func() float64 { return float64(d.leftBehind()) }, "hotplugd_processes_left_behind")
	m.Gauge(func() float64 {
		if d.configStatus().ReloadOK {
			return 1
		}
		return 0
	}, "hotplugd_config_last_reload_successful")
	m.Gauge(func() float64 { return float64(d.configStatus().LoadedAt.UnixNano()) / 1e9 },
		"hotplugd_config_last_reload_success_timestamp_seconds")
	d.registerBrokerMetrics()
}

func (d *daemon) mountCount() int {
	if d.deps == nil || d.deps.Mounter == nil {
		return 0
	}
	return len(d.deps.Mounter.Entries())
}

// exposition serves the metrics outside the control socket: on TCP
// (settings.metrics.listen) and as a node_exporter textfile.
type exposition struct {
	srv  *http.Server
	stop context.CancelFunc
	done chan struct{}
}

// startExposition starts what settings.metrics asks for; a TCP address
// that cannot be bound is logged, and the daemon goes on.
func (d *daemon) startExposition(s rules.MetricsSettings) *exposition {
	if s.Listen == "" && s.Textfile == "" {
		return nil
	}
	x := &exposition{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	x.stop = cancel
	if s.Listen != "" {
		x.srv = d.serveMetricsTCP(s.Listen)
	}
	go func() {
		defer close(x.done)
		if s.Textfile != "" {
			d.writeTextfiles(ctx, s.Textfile, s.Interval)
		}
	}()
	return x
}

func (d *daemon) serveMetricsTCP(addr string) *http.Server {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		d.log.Error("metrics not served on TCP", "listen", addr, "err", err)
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		d.metrics.WritePrometheus(w)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, MaxHeaderBytes: 8 << 10}
	go srv.Serve(ln)
	d.log.Info("metrics served on TCP", "listen", ln.Addr().String())
	return srv
}

// writeTextfiles writes the exposition to path atomically every interval
// until ctx ends.
func (d *daemon) writeTextfiles(ctx context.Context, path string, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := d.writeTextfile(path); err != nil {
			d.log.Error("metrics textfile", "path", path, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (d *daemon) writeTextfile(path string) error {
	var b bytes.Buffer
	if err := d.metrics.WritePrometheus(&b); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b.Bytes())
	err = errors.Join(err, tmp.Chmod(0o644), tmp.Close())
	if err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	return os.Rename(tmp.Name(), path)
}

// close stops the exposition.
func (x *exposition) close() {
	if x == nil {
		return
	}
	x.stop()
	<-x.done
	if x.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		x.srv.Shutdown(ctx)
		cancel()
	}
}

// addStats sums the counters of two sources.
func addStats(a, b listener.Stats) listener.Stats {
	a.Received += b.Received
	a.Accepted += b.Accepted
	a.DroppedTruncated += b.DroppedTruncated
	a.DroppedSender += b.DroppedSender
	a.DroppedCreds += b.DroppedCreds
	a.DroppedUdevHeader += b.DroppedUdevHeader
	a.DroppedParse += b.DroppedParse
	a.Overruns += b.Overruns
	return a
}

// sourceStats is what every event source counted, together.
func (d *daemon) sourceStats() listener.Stats {
	s := d.src.Stats()
	if d.net != nil {
		s = addStats(s, d.net.Stats())
	}
	return s
}
