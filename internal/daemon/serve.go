package daemon

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// serving is what serve starts and shutdown stops.
type serving struct {
	intake     context.Context // ends when intake stops
	stopIntake context.CancelFunc
	killActs   context.CancelFunc // ends the actions' context
	stopWake   func() bool
	lstDone    chan error    // the event source's Run returned
	netDone    chan error    // the route source's Run returned; nil without one
	resync     chan struct{} // an overrun asks for a resync
	bg         sync.WaitGroup
}

// serve runs the daemon until ctx is cancelled (an orderly stop, nil) or
// the event source fails: it reconciles mounts, starts intake and
// coldplug, says READY=1, and runs the main loop.
func (d *daemon) serve(ctx context.Context) error {
	s := d.start(ctx)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	err := d.loop(ctx, s, hup)
	d.shutdown(s)
	return err
}

// start brings intake up: from here on events are handled.
func (d *daemon) start(ctx context.Context) *serving {
	st := d.state.Load()
	settings := st.rs.Settings
	s := &serving{lstDone: make(chan error, 1), resync: make(chan struct{}, 1)}
	d.actx, s.killActs = context.WithCancel(context.WithoutCancel(ctx))
	if d.deps.Mounter != nil {
		d.reconcileMounts(ctx)
	}
	d.startBroker()
	s.intake, s.stopIntake = context.WithCancel(ctx)
	d.disp = newDispatcher(settings.Workers, d.cfg.QueueMax, d.handle)
	s.stopWake = d.disp.wakeOnDone(s.intake)
	if !settings.Coldplug {
		d.baseline() // before intake: what was there before any event
	}
	s.bg.Go(func() { s.lstDone <- d.src.Run(s.intake, handler{d: d, ctx: s.intake, resync: s.resync}) })
	d.startNetwork(s)
	if settings.Coldplug {
		d.disp.beginColdplug()
		d.coldplugLeft.Store(1)
		s.bg.Go(func() { d.coldplug(s.intake) })
	}
	if d.control != nil {
		s.bg.Go(func() {
			if err := d.control.Serve(); err != nil {
				d.log.Error("control socket", "err", err)
			}
		})
	}
	d.extra = d.startExposition(settings.Metrics)
	d.log.Info("hotplugd running", "rules", len(st.rs.Rules), "file", st.rs.File, "source", d.src.Source(),
		"workers", settings.Workers, "coldplug", settings.Coldplug, "network", d.net != nil)
	d.sd.ready(d.status())
	return s
}

// loop is the main loop: reloads, resyncs, the watchdog and STATUS=,
// until ctx ends or the event source fails.
func (d *daemon) loop(ctx context.Context, s *serving, hup <-chan os.Signal) error {
	var wdTick <-chan time.Time
	if wd := watchdogInterval(); wd > 0 {
		t := time.NewTicker(wd)
		defer t.Stop()
		wdTick = t.C
	}
	statusTick := time.NewTicker(5 * time.Second)
	defer statusTick.Stop()
	lastStatus := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-s.lstDone:
			s.lstDone <- err // for shutdown
			if err != nil {
				return fmt.Errorf("listener: %w", err)
			}
			return nil
		case err := <-s.netDone:
			s.netDone <- err // for shutdown
			if err != nil {
				return fmt.Errorf("route listener: %w", err)
			}
			return nil
		case <-hup:
			d.reload()
		case <-s.resync:
			d.startResync(s)
		case <-wdTick:
			d.watchdog()
		case <-statusTick.C:
			if st := d.status(); st != lastStatus {
				d.sd.status(st)
				lastStatus = st
			}
		}
	}
}

// watchdog pings systemd's watchdog while the daemon can make progress.
// Stats takes the dispatcher's lock: a wedged dispatcher stops the pings,
// and so do workers that are all stuck; systemd then restarts the
// service.
func (d *daemon) watchdog() {
	d.disp.Stats()
	if n := d.inflight.stuck(time.Now()); n >= d.disp.workers {
		d.log.Error("every worker is stuck past its deadline: no watchdog ping", "stuck", n)
		return
	}
	d.sd.watchdog()
}

// startResync runs one resync at a time; overruns meanwhile make it go
// again.
func (d *daemon) startResync(s *serving) {
	if d.resyncing.Swap(true) {
		d.resyncAgain.Store(true)
		return
	}
	s.bg.Go(func() {
		defer d.resyncing.Store(false)
		for {
			d.resync(s.intake)
			if !d.resyncAgain.Swap(false) || s.intake.Err() != nil {
				return
			}
		}
	})
}

// shutdown is SIGTERM: STOPPING=1, no new events, running actions finish
// within the stop deadline or have their process groups killed.
func (d *daemon) shutdown(s *serving) {
	d.sd.stopping()
	d.log.Info("stopping: no new events; waiting for running actions", "deadline", d.cfg.StopTimeout)
	s.stopIntake()
	<-s.lstDone
	if s.netDone != nil {
		<-s.netDone
	}
	closed := make(chan struct{})
	go func() { d.disp.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(d.cfg.StopTimeout):
		d.log.Warn("stop deadline passed: killing running actions")
		s.killActs()
		<-closed
	}
	d.extra.close()
	if d.control != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		d.control.Close(ctx) // Serve returns; the socket file goes
		cancel()
	}
	s.bg.Wait()
	s.stopWake()
	s.killActs()
	ls := d.src.Stats()
	args := []any{"events", d.handled.Load(), "received", ls.Received, "dropped", ls.Dropped(),
		"overruns", ls.Overruns, "actions_ok", d.actionsOK.Load(), "actions_failed", d.actionsFailed.Load()}
	d.log.Info("stopped", append(args, d.netLog()...)...)
}

// handler feeds the event source's events to the dispatcher.
type handler struct {
	d      *daemon
	ctx    context.Context
	resync chan<- struct{}
}

func (h handler) Event(ev uevent.Event) {
	h.d.disp.Submit(h.ctx, &ev)
}

func (h handler) Overrun() {
	select {
	case h.resync <- struct{}{}:
	default: // one is pending already
	}
}
