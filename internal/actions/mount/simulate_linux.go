package mount

import "path/filepath"

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
