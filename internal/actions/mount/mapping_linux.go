package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions/crypt"
)

// cleartextWait bounds the wait for /dev/mapper/<name> after cryptsetup
// returned: udevd makes it (cryptsetup waits for it), or libdevmapper
// itself when no udevd runs.
const cleartextWait = 5 * time.Second

// Unlock opens the LUKS device dev as the mapping req.Name with
// cryptsetup and records it, and returns it with its cleartext device.
// The mapping is recorded before cryptsetup runs, so a crash in between
// leaves nothing Reconcile does not know of; when the open fails, what it
// may have left (a mapping made before a kill at the deadline) is closed
// and the record dropped. A mapping this device already has from
// hotplugd is returned as it is, with open true; a name another mapping
// has is ErrMappingExists.
func (m *Mounter) Unlock(ctx context.Context, dev Device, req UnlockRequest) (mp Mapping, open bool, err error) {
	if m.cfg.PlanOnly {
		return Mapping{}, false, fmt.Errorf("unlock %s: %w", dev.Devnode, ErrPlanOnly)
	}
	if err := checkMappingName(req.Name); err != nil {
		return Mapping{}, false, fmt.Errorf("unlock %s: %w", dev.Devnode, err)
	}
	release, ok := m.reserve(mappingKey(req.Name))
	if !ok {
		return Mapping{}, false, fmt.Errorf("unlock %s as %s: %w", dev.Devnode, req.Name, ErrDeviceBusy)
	}
	defer release()
	if mp, ok, err := m.alreadyOpen(dev, req.Name); err != nil || ok {
		return mp, ok, err
	}
	if err := checkDevnode(dev); err != nil {
		return Mapping{}, false, fmt.Errorf("unlock %s: %w", dev.Devnode, err)
	}
	mp = newMapping(dev, req)
	mp.Backing.Diskseq = m.diskseq(dev.Devpath)
	if err := m.putMapping(mp); err != nil {
		return Mapping{}, false, fmt.Errorf("unlock %s: not opened: %w", dev.Devnode, err)
	}
	err = m.cfg.Crypt.Open(ctx, crypt.OpenRequest{Device: dev.Devnode, Name: req.Name, Keyfile: req.Keyfile,
		ReadOnly: req.ReadOnly, Rule: req.Rule, Timeout: req.Timeout})
	if err == nil {
		mp.Cleartext, err = m.cleartext(ctx, req.Name)
	}
	if err == nil {
		err = m.putMapping(mp)
	}
	if err != nil {
		return Mapping{}, false, fmt.Errorf("unlock %s: %w", dev.Devnode, errors.Join(err, m.undoOpen(ctx, mp)))
	}
	return mp, false, nil
}

// PlanUnlock is the mapping an Unlock of dev would open, for a dry run,
// with its cleartext's node; a name Unlock refuses is refused. A
// Simulated Mounter records it as open, its cleartext a device of its
// own machine, until the removal of dev closes it (CloseMappingsOn): as
// Unlock, it returns one it opened for dev already with open true, and
// refuses a name it opened for another device with ErrMappingExists.
func (m *Mounter) PlanUnlock(dev Device, req UnlockRequest) (mp Mapping, open bool, err error) {
	if err := checkMappingName(req.Name); err != nil {
		return Mapping{}, false, fmt.Errorf("unlock %s: %w", dev.Devnode, err)
	}
	mp = newMapping(dev, req)
	mp.Cleartext.Devnode = m.CleartextNode(req.Name)
	if !m.cfg.Simulated {
		return mp, false, nil // this machine's: the cleartext has a number once opened
	}
	release, ok := m.reserve(mappingKey(req.Name))
	if !ok {
		return Mapping{}, false, fmt.Errorf("unlock %s as %s: %w", dev.Devnode, req.Name, ErrDeviceBusy)
	}
	defer release()
	if rec, ok, err := m.alreadyOpen(dev, req.Name); err != nil || ok {
		return rec, ok, err
	}
	m.simulateOpen(&mp)
	return mp, false, nil
}

// alreadyOpen looks at what has the name now: the kernel's mappings and
// the recorded ones. The caller holds the name's reservation.
func (m *Mounter) alreadyOpen(dev Device, name string) (Mapping, bool, error) {
	m.mu.Lock()
	rec, recorded := m.mappings[name]
	m.mu.Unlock()
	cur, inKernel := m.findMapping(name)
	switch {
	case recorded && inKernel && sameDevice(rec.Backing, dev):
		if rec.Cleartext.Major == 0 && rec.Cleartext.Minor == 0 {
			rec.Cleartext = cur
			if err := m.putMapping(rec); err != nil {
				return Mapping{}, false, fmt.Errorf("unlock %s: %w", dev.Devnode, err)
			}
		}
		return rec, true, nil
	case recorded && inKernel:
		return Mapping{}, false, fmt.Errorf("unlock %s as %s: %w: hotplugd opened it for %s", dev.Devnode, name,
			ErrMappingExists, describe(rec.Backing))
	case inKernel:
		return Mapping{}, false, fmt.Errorf("unlock %s as %s: %w, which hotplugd did not open", dev.Devnode, name, ErrMappingExists)
	case recorded:
		m.dropMapping(name) // closed behind hotplugd's back
	}
	return Mapping{}, false, nil
}

// putMapping records mp and saves the state.
func (m *Mounter) putMapping(mp Mapping) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, had := m.mappings[mp.Name]
	m.mappings[mp.Name] = mp
	if err := m.saveLocked(); err != nil {
		if had {
			m.mappings[mp.Name] = old
		} else {
			delete(m.mappings, mp.Name)
		}
		return fmt.Errorf("%w: %w", errStateNotSaved, err)
	}
	return nil
}

// dropMapping forgets a mapping and saves the state. A plan-only
// Mounter of this machine forgets nothing: the state is the daemon's.
func (m *Mounter) dropMapping(name string) {
	if m.cfg.PlanOnly && !m.cfg.Simulated {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.mappings, name)
	if err := m.saveLocked(); err != nil {
		m.log.Error("mount state could not be saved", "err", err)
	}
}

// undoOpen closes what a failed Unlock may have left open and forgets
// the mapping; a mapping it cannot close stays recorded for Reconcile.
func (m *Mounter) undoOpen(ctx context.Context, mp Mapping) error {
	if _, ok := m.findMapping(mp.Name); ok {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cfg.Timeout)
		defer cancel()
		if _, _, err := m.closeCrypt(ctx, mp, false); err != nil {
			return fmt.Errorf("the mapping left open could not be closed: %w", err)
		}
	}
	m.dropMapping(mp.Name)
	return nil
}

// cleartext describes the device of the open mapping name, with its
// node /dev/mapper/<name>, once that node is the mapping's block device.
func (m *Mounter) cleartext(ctx context.Context, name string) (Device, error) {
	dev, ok := m.findMapping(name)
	if !ok {
		return Device{}, fmt.Errorf("cryptsetup opened no mapping %s", name)
	}
	dev.Devnode = m.CleartextNode(name)
	deadline := time.Now().Add(cleartextWait)
	for {
		err := checkDevnode(dev)
		if err == nil {
			return dev, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return Device{}, fmt.Errorf("cleartext device of %s: %w", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// findMapping finds the kernel's mapping called name in sysfs
// (block/dm-N/dm/name) and describes its device, without a node; a
// Simulated Mounter's kernel has the mappings it planned.
func (m *Mounter) findMapping(name string) (Device, bool) {
	if m.cfg.Simulated {
		return m.simulatedMapping(name)
	}
	blocks, _ := filepath.Glob(m.cfg.Roots.SysPath("block", "dm-*"))
	for _, b := range blocks {
		got, err := os.ReadFile(filepath.Join(b, "dm", "name"))
		if err != nil || strings.TrimSpace(string(got)) != name {
			continue
		}
		num, err := os.ReadFile(filepath.Join(b, "dev"))
		if err != nil {
			continue
		}
		dev, err := parseDevNum(strings.TrimSpace(string(num)))
		if err != nil {
			continue
		}
		if target, err := os.Readlink(b); err == nil {
			dev.Devpath = strings.TrimPrefix(filepath.Join(filepath.Dir(b), target), filepath.Clean(m.cfg.Roots.Sys))
		}
		dev.Devname = filepath.Base(b)
		return dev, true
	}
	return Device{}, false
}

// CloseMappingsOn closes the mappings hotplugd opened on dev, for its
// removal: the cleartext's filesystem is unmounted first (lazily when
// busy) and its directory removed, then the mapping is closed, with
// --deferred when it is still in use (the kernel removes it once its
// last user lets go). A mapping that cannot be closed stays recorded for
// a retry (Reconcile). Devices are found as Unmount finds them.
//
// With PlanOnly it takes the same steps and does none of them: nothing
// is unmounted, removed, run or written, and the results say what would
// be. A Simulated Mounter forgets the cleartext's mount and the mapping,
// as if it had closed them.
func (m *Mounter) CloseMappingsOn(ctx context.Context, dev Device) ([]CloseResult, error) {
	var out []CloseResult
	var errs []error
	for _, mp := range m.MappingsOn(dev) {
		res, err := m.closeReserved(ctx, mp, detachIfBusy)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, res)
	}
	return out, errors.Join(errs...)
}

// closeReserved is closeMapping under the mapping's reservation and the
// configured Timeout.
func (m *Mounter) closeReserved(ctx context.Context, mp Mapping, mode busyMode) (CloseResult, error) {
	release, ok := m.reserve(mappingKey(mp.Name))
	if !ok {
		return CloseResult{Mapping: mp}, fmt.Errorf("close %s: %w", mp.Name, ErrDeviceBusy)
	}
	defer release()
	ctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
	defer cancel()
	return m.closeMapping(ctx, mp, mode)
}

// closeMapping unmounts the cleartext's filesystem if hotplugd mounted
// it (mode says what happens when it is busy), closes the mapping if the
// kernel still has it, and forgets it. The caller holds the mapping's
// reservation.
func (m *Mounter) closeMapping(ctx context.Context, mp Mapping, mode busyMode) (CloseResult, error) {
	res := CloseResult{Mapping: mp}
	if mp.Cleartext.Major != 0 || mp.Cleartext.Minor != 0 {
		key := mp.Cleartext.DevNum()
		m.mu.Lock()
		e, mounted := m.entries[key]
		m.mu.Unlock()
		if mounted {
			release, ok := m.reserve(key)
			if !ok {
				return res, fmt.Errorf("close %s: unmount %s: %w", mp.Name, e.MountPoint, ErrDeviceBusy)
			}
			u, _, err := m.cleanup(ctx, key, e, mode)
			release()
			if err != nil {
				return res, fmt.Errorf("close %s: %w", mp.Name, err)
			}
			res.Unmount = &u
		}
	}
	if _, ok := m.findMapping(mp.Name); ok {
		lazy := res.Unmount != nil && res.Unmount.Lazy
		argv, deferred, err := m.closeCrypt(ctx, mp, lazy)
		if err != nil {
			return res, err
		}
		res.Argv, res.Deferred = argv, deferred
	}
	m.dropMapping(mp.Name)
	return res, nil
}

// closeCrypt runs cryptsetup close, --deferred at once when the
// cleartext was detached lazily (it is in use: a plain close would only
// retry for seconds), or when a plain close finds it in use, and returns
// the command that closed it. A plan-only Mounter runs nothing and
// returns the command it would run first.
func (m *Mounter) closeCrypt(ctx context.Context, mp Mapping, inUse bool) (argv []string, deferred bool, err error) {
	req := crypt.CloseRequest{Name: mp.Name, Deferred: inUse, Rule: mp.Rule, Timeout: m.cfg.Timeout}
	if m.cfg.PlanOnly {
		return m.cfg.Crypt.CloseArgv(req), false, nil
	}
	err = m.cfg.Crypt.Close(ctx, req)
	if errors.Is(err, crypt.ErrBusy) && !inUse {
		req.Deferred = true
		err = m.cfg.Crypt.Close(ctx, req)
	}
	if err != nil {
		return nil, false, err
	}
	if req.Deferred {
		_, deferred = m.findMapping(mp.Name) // --deferred removes one no longer in use at once
	}
	return m.cfg.Crypt.CloseArgv(req), deferred, nil
}

// EjectMapping closes a mapping an eject selected whose cleartext is not
// mounted (Selection.Mappings), deferred when something still holds it;
// one mounted since is ejected as Eject ejects its cleartext.
func (m *Mounter) EjectMapping(ctx context.Context, mp Mapping, force bool) (UnmountResult, error) {
	if m.cfg.PlanOnly {
		return UnmountResult{}, fmt.Errorf("close %s: %w", mp.Name, ErrPlanOnly)
	}
	return m.ejectMapping(ctx, mp, ejectMode(force))
}

// ejectMapping is Eject of a cleartext device: its filesystem unmounted
// as Eject does, then the mapping closed.
func (m *Mounter) ejectMapping(ctx context.Context, mp Mapping, mode busyMode) (UnmountResult, error) {
	res, err := m.closeReserved(ctx, mp, mode)
	out := UnmountResult{Closed: mp.Name, Deferred: res.Deferred}
	if res.Unmount != nil {
		closed, deferred := out.Closed, out.Deferred
		out = *res.Unmount
		out.Closed, out.Deferred = closed, deferred
	}
	if err != nil {
		out.Closed = ""
	}
	return out, err
}

// reconcileMappings is Reconcile's pass over the recorded mappings,
// before the mounts: one the kernel no longer has is forgotten, one on a
// device still present is adopted, one on a device that is gone has its
// cleartext detached and is closed (deferred while in use).
func (m *Mounter) reconcileMappings(ctx context.Context, present func(Device) bool, rep *ReconcileReport) []error {
	var errs []error
	for _, mp := range m.Mappings() {
		release, ok := m.reserve(mappingKey(mp.Name))
		if !ok {
			continue
		}
		cur, inKernel := m.findMapping(mp.Name)
		if inKernel && mp.Cleartext.Major == 0 && mp.Cleartext.Minor == 0 {
			cur.Devnode = m.CleartextNode(mp.Name)
			mp.Cleartext = cur // opened just before a crash
		}
		switch {
		case !inKernel:
			m.dropMapping(mp.Name)
			rep.Forgotten = append(rep.Forgotten, mp)
		case present(mp.Backing):
			if err := m.putMapping(mp); err != nil {
				errs = append(errs, err)
			}
			rep.Adopted = append(rep.Adopted, mp)
		default:
			opCtx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
			res, err := m.closeMapping(opCtx, mp, detachNow)
			cancel()
			if err != nil {
				rep.CloseFailed = append(rep.CloseFailed, mp)
				errs = append(errs, err)
			} else {
				rep.Closed = append(rep.Closed, res)
			}
		}
		release()
	}
	return errs
}
