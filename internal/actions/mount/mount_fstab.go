package mount

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// fstabEntry is the device field of one fstab line.
type fstabEntry struct {
	line int
	spec string // as written, unescaped: "/dev/sdb1", "LABEL=x", "UUID=x", ...
	dir  string
}

// readFstab reads the device fields of an fstab(5) file; a missing file
// has no entries.
func readFstab(path string) ([]fstabEntry, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read fstab: %w", err)
	}
	defer f.Close()
	return parseFstab(f)
}

// parseFstab parses fstab(5): blank lines and '#' comments are skipped,
// fields are separated by blanks, and \040-style octal escapes stand for
// blanks inside a field.
func parseFstab(r io.Reader) ([]fstabEntry, error) {
	var out []fstabEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		fields := strings.Fields(line)
		e := fstabEntry{line: n, spec: unescapeOctal(fields[0])}
		if len(fields) > 1 {
			e.dir = unescapeOctal(fields[1])
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read fstab: %w", err)
	}
	return out, nil
}

// unescapeOctal replaces \NNN octal escapes, as fstab and mountinfo use.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] <= '3' && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// byTag maps udev's /dev/disk/by-* directories to the tags they stand
// for: an fstab entry may name a device by its link, which does not exist
// without udev (source: kernel) but means the same.
var byTag = map[string]string{
	"/dev/disk/by-label/":     "LABEL",
	"/dev/disk/by-uuid/":      "UUID",
	"/dev/disk/by-partuuid/":  "PARTUUID",
	"/dev/disk/by-partlabel/": "PARTLABEL",
}

// fstabTag splits "LABEL=x", "UUID=x", "PARTUUID=x", "PARTLABEL=x" (value
// optionally quoted) and their /dev/disk/by-* links (whose names udev
// \xNN-encodes); ok is false for anything else, such as another path.
func fstabTag(spec string) (tag, value string, ok bool) {
	for dir, t := range byTag {
		if name, ok := strings.CutPrefix(spec, dir); ok && name != "" && !strings.Contains(name, "/") {
			return t, uevent.DecodeEnc(name), true
		}
	}
	tag, value, ok = strings.Cut(spec, "=")
	if !ok {
		return "", "", false
	}
	switch tag {
	case "LABEL", "UUID", "PARTUUID", "PARTLABEL":
	default:
		return "", "", false
	}
	if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
		value = value[1 : len(value)-1]
	}
	return tag, value, true
}

// matchesTag reports whether an fstab tag names dev. UUIDs compare
// case-insensitively, as blkid does; labels exactly.
func matchesTag(dev Device, tag, value string) bool {
	if value == "" {
		return false
	}
	switch tag {
	case "LABEL":
		return dev.Label == value
	case "UUID":
		return strings.EqualFold(dev.UUID, value)
	case "PARTUUID":
		return strings.EqualFold(dev.PartUUID, value)
	case "PARTLABEL":
		return dev.PartLabel == value
	}
	return false
}
