package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/control"
)

// controlHandlers are the control socket's answers (and the broker's):
// the daemon's state and what an administrator may ask of it.
type controlHandlers struct{ d *daemon }

// Status is `hotplugd status`.
func (h controlHandlers) Status() control.Status {
	d := h.d
	st := d.state.Load()
	ls := d.sourceStats()
	ds := d.disp.Stats()
	s := control.Status{
		Version:       d.cfg.Version,
		UptimeSeconds: time.Since(d.startedAt).Seconds(),
		Events: control.EventStatus{
			Received: ls.Received, Handled: d.handled.Load(), Overruns: ls.Overruns,
			Dropped: map[string]uint64{
				"truncated": ls.DroppedTruncated, "sender": ls.DroppedSender, "credentials": ls.DroppedCreds,
				"udev_header": ls.DroppedUdevHeader, "parse": ls.DroppedParse,
			},
		},
		Queue: control.QueueStatus{Depth: ds.Queued, Capacity: d.cfg.QueueMax, Running: d.inflight.running(),
			Stuck: d.inflight.stuck(time.Now())},
		LeftBehind: d.leftBehind(),
		Mounts:     []control.MountStatus{},
	}
	s.Events.BySource = map[string]uint64{string(d.src.Source()): d.src.Stats().Received}
	if d.net != nil {
		s.Events.BySource[string(d.net.Source())] = d.net.Stats().Received
	}
	s.Config = d.configStatus()
	for _, r := range st.rs.Rules {
		rs := d.metrics.Rule(r.Name).Stats()
		e := control.RuleStatus{Name: r.Name, Matches: rs.Matches, ActionsOK: rs.ActionsOK, ActionsFailed: rs.ActionsFailed}
		if !rs.LastMatch.IsZero() {
			e.LastMatch = &rs.LastMatch
		}
		s.Rules = append(s.Rules, e)
	}
	if d.deps.Mounter != nil {
		for _, e := range d.deps.Mounter.Entries() {
			s.Mounts = append(s.Mounts, mountStatus(e))
		}
	}
	s.Mappings = mappingStatus(d.deps.Mounter)
	d.mu.Lock()
	s.LastError = d.lastErr
	d.mu.Unlock()
	s.Broker = d.brokerStatus()
	return s
}

func mountStatus(e mount.Entry) control.MountStatus {
	return control.MountStatus{Devnode: e.Device.Devnode, UUID: e.Device.UUID, Label: e.Device.Label,
		FSType: e.FSType, Path: e.MountPoint, Rule: e.Rule, Since: e.MountedAt}
}

// mappingStatus lists the LUKS mappings m opened, with where their
// cleartext is mounted.
func mappingStatus(m *mount.Mounter) []control.MappingStatus {
	out := []control.MappingStatus{}
	if m == nil {
		return out
	}
	for _, mp := range m.Mappings() {
		st := control.MappingStatus{Name: mp.Name, Device: mp.Cleartext.Devnode, Backing: mp.Backing.Devnode,
			UUID: mp.Backing.UUID, Rule: mp.Rule, Since: mp.OpenedAt}
		if e, ok := m.Lookup(mp.Cleartext); ok && (mp.Cleartext.Major != 0 || mp.Cleartext.Minor != 0) {
			st.Path = e.MountPoint
		}
		out = append(out, st)
	}
	return out
}

// Reload is `hotplugd reload`: synchronous, and the old rules stay in
// force when the new file is broken.
func (h controlHandlers) Reload() control.ReloadResult {
	st, err := h.d.reload()
	if err != nil {
		return control.ReloadResult{Rules: len(h.d.state.Load().rs.Rules), Problems: problems(err)}
	}
	return control.ReloadResult{OK: true, Rules: len(st.rs.Rules)}
}

// problems is a load error as lines: each FILE:LINE:COL: message.
func problems(err error) []string {
	var out []string
	for line := range strings.SplitSeq(err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// Settle is `hotplugd settle`: it returns once no event is queued or
// running, no coldplug or resync is under way, or after timeout.
func (h controlHandlers) Settle(ctx context.Context, timeout time.Duration) control.SettleResult {
	d := h.d
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		depth := d.disp.Stats().Queued
		if depth == 0 && d.coldplugLeft.Load() <= 0 && !d.resyncing.Load() {
			return control.SettleResult{Settled: true}
		}
		select {
		case <-ctx.Done():
			return control.SettleResult{Depth: depth}
		case <-t.C:
		}
	}
}

// WriteMetrics is GET /metrics.
func (h controlHandlers) WriteMetrics(w io.Writer) error { return h.d.metrics.WritePrometheus(w) }

// Eject is `hotplugd eject`: it unmounts what hotplugd mounted for each
// target and closes the LUKS mappings it opened there, mounted or not,
// through the mounter's own unmount and close (so the removal that
// follows has nothing left to do), never anything else. It is logged and counted,
// not fed to the rules.
func (h controlHandlers) Eject(ctx context.Context, req control.EjectRequest) control.EjectResult {
	d := h.d
	var res control.EjectResult
	for _, target := range req.Targets {
		t := d.ejectOne(ctx, target, req)
		result := "ok"
		switch {
		case len(t.Busy) > 0:
			result = "busy"
		case t.Error != "":
			result = "failed"
		}
		d.metrics.Counter("hotplugd_ejects_total", "result", result).Inc()
		d.log.Info("eject", "target", target, "result", result, "unmounted", len(t.Unmounted),
			"lazy", t.Lazy, "closed", t.Closed, "deferred", t.Deferred, "powered_off", t.PoweredOff, "err", t.Error)
		res.Targets = append(res.Targets, t)
	}
	d.mountsChanged()
	return res
}

func (d *daemon) ejectOne(ctx context.Context, target string, req control.EjectRequest) control.EjectTarget {
	t := control.EjectTarget{Target: target, Unmounted: []control.MountStatus{}}
	m := d.deps.Mounter
	if m == nil {
		t.Error = fmt.Sprintf("mounting is not available: %v", d.deps.MountErr)
		return t
	}
	sel, err := m.Select(target)
	if err != nil {
		t.Error = err.Error()
		return t
	}
	var disk mount.Disk
	if req.PowerOff {
		if disk, err = selectedDisk(m, sel); err != nil {
			t.Error = err.Error()
			return t
		}
		sel = m.SelectDisk(disk) // every mount and mapping of the disk goes first
	}
	for _, e := range sel.Entries {
		r, err := m.Eject(ctx, e.Device, req.Force)
		if errors.Is(err, mount.ErrBusy) {
			for _, p := range m.Holders(e.MountPoint) {
				t.Busy = append(t.Busy, control.Holder{PID: p.PID, Command: p.Command})
			}
			t.Error = err.Error()
			return t
		}
		if err != nil && !errors.Is(err, mount.ErrNotMounted) {
			t.Error = err.Error()
			return t
		}
		t.Unmounted = append(t.Unmounted, mountStatus(e))
		t.Lazy = t.Lazy || r.Lazy
		noteClosed(&t, r)
	}
	for _, mp := range sel.Mappings {
		r, err := m.EjectMapping(ctx, mp, req.Force)
		if err != nil {
			t.Error = err.Error()
			return t
		}
		if r.Unmounted { // mounted since it was selected
			t.Unmounted = append(t.Unmounted, mountStatus(r.Entry))
			t.Lazy = t.Lazy || r.Lazy
		}
		noteClosed(&t, r)
	}
	if req.PowerOff {
		if err := m.PowerOff(disk); err != nil {
			t.Error = err.Error()
			return t
		}
		t.PoweredOff = true
	}
	return t
}

// noteClosed adds the mapping an eject closed, if any, to t.
func noteClosed(t *control.EjectTarget, r mount.UnmountResult) {
	switch {
	case r.Closed != "" && r.Deferred:
		t.Deferred = append(t.Deferred, r.Closed)
	case r.Closed != "":
		t.Closed = append(t.Closed, r.Closed)
	}
}

// selectedDisk is the disk of the first of what an eject selected.
func selectedDisk(m *mount.Mounter, sel mount.Selection) (mount.Disk, error) {
	if len(sel.Entries) > 0 {
		return m.DiskOf(sel.Entries[0].Device)
	}
	return m.DiskOf(sel.Mappings[0].Backing)
}

// maxTriggerErrors bounds the failures a trigger reports.
const maxTriggerErrors = 20

// Trigger is POST /v1/trigger (and the broker's cmd/trigger): it asks
// the kernel to emit an event for every present device of the
// subsystem, as `hotplugd trigger` does; the events then come as any.
func (h controlHandlers) Trigger(ctx context.Context, req control.TriggerRequest) control.TriggerResult {
	d := h.d
	res := control.TriggerResult{Action: req.Action}
	evs, err := d.devs.Enumerate(req.Subsystem)
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
	}
	for _, ev := range evs {
		if ctx.Err() != nil {
			res.Errors = append(res.Errors, ctx.Err().Error())
			break
		}
		if err := d.devs.Trigger(ev.DevPath, req.Action); err != nil {
			if len(res.Errors) < maxTriggerErrors {
				res.Errors = append(res.Errors, err.Error())
			}
			continue
		}
		res.Triggered++
	}
	d.log.Info("trigger", "action", req.Action, "subsystem", req.Subsystem, "triggered", res.Triggered, "failed", len(res.Errors))
	return res
}

// leftBehind counts the processes of stopped actions and probes that did
// not die of SIGKILL.
func (d *daemon) leftBehind() int64 {
	n := d.devs.Stats().ProbesLeftBehind
	if d.deps != nil && d.deps.Runner != nil {
		n += d.deps.Runner.Leaked()
	}
	return n
}
