package uevent

import (
	"strings"
	"unicode/utf8"
)

// FS is what is known of the filesystem on a block device: the fs.*
// variables of the rules. It comes from an event's ID_FS_* properties
// (udev's blkid builtin sets them) or from a blkid probe, which prints the
// same properties; FSFromProps decodes both. Label and UUID are
// device-controlled bytes, kept exactly as the superblock holds them.
// The expr tags are the names rules use (fs.type, fs.label, ...), the
// json tags those of a recording (`monitor --json --walk`).
type FS struct {
	Type    string `expr:"type" json:"type"` // "ext4", "vfat", "crypto_LUKS", ...
	Label   string `expr:"label" json:"label"`
	UUID    string `expr:"uuid" json:"uuid"`
	Usage   string `expr:"usage" json:"usage"` // "filesystem", "crypto", "raid", "other"
	Version string `expr:"version" json:"version"`
}

// FSFromProps reads ID_FS_* properties, as udev's blkid builtin sets them
// and as `blkid -o udev` prints them: TYPE, VERSION and the _ENC variants
// of LABEL and UUID are \xNN-encoded; plain LABEL and UUID, which udev
// makes lossy ("My_Disk" for "My Disk"), are used only when there is no
// _ENC (an event written by hand). ok is false when there is no ID_FS_*
// property at all.
func FSFromProps(props []Property) (fs FS, ok bool) {
	var labelEnc, uuidEnc bool
	for _, p := range props {
		if !strings.HasPrefix(p.Key, "ID_FS_") {
			continue
		}
		ok = true
		switch p.Key {
		case "ID_FS_TYPE":
			fs.Type = DecodeEnc(p.Value)
		case "ID_FS_USAGE":
			fs.Usage = p.Value
		case "ID_FS_VERSION":
			fs.Version = DecodeEnc(p.Value)
		case "ID_FS_LABEL":
			if !labelEnc {
				fs.Label = p.Value
			}
		case "ID_FS_LABEL_ENC":
			fs.Label, labelEnc = DecodeEnc(p.Value), true
		case "ID_FS_UUID":
			if !uuidEnc {
				fs.UUID = p.Value
			}
		case "ID_FS_UUID_ENC":
			fs.UUID, uuidEnc = DecodeEnc(p.Value), true
		}
	}
	return fs, ok
}

// DecodeEnc undoes blkid_encode_string (and udev's encode_devnode_name):
// "\xNN" is the byte NN. A backslash not starting "\xNN" is kept.
func DecodeEnc(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if hi, ok1 := unhex(s[i+2]); ok1 {
				if lo, ok2 := unhex(s[i+3]); ok2 {
					b = append(b, hi<<4|lo)
					i += 3
					continue
				}
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

// WellEncoded reports whether s could have come from blkid_encode_string:
// valid UTF-8, no control characters, every backslash starting \xNN.
func WellEncoded(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return false
		case c == '\\':
			if i+3 >= len(s) || s[i+1] != 'x' {
				return false
			}
			if _, ok := unhex(s[i+2]); !ok {
				return false
			}
			if _, ok := unhex(s[i+3]); !ok {
				return false
			}
			i += 3
		}
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Partition is what is known of a partition's entry in its table, for
// fstab's PARTUUID= and PARTLABEL=: from udev's ID_PART_ENTRY_UUID and
// ID_PART_ENTRY_NAME (\xNN-encoded, as blkid prints them too) or, in a
// kernel event, PARTNAME, which the kernel's own partition parser sets
// from a GPT entry. Name is device-controlled.
type Partition struct {
	UUID string
	Name string
}

// PartitionFromProps reads the partition entry properties; ok is false
// when there is none.
func PartitionFromProps(props []Property) (p Partition, ok bool) {
	var named bool
	for _, pr := range props {
		switch pr.Key {
		case "ID_PART_ENTRY_UUID":
			p.UUID, ok = DecodeEnc(pr.Value), true
		case "ID_PART_ENTRY_NAME":
			p.Name, named, ok = DecodeEnc(pr.Value), true, true
		case "PARTNAME":
			if !named {
				p.Name, ok = pr.Value, true
			}
		}
	}
	return p, ok
}
