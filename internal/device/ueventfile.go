package device

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// freeKey is a key whose value the kernel copies from a device string.
type freeKey struct {
	key string
	// attr is the device's attribute showing the same string ("%s\n"),
	// quoted in the uevent file when quote is set.
	attr  string
	quote bool
	// until, for a key without attr, is the key the kernel always writes
	// next: the value runs up to the last line of that key.
	until string
}

// freeKeys returns the keys of a subsystem's uevent files that carry
// device strings.
func freeKeys(subsystem string) []freeKey {
	switch subsystem {
	case "input": // input_dev_uevent, drivers/input/input.c
		return []freeKey{{key: "NAME", attr: "name", quote: true}, {key: "PHYS", attr: "phys", quote: true}, {key: "UNIQ", attr: "uniq", quote: true}}
	case "hid": // hid_uevent, drivers/hid/hid-core.c: no attributes
		return []freeKey{{key: "HID_NAME", until: "HID_PHYS"}, {key: "HID_PHYS", until: "HID_UNIQ"}, {key: "HID_UNIQ", until: "MODALIAS"}}
	case "power_supply": // power_supply_uevent, drivers/power/supply/power_supply_sysfs.c
		return []freeKey{{key: "POWER_SUPPLY_NAME", until: "POWER_SUPPLY_TYPE"}}
	case "mmc": // mmc_bus_uevent, drivers/mmc/core/bus.c
		return append(sdioInfo(), freeKey{key: "MMC_NAME", attr: "name"})
	case "sdio": // sdio_bus_uevent, drivers/mmc/core/sdio_bus.c
		return sdioInfo()
	}
	return nil
}

// sdioInfo are the CIS strings of an SDIO card, as info1..info4 show them.
func sdioInfo() []freeKey {
	var keys []freeKey
	for _, n := range "1234" {
		keys = append(keys, freeKey{key: "SDIO_INFO" + string(n), attr: "info" + string(n)})
	}
	return keys
}

// notHere reports whether the kernel never writes key after the keys of
// dev_uevent's own.
func notHere(key string) bool {
	switch key {
	case "ACTION", "DEVPATH", "SUBSYSTEM", "SEQNUM",
		"MAJOR", "MINOR", "DEVNAME", "DEVMODE", "DEVUID", "DEVGID", "DEVTYPE", "DRIVER",
		"DEVLINKS", "TAGS", "CURRENT_TAGS", "USEC_INITIALIZED":
		return true
	}
	return strings.HasPrefix(key, "ID_")
}

// ueventFile reads the uevent file of one device. The file holds what
// dev_uevent (drivers/base/core.c) adds to an event of the device, one
// "KEY=value\n" per add_uevent_var, in this order:
//
//   - MAJOR, MINOR, DEVNAME, DEVMODE, DEVUID, DEVGID: only for a device
//     with a dev_t, which sysfs also shows as its "dev" attribute;
//   - DEVTYPE and DRIVER: names from kernel code;
//   - the device tree's OF_* keys, then the keys of the bus, the class
//     and the device type.
//
// ACTION, DEVPATH, SUBSYSTEM and SEQNUM are never in it (kobject_uevent_env
// adds them to the message), nor are udev's ID_*, DEVLINKS or TAGS.
//
// Values are not escaped, and some come from the device: input NAME, PHYS
// and UNIQ (input_dev_uevent, quoted), HID_NAME and HID_UNIQ (hid_uevent),
// POWER_SUPPLY_NAME ("hid-<serial>-battery"), MMC_NAME and SDIO_INFO<n>.
// A USB string descriptor may hold a newline, and then a naive reading
// takes the rest of the string for properties of the device's choosing.
// The netlink message is not affected: its properties are NUL-separated.
// (power_supply_uevent cuts its other values at their first newline.)
//
// So a line counts as a property only where the kernel could have written
// it: the device-node keys only at the top and only as the "dev"
// attribute says (no device string comes before them); a value copied
// from a device string runs as far as the attribute showing the same
// string, or the key the kernel writes next, says; a line without "=", or
// with a key the kernel never writes there, continues the value before
// it, as in the kernel's string. What cannot be told is a newline in a
// string of a driver not named here followed by a key the kernel might
// write: that key is taken as it reads.
type ueventFile struct {
	dir       *os.Root // the device's directory
	name      string   // the device's name in sysfs
	subsystem string
	buf       []byte
}

// props returns the properties of the uevent file's text.
func (u *ueventFile) props(text string) ([]uevent.Property, error) {
	if text == "" {
		return nil, nil
	}
	lines := strings.Split(text, "\n")
	props, i, err := u.devnode(lines)
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"DEVTYPE", "DRIVER"} {
		if i < len(lines) && strings.HasPrefix(lines[i], k+"=") {
			props = append(props, uevent.Property{Key: k, Value: lines[i][len(k)+1:]})
			i++
		}
	}
	return u.rest(lines, i, props)
}

// devnode returns the device-node properties the file starts with, and
// how many lines they take.
func (u *ueventFile) devnode(lines []string) ([]uevent.Property, int, error) {
	devt, err := readFile(u.dir, "dev", u.buf)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, err
	}
	major, minor, _ := strings.Cut(devt, ":")
	if len(lines) < 2 || lines[0] != "MAJOR="+major || lines[1] != "MINOR="+minor {
		return nil, 0, fmt.Errorf("%w: MAJOR and MINOR are not dev %q", errBadUevent, devt)
	}
	props := []uevent.Property{{Key: "MAJOR", Value: major}, {Key: "MINOR", Value: minor}}
	i := 2
	// DEVMODE, DEVUID and DEVGID follow only a DEVNAME.
	for _, k := range []string{"DEVNAME", "DEVMODE", "DEVUID", "DEVGID"} {
		if i < len(lines) && strings.HasPrefix(lines[i], k+"=") {
			props = append(props, uevent.Property{Key: k, Value: lines[i][len(k)+1:]})
			i++
		} else if k == "DEVNAME" {
			break
		}
	}
	if i > 2 && strings.Contains(u.name, "\n") {
		// DEVNAME is often the device's name, and would run on.
		return nil, 0, fmt.Errorf("%w: a device node named with a newline", errBadUevent)
	}
	return props, i, nil
}

// rest appends the properties of lines[i:] to props, whose fixed
// dev_uevent keys no line may continue.
func (u *ueventFile) rest(lines []string, i int, props []uevent.Property) ([]uevent.Property, error) {
	fixed := len(props)
	free := freeKeys(u.subsystem)
	for i < len(lines) {
		line := lines[i]
		k, v, ok := strings.Cut(line, "=")
		if f := lookupFree(free, k); ok && f != nil {
			p, n, err := u.freeValue(lines, i, *f, free)
			if err != nil {
				return nil, err
			}
			props, i = append(props, p), i+n
			continue
		}
		if !ok || !validKey(k) || notHere(k) {
			if len(props) == fixed {
				return nil, fmt.Errorf("%w: line %q", errBadUevent, line)
			}
			props[len(props)-1].Value += "\n" + line
		} else {
			props = append(props, uevent.Property{Key: k, Value: v})
		}
		i++
	}
	return props, nil
}

// freeValue reads the value of free key f starting at lines[i], and
// returns its property and how many lines it takes.
func (u *ueventFile) freeValue(lines []string, i int, f freeKey, free []freeKey) (uevent.Property, int, error) {
	if f.attr == "" {
		end := anchor(lines, i, f.until, free)
		if end < 0 {
			return uevent.Property{}, 0, fmt.Errorf("%w: no %s after %s", errBadUevent, f.until, f.key)
		}
		v := strings.Join(lines[i:end], "\n")
		return uevent.Property{Key: f.key, Value: v[len(f.key)+1:]}, end - i, nil
	}
	v, err := readFile(u.dir, f.attr, u.buf)
	if err != nil {
		return uevent.Property{}, 0, fmt.Errorf("%s: %w", f.key, err)
	}
	want := f.key + "=" + v
	if f.quote {
		want = f.key + `="` + v
	}
	n := strings.Count(want, "\n") + 1
	if i+n > len(lines) {
		return uevent.Property{}, 0, fmt.Errorf("%w: %s is not attribute %s", errBadUevent, f.key, f.attr)
	}
	switch got := strings.Join(lines[i:i+n], "\n"); {
	case f.quote && got == want+`"`:
		return uevent.Property{Key: f.key, Value: got[len(f.key)+1:]}, n, nil
	case got != want:
		return uevent.Property{}, 0, fmt.Errorf("%w: %s is not attribute %s", errBadUevent, f.key, f.attr)
	case !f.quote:
		// Newlines readFile dropped from the end follow as empty lines.
		return uevent.Property{Key: f.key, Value: v}, n, nil
	}
	return closeQuote(lines, i, n, f.key)
}

// closeQuote finishes a quoted value whose first n lines matched an
// attribute readFile cut its trailing newlines from: they are the empty
// lines before the closing quote.
func closeQuote(lines []string, i, n int, key string) (uevent.Property, int, error) {
	for j := i + n; j < len(lines) && (lines[j] == "" || lines[j] == `"`); j++ {
		if lines[j] == `"` {
			v := strings.Join(lines[i:j+1], "\n")
			return uevent.Property{Key: key, Value: v[len(key)+1:]}, j + 1 - i, nil
		}
	}
	return uevent.Property{}, 0, fmt.Errorf("%w: %s has no closing quote", errBadUevent, key)
}

// anchor returns the line the kernel wrote for key after lines[from]: the
// last one before that of the key it writes next, if that is free too,
// else the last one; -1 if there is none.
func anchor(lines []string, from int, key string, free []freeKey) int {
	limit := len(lines)
	if f := lookupFree(free, key); f != nil && f.until != "" {
		if limit = anchor(lines, from, f.until, free); limit < 0 {
			return -1
		}
	}
	for j := limit - 1; j > from; j-- {
		if strings.HasPrefix(lines[j], key+"=") {
			return j
		}
	}
	return -1
}

func lookupFree(free []freeKey, key string) *freeKey {
	for i := range free {
		if free[i].key == key {
			return &free[i]
		}
	}
	return nil
}

// validKey accepts what the uevent parser accepts as a key.
func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
