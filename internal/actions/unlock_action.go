package actions

import (
	"context"
	"errors"
	"fmt"

	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/rules"
)

// errNotLUKS: an unlock of a device whose probe found no LUKS header.
var errNotLUKS = errors.New("not a LUKS device")

// errNoProbe: this process cannot probe the cleartext of an unlock.
var errNoProbe = errors.New("no filesystem probe for the cleartext device")

type unlockAction struct {
	spec *rules.UnlockSpec
	deps *Deps
}

func newUnlock(a rules.Action, deps *Deps) (Action, error) {
	return &unlockAction{spec: a.(*rules.UnlockSpec), deps: deps}, nil
}

// Do opens the event's LUKS device with the rule's keyfile (see
// mount.Mounter.Unlock), or with PlanOnly says how it would
// (mount.Mounter.PlanUnlock), and gives the actions after it the
// cleartext: a mount mounts it, and {{ unlock.device }} is its node. A
// wrong key, a device that is not LUKS, a missing cryptsetup: an error,
// and nothing is left open.
func (a *unlockAction) Do(ctx context.Context, c *Context) (Step, error) {
	st := Step{Kind: "unlock", Devnode: c.Dev.DevNode(), Timeout: a.spec.Timeout, Keyfile: a.spec.Keyfile}
	fs := c.Dev.FS()
	if fs.Type != "crypto_LUKS" {
		return st, fmt.Errorf("unlock %s: %w (its probe found %q)", st.Devnode, errNotLUKS, fs.Type)
	}
	name, err := a.spec.MappingName(fs.UUID)
	if err != nil {
		return st, fmt.Errorf("unlock %s: %w", st.Devnode, err)
	}
	st.Mapping = name
	if a.deps.Mounter == nil {
		return st, fmt.Errorf("%w: %v", errNoMounter, a.deps.MountErr)
	}
	dev, err := deviceOf(c)
	if err != nil {
		return st, err
	}
	req := mount.UnlockRequest{Name: name, Keyfile: a.spec.Keyfile, ReadOnly: a.spec.ReadOnly, Rule: c.Rule, Timeout: a.spec.Timeout}
	st.Argv = a.deps.Mounter.UnlockArgv(dev, req)
	if a.deps.PlanOnly {
		mp, opened, err := a.deps.Mounter.PlanUnlock(dev, req)
		if err != nil {
			return st, err
		}
		st.Cleartext, st.Opened = mp.Cleartext.Devnode, opened
		c.setUnlocked(&mp)
		return st, nil
	}
	mp, opened, err := a.deps.Mounter.Unlock(ctx, dev, req)
	if err != nil {
		return st, err
	}
	st.Cleartext, st.Opened = mp.Cleartext.Devnode, opened
	c.setUnlocked(&mp)
	a.deps.Log.Info("unlocked", "rule", c.Rule, "devnode", dev.Devnode, "mapping", name,
		"cleartext", mp.Cleartext.Devnode, "already_open", opened)
	return st, nil
}

// cleartextDevice describes the cleartext of an unlock for a mount, with
// its own probe: what is inside is known only now. A dry run opens
// nothing, and has nothing to probe.
func cleartextDevice(ctx context.Context, deps *Deps, mp *mount.Mapping) (mount.Device, error) {
	dev := mp.Cleartext
	if deps.PlanOnly {
		return dev, nil
	}
	if deps.Probe == nil {
		return mount.Device{}, fmt.Errorf("mount %s: %w", dev.Devnode, errNoProbe)
	}
	fs, err := deps.Probe(ctx, dev.Devname)
	if err != nil {
		return mount.Device{}, fmt.Errorf("mount %s: %w", dev.Devnode, err)
	}
	dev.FSUsage, dev.FSType, dev.Label, dev.UUID = fs.Usage, fs.Type, fs.Label, fs.UUID
	return dev, nil
}

// releaseDevice is what a removal (or an unmount action) does: unmount
// what hotplugd mounted for the event's device (unmountDevice), then close
// the mappings it opened on it, their cleartext unmounted first. With
// PlanOnly the mounter plans the same steps (mount.Mounter.CloseMappingsOn).
func releaseDevice(ctx context.Context, deps *Deps, c *Context) (Step, error) {
	st, err := unmountDevice(ctx, deps, c)
	if err != nil {
		return st, err
	}
	dev, err := deviceOf(c)
	if err != nil {
		return st, err
	}
	closed, err := deps.Mounter.CloseMappingsOn(ctx, dev)
	for _, r := range closed {
		st.Mapping, st.Deferred, st.Argv = r.Mapping.Name, r.Deferred, r.Argv
		if u := r.Unmount; u != nil {
			st.MountPath, st.Lazy = u.Entry.MountPoint, u.Lazy
		}
		if deps.PlanOnly {
			continue
		}
		if u := r.Unmount; u != nil {
			logUnmount(deps, r.Mapping.Cleartext.Devnode, *u)
		}
		if r.Deferred {
			deps.Log.Warn("mapping in use: the kernel removes it once its last user lets go", "devnode", dev.Devnode,
				"mapping", r.Mapping.Name)
		} else {
			deps.Log.Info("mapping closed", "devnode", dev.Devnode, "mapping", r.Mapping.Name)
		}
	}
	return st, err
}
