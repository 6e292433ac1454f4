//go:build !linux

package actions

import (
	"context"
	"errors"
)

// errMountUnsupported is what every mount operation says off Linux.
var errMountUnsupported = errors.New("mounting is only supported on Linux")

// NewMounter fails: hotplugd mounts only on Linux.
func NewMounter(MounterConfig) (*Mounter, error) { return nil, errMountUnsupported }

// Plan fails off Linux.
func (m *Mounter) Plan(Device, MountRequest) (Plan, error) { return Plan{}, errMountUnsupported }

// Mount fails off Linux.
func (m *Mounter) Mount(context.Context, Device, MountRequest) (MountEntry, error) {
	return MountEntry{}, errMountUnsupported
}

// Unmount fails off Linux.
func (m *Mounter) Unmount(context.Context, Device) (UnmountResult, error) {
	return UnmountResult{}, errMountUnsupported
}

// Reconcile fails off Linux.
func (m *Mounter) Reconcile(context.Context, func(Device) bool) (ReconcileReport, error) {
	return ReconcileReport{}, errMountUnsupported
}
