//go:build !linux

package mount

import (
	"context"
	"errors"
)

// errMountUnsupported is what every mount operation says off Linux.
var errMountUnsupported = errors.New("mounting is only supported on Linux")

// NewMounter fails: hotplugd mounts only on Linux.
func NewMounter(Config) (*Mounter, error) { return nil, errMountUnsupported }

// Plan fails off Linux.
func (m *Mounter) Plan(Device, Request) (Plan, error) { return Plan{}, errMountUnsupported }

// Mount fails off Linux.
func (m *Mounter) Mount(context.Context, Device, Request) (Entry, error) {
	return Entry{}, errMountUnsupported
}

// Unmount fails off Linux.
func (m *Mounter) Unmount(context.Context, Device) (UnmountResult, error) {
	return UnmountResult{}, errMountUnsupported
}

// Reconcile fails off Linux.
func (m *Mounter) Reconcile(context.Context, func(Device) bool) (ReconcileReport, error) {
	return ReconcileReport{}, errMountUnsupported
}

// Eject fails off Linux.
func (m *Mounter) Eject(context.Context, Device, bool) (UnmountResult, error) {
	return UnmountResult{}, errMountUnsupported
}

// EjectMapping fails off Linux.
func (m *Mounter) EjectMapping(context.Context, Mapping, bool) (UnmountResult, error) {
	return UnmountResult{}, errMountUnsupported
}

// Unlock fails off Linux.
func (m *Mounter) Unlock(context.Context, Device, UnlockRequest) (Mapping, bool, error) {
	return Mapping{}, false, errMountUnsupported
}

// PlanUnlock fails off Linux.
func (m *Mounter) PlanUnlock(Device, UnlockRequest) (Mapping, bool, error) {
	return Mapping{}, false, errMountUnsupported
}

// CloseMappingsOn fails off Linux.
func (m *Mounter) CloseMappingsOn(context.Context, Device) ([]CloseResult, error) {
	return nil, errMountUnsupported
}
