// Package host names the directories of the machine that hotplugd reads
// and writes: sysfs, device nodes, procfs, configuration and runtime
// state. Every package takes them from one Roots value, so a test points
// them all elsewhere at once and each default is written here alone.
package host

import (
	"path/filepath"
	"strings"
)

// Roots are the host directories. A zero field means its default.
type Roots struct {
	Sys  string // sysfs (default /sys)
	Dev  string // device nodes, devtmpfs (default /dev)
	Proc string // procfs (default /proc)
	Etc  string // system configuration: fstab (default /etc)
	Run  string // runtime state: udevd's control socket, users' session buses (default /run)
}

// Default returns the real system's roots.
func Default() Roots {
	return Roots{Sys: "/sys", Dev: "/dev", Proc: "/proc", Etc: "/etc", Run: "/run"}
}

// WithDefaults returns r with each empty field set to its default.
func (r Roots) WithDefaults() Roots {
	d := Default()
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&r.Sys, d.Sys)
	def(&r.Dev, d.Dev)
	def(&r.Proc, d.Proc)
	def(&r.Etc, d.Etc)
	def(&r.Run, d.Run)
	return r
}

// SysPath joins elem under the sysfs root.
func (r Roots) SysPath(elem ...string) string { return join(r.WithDefaults().Sys, elem) }

// ProcPath joins elem under the procfs root.
func (r Roots) ProcPath(elem ...string) string { return join(r.WithDefaults().Proc, elem) }

// EtcPath joins elem under the configuration root.
func (r Roots) EtcPath(elem ...string) string { return join(r.WithDefaults().Etc, elem) }

// RunPath joins elem under the runtime root.
func (r Roots) RunPath(elem ...string) string { return join(r.WithDefaults().Run, elem) }

// DevNode is the device node of a kernel DEVNAME ("sdb1", "input/event3"),
// or "" when devname is "". An absolute devname (udev's DEVNAME is
// "/dev/sdb1") is taken as relative to the device root.
func (r Roots) DevNode(devname string) string {
	if devname == "" {
		return ""
	}
	return join(r.WithDefaults().Dev, []string{strings.TrimPrefix(devname, "/dev/")})
}

func join(root string, elem []string) string {
	return filepath.Join(append([]string{root}, elem...)...)
}
