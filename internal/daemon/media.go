package daemon

import (
	"context"
	"strings"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// mediaPollMsecs is how often the kernel is asked to poll a removable
// disk for a medium taken out or put in (udisks2 uses the same).
const mediaPollMsecs = 2000

// mediaGone unmounts (lazily when busy) what hotplugd mounted from the
// disk of ev and its partitions, and closes the mappings it opened on
// them: whatever medium is in it now, the one mounted or unlocked is not
// there any more, and a mapping left open would read and write the next.
func (d *daemon) mediaGone(ev *uevent.Event) {
	m := d.deps.Mounter
	if m == nil {
		return
	}
	disk := mount.Disk{Devpath: ev.DevPath}
	for _, e := range m.DiskEntries(disk) {
		if _, ok := m.MappingOf(e.Device); ok {
			continue // a cleartext: unmounted with the close of its mapping, below
		}
		start := time.Now()
		res, err := m.Unmount(d.actx, e.Device)
		result := "ok"
		if err != nil {
			result = d.finish(ev, removalRule, "unmount", err)
		} else {
			d.logMediaUnmount(e.Device.Devnode, res)
		}
		d.metrics.Rule(removalRule).Action("unmount", result, time.Since(start))
	}
	for _, mp := range m.DiskMappings(disk) {
		d.mediaClose(ev, m, mp)
	}
	d.mountsChanged()
}

// mediaClose closes mp, whose backing device's medium went, as the
// removal of that device does (Mounter.CloseMappingsOn): its cleartext
// unmounted first, lazily when busy, and the mapping closed deferred
// when still in use. It counts as the removal's unmount.
func (d *daemon) mediaClose(ev *uevent.Event, m *mount.Mounter, mp mount.Mapping) {
	start := time.Now()
	closed, err := m.CloseMappingsOn(d.actx, mp.Backing)
	for _, r := range closed {
		if r.Unmount != nil {
			d.logMediaUnmount(r.Mapping.Cleartext.Devnode, *r.Unmount)
		}
		if r.Deferred {
			d.log.Warn("medium changed while its mapping was in use: the kernel removes it once its last user lets go",
				"devnode", r.Mapping.Backing.Devnode, "mapping", r.Mapping.Name)
		} else {
			d.log.Info("medium changed: mapping closed", "devnode", r.Mapping.Backing.Devnode, "mapping", r.Mapping.Name)
		}
	}
	result := "ok"
	if err != nil {
		result = d.finish(ev, removalRule, "unmount", err)
	}
	d.metrics.Rule(removalRule).Action("unmount", result, time.Since(start))
}

// logMediaUnmount logs an unmount of devnode for a medium change.
func (d *daemon) logMediaUnmount(devnode string, res mount.UnmountResult) {
	if res.Lazy {
		d.log.Warn("medium changed while in use: lazily unmounted", "devnode", devnode, "path", res.Entry.MountPoint)
	} else {
		d.log.Info("medium changed: unmounted", "devnode", devnode, "path", res.Entry.MountPoint)
	}
}

// mediaArrived runs a new medium through the rules as the "add" of its
// disk, when the disk holds one now (size not 0): a rule that mounts a
// stick's add mounts the next card too. Partitions on the medium come as
// the kernel's own adds once something opens the disk, as the probe does.
func (d *daemon) mediaArrived(ctx context.Context, ev *uevent.Event) {
	if err := d.devs.OpenMedia(ev.DevName); err != nil {
		d.log.Warn("medium changed: cannot open the disk", "devpath", ev.DevPath, "err", err)
		return
	}
	dev := d.devs.For(ctx, *ev)
	size := dev.Attr("size")
	dev.Done()
	if size == "" || size == "0" {
		return
	}
	props := make([]uevent.Property, 0, len(ev.Props))
	for _, p := range ev.Props {
		switch p.Key {
		case "ACTION", "SEQNUM":
		default:
			props = append(props, p)
		}
	}
	add, err := uevent.FromProps(append(props, uevent.Property{Key: "ACTION", Value: "add"}, uevent.Property{Key: "SEQNUM", Value: "0"}))
	if err != nil {
		return
	}
	add.Source = ev.Source
	d.log.Info("medium changed: its new medium goes through the rules as an add", "devpath", ev.DevPath, "devname", ev.DevName)
	d.handle(ctx, &add)
}

// pollMedia asks the kernel to report media changes of a removable disk
// that appeared, when the rules mount anything.
func (d *daemon) pollMedia(ev *uevent.Event, st *ruleState) {
	if !st.mounts || ev.Subsystem != "block" || ev.Action != "add" || ev.DevType != "disk" || !strings.HasPrefix(ev.DevPath, "/devices/") {
		return
	}
	on, err := d.devs.PollMedia(ev.DevPath, mediaPollMsecs)
	switch {
	case err != nil:
		d.log.Warn("cannot poll for media changes", "devpath", ev.DevPath, "err", err)
	case on:
		d.log.Debug("polling for media changes", "devpath", ev.DevPath, "msecs", mediaPollMsecs)
	}
}
