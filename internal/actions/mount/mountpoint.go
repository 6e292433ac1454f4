package mount

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// nameMax is NAME_MAX: the longest path component Linux filesystems take,
// in bytes.
const nameMax = 255

// fallbackName is the mount point name used when the label, the UUID and
// the kernel device name all sanitize to nothing usable.
const fallbackName = "disk"

// Name returns the single path component a filesystem is mounted at
// under the mount root: its label, else its UUID, else the kernel device
// name (sdb1), the first of them that survives sanitizing.
//
// The label and UUID come from the device, so they are hostile input:
// labels with "/" and "..", labels that look like shell code or mount
// options, over-long labels (udisks CVE-2014-0004 overflowed on a long
// mount path). Sanitizing keeps the name to exactly one component:
//   - '/', NUL, every control character (C0, DEL, C1; so \n and \t too),
//     quotes (' " `), backslash, every format character (Unicode Cf: the
//     bidi controls, which reorder how a name is shown, and the invisible
//     ones: zero-width space and joiners U+200B-U+200D, word joiner
//     U+2060, BOM U+FEFF, U+180E, soft hyphen, tags) and the line and
//     paragraph separators U+2028 and U+2029 become '_', so that no name
//     looks like another ("BACKUP\u200b" is mounted at "BACKUP_", not at
//     what looks like "BACKUP");
//   - every byte of invalid UTF-8 becomes '_';
//   - surrounding white space is trimmed;
//   - "", "." and ".." are never used: the next candidate is taken;
//   - a leading '.' becomes '_', so the mount point is never hidden from a
//     file manager or `ls` (".hidden" is mounted at "_hidden");
//   - the result is cut to 255 bytes on a character boundary.
//
// Shell metacharacters ($, ;, (, ), *), commas, '=' and a leading '-' are
// kept: the name is only ever one argv element or one path, never shell
// input or part of a mount-option string, and the full mount point always
// starts with '/'.
func Name(label, uuid, devname string) string {
	for _, c := range [...]string{label, uuid, devname} {
		if name, ok := sanitizeName(c); ok {
			return name
		}
	}
	return fallbackName
}

// sanitizeName makes s into one safe path component, or reports false when
// nothing usable is left.
func sanitizeName(s string) (string, bool) {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		i += size
		if r == utf8.RuneError && size == 1 {
			b.WriteByte('_')
			continue
		}
		if unsafeRune(r) {
			b.WriteByte('_')
			continue
		}
		b.WriteRune(r)
	}
	name := strings.TrimFunc(b.String(), unicode.IsSpace)
	if name == "" || name == "." || name == ".." {
		return "", false
	}
	if name[0] == '.' {
		name = "_" + name[1:]
	}
	return truncateName(name, nameMax), true
}

// unsafeRune reports whether r must not appear in a mount point name.
func unsafeRune(r rune) bool {
	switch r {
	case '/', '\\', '\'', '"', '`':
		return true
	}
	// NUL, \t, \n, DEL, C1, ...; bidi controls, zero-width characters,
	// BOM, ...; U+2028 and U+2029.
	return unicode.IsControl(r) || unicode.In(r, unicode.Cf, unicode.Zl, unicode.Zp)
}

// truncateName cuts name to at most max bytes without splitting a UTF-8
// sequence.
func truncateName(name string, max int) string {
	if len(name) <= max {
		return name
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut]
}

// suffixedName returns the n-th candidate for a taken name: name itself for
// n == 0, else name_n, with name cut so the whole still fits in 255 bytes.
func suffixedName(name string, n int) string {
	if n == 0 {
		return name
	}
	suffix := "_" + strconv.Itoa(n)
	return truncateName(name, nameMax-len(suffix)) + suffix
}
