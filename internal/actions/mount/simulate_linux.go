package mount

import "path/filepath"

// simulatedMapperMajor is the block major of the device-mapper of a
// Simulated Mounter's machine: the kernel hands out dynamic block majors
// from 254 down, and device-mapper is usually the first to ask.
const simulatedMapperMajor = 254

// simulatedDriver is the driver a Simulated Mounter's machine mounts a
// filesystem with: the first of its kernel drivers, which the machine is
// taken to have (every allow-listed type has one).
func simulatedDriver(drivers []driver) driverChoice {
	for _, d := range drivers {
		if d.kernel != "" {
			return driverChoice{drv: d}
		}
	}
	return driverChoice{drv: drivers[0]}
}

// simulateMount gives p the first of its names (with the suffixes
// freeName tries) that no mount planned before holds, and records p as
// mounted.
func (m *Mounter) simulateMount(dev Device, req Request, p *Plan) {
	m.mu.Lock()
	defer m.mu.Unlock()
	taken := make(map[string]bool, len(m.entries))
	for _, e := range m.entries {
		taken[filepath.Base(e.MountPoint)] = true
	}
	name := p.name
	for n := range maxNameTries {
		if name = suffixedName(p.name, n); !taken[name] {
			break
		}
	}
	p.name, p.MountPoint = name, filepath.Join(m.cfg.MountRoot, name)
	recorded := dev
	recorded.FSUsage, recorded.FSType = "", ""
	m.entries[dev.DevNum()] = Entry{Device: recorded, MountPoint: p.MountPoint, FSType: dev.FSType, Driver: p.Driver,
		Options: p.Options, Rule: req.Rule, CreatedDir: true}
}

// simulateOpen records mp as open, with a cleartext device numbered as
// the kernel numbers device-mapper's: the lowest minor no other open
// mapping has.
func (m *Mounter) simulateOpen(mp *Mapping) {
	m.mu.Lock()
	defer m.mu.Unlock()
	taken := make(map[uint32]bool, len(m.mappings))
	for _, o := range m.mappings {
		taken[o.Cleartext.Minor] = true
	}
	var minor uint32
	for taken[minor] {
		minor++
	}
	mp.Cleartext.Major, mp.Cleartext.Minor = simulatedMapperMajor, minor
	m.mappings[mp.Name] = *mp
}

// simulatedMapping is findMapping on a Simulated Mounter's machine,
// whose kernel has the mappings it planned open.
func (m *Mounter) simulatedMapping(name string) (Device, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mp, ok := m.mappings[name]
	return mp.Cleartext, ok
}
