package daemon

import (
	"context"
	"maps"
	"strings"

	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// coldplug feeds every present device as an "add" (source coldplug).
// Until those are handled, a device that also sends a live "add" is
// handled once (the dispatcher's coldplug window).
func (d *daemon) coldplug(ctx context.Context) {
	defer d.coldplugDone()
	evs, err := d.devs.Enumerate("")
	if err != nil {
		d.log.Warn("coldplug: some devices could not be read", "err", err)
	}
	for i := range evs {
		d.coldplugLeft.Add(1)
		if d.disp.Submit(ctx, &evs[i]) != queued {
			d.coldplugLeft.Add(-1)
		}
	}
	d.log.Info("coldplug: existing devices queued", "devices", len(evs))
}

func (d *daemon) coldplugDone() {
	if d.coldplugLeft.Add(-1) == 0 {
		d.disp.endColdplug()
		d.log.Debug("coldplug done")
	}
}

// resync runs after the kernel dropped events (ENOBUFS): devices that
// appeared meanwhile get an "add", devices that vanished a "remove"
// (source resync), and mounts are reconciled.
func (d *daemon) resync(ctx context.Context) {
	n := d.resyncs.Add(1)
	evs, err := d.devs.Enumerate("")
	if err != nil {
		d.log.Warn("resync: some devices could not be read", "err", err)
	}
	known := d.presentDevices()
	present := make(map[string]bool, len(evs))
	added, removed := 0, 0
	for i := range evs {
		e := &evs[i]
		present[e.DevPath] = true
		// A device with events still queued is up to date once they
		// are handled; only devices nothing was heard of get an "add".
		if _, ok := known[e.DevPath]; !ok && !d.disp.pending(e.DevPath) {
			e.Source = uevent.SourceResync
			if d.disp.Submit(ctx, e) == queued {
				added++
			}
		}
	}
	for p, subsystem := range known {
		// Enumerate walks /devices: a module or a driver heard of is not
		// gone because it is not there.
		if !strings.HasPrefix(p, "/devices/") || present[p] || d.disp.pending(p) {
			continue
		}
		if ev, ok := d.removeEvent(p, subsystem); ok && d.disp.Submit(ctx, ev) == queued {
			removed++
		}
	}
	d.log.Warn("events were lost (kernel buffer overrun): resynced with /sys", "resync", n, "added", added, "removed", removed)
	if d.deps.Mounter != nil {
		d.reconcileMounts(ctx)
	}
}

// baseline records the devices present at start as heard of, without an
// event: with coldplug off, a resync must not give them the "add" the
// administrator switched off.
func (d *daemon) baseline() {
	evs, err := d.devs.Enumerate("")
	if err != nil {
		d.log.Warn("some devices present at start could not be read", "err", err)
	}
	d.presentMu.Lock()
	defer d.presentMu.Unlock()
	for _, e := range evs {
		d.present[e.DevPath] = e.Subsystem
	}
}

// notePresence keeps d.present up to date with one event. A link's
// state or address says nothing of it: one that arrives after its
// interface's remove must not bring the device back.
func (d *daemon) notePresence(ev *uevent.Event) {
	if uevent.IsRouteAction(ev.Action) {
		return
	}
	d.presentMu.Lock()
	defer d.presentMu.Unlock()
	switch ev.Action {
	case "remove":
		delete(d.present, ev.DevPath)
	case "move":
		delete(d.present, ev.Get("DEVPATH_OLD"))
		d.present[ev.DevPath] = ev.Subsystem
	default:
		if d.present[ev.DevPath] != ev.Subsystem {
			d.present[ev.DevPath] = ev.Subsystem
		}
	}
}

// presentDevices is a copy of d.present.
func (d *daemon) presentDevices() map[string]string {
	d.presentMu.Lock()
	defer d.presentMu.Unlock()
	return maps.Clone(d.present)
}

// removeEvent builds the "remove" of a device that vanished unseen, from
// what the device database recorded, else from its devpath and subsystem.
func (d *daemon) removeEvent(devpath, subsystem string) (*uevent.Event, bool) {
	props, ok := d.devs.Recorded(devpath)
	if !ok {
		props = []uevent.Property{{Key: "DEVPATH", Value: devpath}, {Key: "SUBSYSTEM", Value: subsystem}}
	}
	out := make([]uevent.Property, 0, len(props))
	for _, p := range props {
		switch p.Key {
		case "ACTION", "SEQNUM":
			continue
		}
		out = append(out, p)
	}
	out = append(out, uevent.Property{Key: "ACTION", Value: "remove"}, uevent.Property{Key: "SEQNUM", Value: "0"})
	ev, err := uevent.FromProps(out)
	if err != nil {
		return nil, false
	}
	ev.Source = uevent.SourceResync
	return &ev, true
}

// reconcileMounts cleans up mounts of devices that are gone.
func (d *daemon) reconcileMounts(ctx context.Context) {
	rep, err := d.deps.Mounter.Reconcile(ctx, nil)
	if err != nil {
		d.log.Error("reconciling mounts", "err", err)
	}
	for _, e := range rep.Cleaned {
		d.log.Info("cleaned up the mount of a device that is gone", "path", e.MountPoint, "devnode", e.Device.Devnode)
	}
	for _, e := range rep.Failed {
		d.log.Error("could not clean up the mount of a device that is gone; will retry", "path", e.MountPoint, "devnode", e.Device.Devnode)
	}
	if len(rep.Kept)+len(rep.Cleaned)+len(rep.Failed) > 0 {
		d.log.Info("mounts reconciled", "kept", len(rep.Kept), "cleaned", len(rep.Cleaned), "failed", len(rep.Failed))
	}
	d.logMappingsReconciled(rep)
	d.mountsChanged()
}

// logMappingsReconciled says what reconciling did with the LUKS mappings
// hotplugd had opened.
func (d *daemon) logMappingsReconciled(rep mount.ReconcileReport) {
	for _, r := range rep.Closed {
		path := ""
		if r.Unmount != nil {
			path = r.Unmount.Entry.MountPoint
		}
		d.log.Info("closed the mapping of a device that is gone", "mapping", r.Mapping.Name,
			"devnode", r.Mapping.Backing.Devnode, "path", path, "deferred", r.Deferred)
	}
	for _, mp := range rep.Adopted {
		d.log.Info("mapping of a device still present kept", "mapping", mp.Name, "devnode", mp.Backing.Devnode)
	}
	for _, mp := range rep.CloseFailed {
		d.log.Error("could not close the mapping of a device that is gone; will retry", "mapping", mp.Name,
			"devnode", mp.Backing.Devnode)
	}
}
