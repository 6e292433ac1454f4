package route

import (
	"os"
	"strconv"
	"strings"
)

// sysfs finds the devpath of an interface, the DEVPATH its uevents carry.
type sysfs struct {
	root *os.Root // the sysfs root; nil: none
}

// devpath is the devpath of interface name with index: the target of
// /sys/class/net/NAME (../../devices/...), confirmed by its ifindex
// attribute. When sysfs does not confirm it (the interface is gone or
// renamed already, or sysfs shows another network namespace) it is
// /devices/virtual/net/NAME, and sure is false so that the next message
// of the link asks again. name is a checked interface name (one path
// component, see validName), and the root keeps every lookup inside
// sysfs.
func (s sysfs) devpath(name string, index int32) (devpath string, sure bool) {
	guess := "/devices/virtual/net/" + name
	if s.root == nil {
		return guess, false
	}
	target, err := s.root.Readlink("class/net/" + name)
	if err != nil {
		return guess, false
	}
	rel, ok := strings.CutPrefix(target, "../../devices/")
	if !ok || !cleanPath(rel) {
		return guess, false
	}
	b, err := s.root.ReadFile("devices/" + rel + "/ifindex")
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(int(index)) {
		return guess, false
	}
	return "/devices/" + rel, true
}

// cleanPath reports whether every "/"-separated segment of p is a plain
// name: not empty, "." or "..".
func cleanPath(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// validName reports whether name is an interface name as the kernel
// allows one (dev_valid_name in net/core/dev.c): 1 to 15 bytes, not "."
// or "..", without '/', ':', NUL or white space.
func validName(name string) bool {
	if name == "" || len(name) > 15 || name == "." || name == ".." {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case '/', ':', 0, ' ', '\t', '\n', '\v', '\f', '\r':
			return false
		}
	}
	return true
}
