package rules

import (
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/hotplugd/hotplugd/internal/keyfile"
)

// UnlockSpec opens the event's LUKS device with a keyfile
// (cryptsetup open); the actions after it act on the cleartext device,
// whose node is unlock.device.
type UnlockSpec struct {
	Pos Pos
	// Keyfile holds the key: an absolute path to a regular file of
	// root's that no one else may read or write (keyfile.Check).
	Keyfile string
	// Name is the mapping's name; "" for luks-<uuid> (MappingName).
	Name     string
	ReadOnly bool // open the mapping read-only
	Timeout  time.Duration
}

// Kind returns "unlock".
func (*UnlockSpec) Kind() string { return "unlock" }

// Position returns where the action is written.
func (s *UnlockSpec) Position() Pos { return s.Pos }

// maxMappingName is the longest device-mapper name (DM_NAME_LEN, 128,
// with its NUL).
const maxMappingName = 127

// mappingName is what a mapping's name may look like: characters
// device-mapper and udev take as they are (others udev mangles), never
// a leading '-' that cryptsetup would read as an option, never '/'.
var mappingName = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9#+.:=@_-]*$`)

// errNoUUID: the default name of a mapping needs the device's LUKS UUID.
var errNoUUID = errors.New("the device has no LUKS UUID to name its mapping after; give the unlock a name")

// MappingName is the name of the mapping for the LUKS device whose
// header has uuid: the rule's Name, else luks-<uuid> as systemd's
// cryptsetup names them. The UUID is the device's to say: every
// character a mapping name may not have becomes '_', and it is cut to
// the longest name device-mapper takes.
func (s *UnlockSpec) MappingName(uuid string) (string, error) {
	if s.Name != "" {
		return s.Name, nil
	}
	if uuid == "" {
		return "", errNoUUID
	}
	var b strings.Builder
	b.WriteString("luks-")
	for _, r := range uuid {
		if b.Len() == maxMappingName {
			break
		}
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String(), nil
}

func (l *loader) loadUnlock(n *yaml.Node, pos Pos) *UnlockSpec {
	s := &UnlockSpec{Pos: pos, Timeout: l.settings.ActionTimeout}
	f := l.fields(n, "unlock", "keyfile", "name", "read_only", "timeout")
	if v, ok := f["keyfile"]; !ok {
		l.errPos(pos, "unlock needs a keyfile (a file of root's no one else may read)")
	} else if p, ok := l.str(v.val, "keyfile"); ok {
		switch {
		case !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.ContainsRune(p, 0):
			l.errAt(v.val, "keyfile %q must be a clean absolute path", p)
		default:
			if err := keyfile.Check(p); err != nil {
				l.errAt(v.val, "%v", err)
			}
			s.Keyfile = p
		}
	}
	if v, ok := f["name"]; ok {
		if name, ok := l.str(v.val, "name"); ok {
			switch {
			case strings.Contains(name, "{{"):
				l.errAt(v.val, "name is a plain name, not a template: a device never names its mapping")
			case len(name) > maxMappingName || !mappingName.MatchString(name):
				l.errAt(v.val, "name %q: use at most %d letters, digits and #+.:=@_- (not starting with -)", name, maxMappingName)
			default:
				s.Name = name
			}
		}
	}
	if v, ok := f["read_only"]; ok {
		if b, ok := l.boolean(v.val, "read_only"); ok {
			s.ReadOnly = b
		}
	}
	if v, ok := f["timeout"]; ok {
		if d, ok := l.duration(v.val, "timeout"); ok {
			s.Timeout = d
		}
	}
	return s
}
