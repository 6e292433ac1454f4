package mount

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions/crypt"
)

// ErrMappingExists is the error of an Unlock whose name another mapping
// has: one hotplugd did not open, or that of another device.
var ErrMappingExists = errors.New("a mapping of that name exists")

// Mapping records a device-mapper mapping hotplugd opened: a LUKS device
// a rule unlocked. It is in the state file from just before cryptsetup
// opens it until it is closed, so that the removal of its device, an
// eject and Reconcile close it, even after a crash.
type Mapping struct {
	Name    string `json:"name"`
	Backing Device `json:"backing"` // the encrypted device
	// Cleartext is the mapping's device, /dev/mapper/<Name>; zero while
	// cryptsetup opens it.
	Cleartext Device    `json:"cleartext"`
	ReadOnly  bool      `json:"read_only,omitempty"`
	Rule      string    `json:"rule,omitempty"`
	OpenedAt  time.Time `json:"opened_at"`
}

// UnlockRequest is what an unlock action asks for.
type UnlockRequest struct {
	Name     string // the mapping's name
	Keyfile  string // the key's file, checked again on its descriptor
	ReadOnly bool
	Rule     string
	Timeout  time.Duration // of cryptsetup
}

// CloseResult says what closing a mapping did.
type CloseResult struct {
	Mapping Mapping
	// Unmount is what was done with the cleartext's filesystem, when
	// hotplugd had mounted it; nil otherwise.
	Unmount *UnmountResult
	// Deferred: the mapping was still in use; the kernel removes it once
	// its last user closes it (cryptsetup close --deferred).
	Deferred bool
	// Argv is the cryptsetup command that closed it (with PlanOnly, that
	// would); nil when the kernel had closed it already.
	Argv []string
}

// mappingKey is a mapping's key in Mounter.busy, apart from devices'.
func mappingKey(name string) string { return "mapping " + name }

// checkMappingName refuses names cleanup must not hand to cryptsetup.
func checkMappingName(name string) error {
	if name == "" || len(name) > 127 || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, "-") {
		return fmt.Errorf("bad mapping name %q", name)
	}
	return nil
}

// sortedMappings returns the mappings ordered by name.
func sortedMappings(mappings map[string]Mapping) []Mapping {
	out := make([]Mapping, 0, len(mappings))
	for _, mp := range mappings {
		out = append(out, mp)
	}
	slices.SortFunc(out, func(a, b Mapping) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Mappings returns the mappings hotplugd has opened, sorted by name.
func (m *Mounter) Mappings() []Mapping {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedMappings(m.mappings)
}

// MappingOf returns the mapping whose cleartext dev is, if any.
func (m *Mounter) MappingOf(dev Device) (Mapping, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mp := range m.mappings {
		if mp.Cleartext.Major != 0 && sameDevice(mp.Cleartext, dev) {
			return mp, true
		}
	}
	return Mapping{}, false
}

// MappingsOn returns the mappings whose backing device dev is, as
// Unmount finds a device: by major:minor when known, else by devpath.
func (m *Mounter) MappingsOn(dev Device) []Mapping {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Mapping
	for _, mp := range sortedMappings(m.mappings) {
		if sameDevice(mp.Backing, dev) {
			out = append(out, mp)
		}
	}
	return out
}

// sameDevice reports whether two descriptions are of one device: the
// same major:minor (and devpath, when both know it: numbers are reused),
// or without a number the same devpath.
func sameDevice(rec, dev Device) bool {
	if dev.Major == 0 && dev.Minor == 0 {
		return dev.Devpath != "" && rec.Devpath == dev.Devpath
	}
	return rec.DevNum() == dev.DevNum() && (rec.Devpath == "" || dev.Devpath == "" || rec.Devpath == dev.Devpath)
}

// saveLocked writes the state file; the caller holds m.mu. A plan-only
// Mounter writes nothing: the file is the daemon's.
func (m *Mounter) saveLocked() error {
	if m.cfg.PlanOnly {
		return nil
	}
	return writeStateFile(m.cfg.StatePath, m.entries, m.mappings)
}

// loadMappings reads the recorded mappings, after the mounts.
func (m *Mounter) loadMappings() {
	mappings, err := readMappings(m.cfg.StatePath)
	if err != nil {
		m.log.Error("mappings in the mount state unreadable; leaving them alone", "path", m.cfg.StatePath, "err", err)
		mappings = map[string]Mapping{}
	}
	m.mappings = mappings
}

// CleartextNode is the node of the cleartext of mapping name,
// /dev/mapper/<name>.
func (m *Mounter) CleartextNode(name string) string {
	return m.cfg.Roots.DevNode(filepath.Join("mapper", name))
}

// newMapping is the record of the mapping req opens on dev.
func newMapping(dev Device, req UnlockRequest) Mapping {
	backing := dev
	backing.FSUsage, backing.FSType = "", ""
	return Mapping{Name: req.Name, Backing: backing, ReadOnly: req.ReadOnly, Rule: req.Rule, OpenedAt: time.Now().UTC()}
}

// UnlockArgv is the cryptsetup command Unlock runs for dev.
func (m *Mounter) UnlockArgv(dev Device, req UnlockRequest) []string {
	return m.cfg.Crypt.OpenArgv(crypt.OpenRequest{Device: dev.Devnode, Name: req.Name, ReadOnly: req.ReadOnly})
}
