package actions

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// errNoMounter is the clear error of a mount or unmount that cannot work
// at all in this process.
var errNoMounter = errors.New("mounting is not available")

// errDeviceNumber: an event of a block device without MAJOR and MINOR.
var errDeviceNumber = errors.New("device has no major:minor (the kernel's events of block devices carry MAJOR= and MINOR=)")

type mountAction struct {
	spec *rules.MountSpec
	deps *Deps
}

func newMount(a rules.Action, deps *Deps) (Action, error) {
	return &mountAction{spec: a.(*rules.MountSpec), deps: deps}, nil
}

// request is the mount.Request of the action. The cleartext of a
// read-only unlock is a read-only device, which mount(2) takes only with
// ro.
func (a *mountAction) request(c *Context) mount.Request {
	req := mount.Request{Rule: c.Rule, Options: a.spec.Options, Exec: a.spec.Exec}
	if a.spec.Owner != nil {
		req.UID, req.GID, req.Owned = a.spec.Owner.UID, a.spec.Owner.GID, true
	}
	if c.Unlocked != nil && c.Unlocked.ReadOnly && !slices.Contains(req.Options, "ro") {
		req.Options = append(slices.Clone(req.Options), "ro")
	}
	return req
}

// Do mounts the event's device under the mount root (see
// mount.Mounter.Mount), or with PlanOnly plans it (mount.Mounter.Plan,
// the same decisions; PlanCleartext after an unlock), and gives the
// actions after it {{ mount.path }}.
func (a *mountAction) Do(ctx context.Context, c *Context) (Step, error) {
	st := Step{Kind: "mount", Devnode: c.Dev.DevNode(), Timeout: a.spec.Timeout}
	if a.spec.Owner != nil {
		st.User = a.spec.Owner.Name
	}
	if a.deps.Mounter == nil {
		return st, fmt.Errorf("%w: %v", errNoMounter, a.deps.MountErr)
	}
	dev, err := a.device(ctx, c)
	if err != nil {
		return st, err
	}
	st.Devnode = dev.Devnode
	if a.deps.PlanOnly {
		if c.Unlocked != nil {
			// A dry run opens nothing: what is inside is known once
			// the device is unlocked.
			path, err := a.deps.Mounter.PlanCleartext(dev, a.request(c))
			if err != nil {
				return st, err
			}
			st.MountPath = path
			c.setMountPath(path)
			return st, nil
		}
		p, err := a.deps.Mounter.Plan(dev, a.request(c))
		if err != nil {
			return st, err
		}
		st.Mount, st.MountPath = &p, p.MountPoint
		c.setMountPath(p.MountPoint)
		return st, nil
	}
	if a.spec.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.spec.Timeout)
		defer cancel()
	}
	e, err := a.deps.Mounter.Mount(ctx, dev, a.request(c))
	if err != nil {
		return st, err
	}
	st.MountPath = e.MountPoint
	c.setMountPath(e.MountPoint)
	a.deps.Log.Info("mounted", "rule", c.Rule, "devnode", dev.Devnode, "path", e.MountPoint,
		"type", e.FSType, "options", e.Options)
	return st, nil
}

type unmountAction struct{ deps *Deps }

func newUnmount(_ rules.Action, deps *Deps) (Action, error) { return &unmountAction{deps: deps}, nil }

// Do unmounts what hotplugd mounted for the event's device, and closes
// the LUKS mappings it opened on it; a device it did not mount is not an
// error. {{ mount.path }} after it is where the filesystem was.
func (a *unmountAction) Do(ctx context.Context, c *Context) (Step, error) {
	if a.deps.Mounter == nil {
		return Step{Kind: "unmount", Devnode: c.Dev.DevNode()}, fmt.Errorf("%w: %v", errNoMounter, a.deps.MountErr)
	}
	st, err := releaseDevice(ctx, a.deps, c)
	if err == nil {
		path := st.MountPath
		if path == "" && a.deps.PlanOnly {
			// Which mount hotplugd recorded for the device is known
			// only when the event really comes.
			path = filepath.Join(a.deps.Mounter.Root(), mount.UnknownName)
		}
		c.setMountPath(path)
	}
	return st, err
}

// device is what a mount mounts: the cleartext after an unlock, else the
// event's device.
func (a *mountAction) device(ctx context.Context, c *Context) (mount.Device, error) {
	if c.Unlocked != nil {
		return cleartextDevice(ctx, a.deps, c.Unlocked)
	}
	return deviceOf(c)
}

// unmountDevice unmounts what hotplugd mounted for the event's device and
// logs the outcome; with PlanOnly it only looks the mount up (a
// simulated Mounter forgets it, see mount.Mounter.PlanUnmount). A device
// hotplugd did not mount is not an error: Step.MountPath is then "".
func unmountDevice(ctx context.Context, deps *Deps, c *Context) (Step, error) {
	st := Step{Kind: "unmount", Devnode: c.Dev.DevNode()}
	dev, err := deviceOf(c)
	if err != nil {
		return st, err
	}
	if deps.PlanOnly {
		if e, ok := deps.Mounter.PlanUnmount(dev); ok {
			st.MountPath = e.MountPoint
		}
		return st, nil
	}
	res, err := deps.Mounter.Unmount(ctx, dev)
	switch {
	case errors.Is(err, mount.ErrNotMounted):
		return st, nil
	case err != nil:
		return st, err
	}
	st.MountPath, st.Lazy = res.Entry.MountPoint, res.Lazy
	logUnmount(deps, dev.Devnode, res)
	return st, nil
}

// logUnmount logs what an unmount of devnode did.
func logUnmount(deps *Deps, devnode string, res mount.UnmountResult) {
	if res.Lazy {
		deps.Log.Warn("removed while in use: lazily unmounted", "devnode", devnode, "path", res.Entry.MountPoint,
			"dir_removed", res.DirRemoved)
	} else {
		deps.Log.Info("unmounted", "devnode", devnode, "path", res.Entry.MountPoint, "dir_removed", res.DirRemoved)
	}
}

// deviceOf describes the event's block device for the mounter.
func deviceOf(c *Context) (mount.Device, error) {
	ev := c.Event
	dev := mount.Device{Devpath: ev.DevPath, Devnode: c.Dev.DevNode(), Devname: ev.DevName}
	major, err1 := strconv.ParseUint(ev.Get("MAJOR"), 10, 32)
	minor, err2 := strconv.ParseUint(ev.Get("MINOR"), 10, 32)
	if err1 != nil || err2 != nil {
		if ev.Action == "remove" {
			return dev, nil // a remove made up by a resync: its devpath finds the mount
		}
		return mount.Device{}, fmt.Errorf("%s: %w", ev.DevPath, errDeviceNumber)
	}
	dev.Major, dev.Minor = uint32(major), uint32(minor)
	if ev.Action != "remove" {
		fs := c.Dev.FS()
		dev.FSUsage, dev.FSType, dev.Label, dev.UUID = fs.Usage, fs.Type, fs.Label, fs.UUID
		part, _ := uevent.PartitionFromProps(ev.Props)
		if pd, ok := c.Dev.(partitioned); ok {
			part = pd.Partition() // kernel events lack the entry: the probe reads it
		}
		dev.PartUUID, dev.PartLabel = part.UUID, part.Name
	}
	return dev, nil
}

// partitioned is a Device that knows its partition's table entry
// (*device.Device).
type partitioned interface {
	Partition() uevent.Partition
}
