package mount

import (
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMountNameSanitize(t *testing.T) {
	long := strings.Repeat("é", 150) // 300 bytes, two per rune
	tests := []struct {
		name                 string
		label, uuid, devname string
		want                 string
	}{
		{name: "plain label", label: "BACKUP", uuid: "1234", devname: "sdb1", want: "BACKUP"},
		{name: "label with space", label: "My Disk", devname: "sdb1", want: "My Disk"},
		{name: "command substitution kept as text", label: "$(reboot)", want: "$(reboot)"},
		{name: "backticks", label: "`reboot`", want: "_reboot_"},
		{name: "semicolon", label: "a;rm -rf ~", want: "a;rm -rf ~"},
		{name: "slash and dot-dot", label: "a/../../etc", want: "a_.._.._etc"},
		{name: "leading slash", label: "/etc/passwd", want: "_etc_passwd"},
		{name: "dot-dot falls back to uuid", label: "..", uuid: "5E2F-1A3B", devname: "sdb1", want: "5E2F-1A3B"},
		{name: "dot falls back to devname", label: ".", devname: "sdb1", want: "sdb1"},
		{name: "leading dot made visible", label: ".hidden", want: "_hidden"},
		{name: "dot-dot slash", label: "../x", want: "_._x"},
		{name: "dot-dot-dot", label: "...", want: "_.."},
		{name: "newline", label: "a\nb", want: "a_b"},
		{name: "tab", label: "a\tb", want: "a_b"},
		{name: "DEL", label: "a\x7fb", want: "a_b"},
		{name: "NUL", label: "a\x00b", want: "a_b"},
		{name: "escape sequence", label: "\x1b[31mred", want: "_[31mred"},
		{name: "C1 control", label: "a\u0085b", want: "a_b"},
		{name: "bidi override", label: "abc\u202egpj.exe", want: "abc_gpj.exe"},
		{name: "quotes and backslash", label: `a'b"c\d`, want: "a_b_c_d"},
		// Invisible characters would make BACKUP\u200b look like BACKUP.
		{name: "zero width space", label: "BACKUP\u200b", want: "BACKUP_"},
		{name: "zero width joiner", label: "BACK\u200dUP", want: "BACK_UP"},
		{name: "zero width non-joiner", label: "BACK\u200cUP", want: "BACK_UP"},
		{name: "word joiner", label: "BACKUP\u2060", want: "BACKUP_"},
		{name: "byte order mark", label: "\ufeffBACKUP", want: "_BACKUP"},
		{name: "mongolian vowel separator", label: "BACKUP\u180e", want: "BACKUP_"},
		{name: "soft hyphen", label: "BACK\u00adUP", want: "BACK_UP"},
		{name: "invisible tag character", label: "BACKUP\U000e0041", want: "BACKUP_"},
		{name: "inner line separator", label: "BACK\u2028UP", want: "BACK_UP"},
		{name: "inner paragraph separator", label: "BACK\u2029UP", want: "BACK_UP"},
		{name: "arabic letter mark", label: "a\u061cb", want: "a_b"},
		{name: "looks like mount options", label: "a,uid=0,exec", want: "a,uid=0,exec"},
		{name: "invalid UTF-8", label: "ab\xff\xfecd", want: "ab__cd"},
		{name: "valid replacement char kept", label: "a\uFFFDb", want: "a\uFFFDb"},
		{name: "leading dash kept", label: "-rf", want: "-rf"},
		{name: "surrounding blanks trimmed", label: "  DATA  ", want: "DATA"},
		{name: "only blanks falls back", label: "   ", uuid: "abcd", want: "abcd"},
		{name: "empty label uses uuid", label: "", uuid: "5E2F-1A3B", devname: "sdb1", want: "5E2F-1A3B"},
		{name: "empty label and uuid use devname", devname: "sdb1", want: "sdb1"},
		{name: "all empty", want: "disk"},
		{name: "all unusable", label: "..", uuid: ".", devname: " ", want: "disk"},
		{name: "only slash", label: "/", want: "_"},
		{name: "unicode label", label: "Фото 2024", want: "Фото 2024"},
		{name: "300 bytes cut on a rune boundary", label: long, want: strings.Repeat("é", 127)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Name(tt.label, tt.uuid, tt.devname)
			if got != tt.want {
				t.Errorf("Name(%q, %q, %q) = %q, want %q", tt.label, tt.uuid, tt.devname, got, tt.want)
			}
			checkComponent(t, got)
		})
	}
}

// checkComponent asserts the invariants of every mount point name.
func checkComponent(t *testing.T, name string) {
	t.Helper()
	switch {
	case name == "" || name == "." || name == "..":
		t.Errorf("name %q is not a usable component", name)
	case len(name) > nameMax:
		t.Errorf("name is %d bytes, more than %d", len(name), nameMax)
	case !utf8.ValidString(name):
		t.Errorf("name %q is not valid UTF-8", name)
	case strings.ContainsAny(name, "/\x00\\'\"`"):
		t.Errorf("name %q contains a forbidden character", name)
	case name[0] == '.':
		t.Errorf("name %q is hidden", name)
	}
	for _, r := range name {
		if unsafeRune(r) {
			t.Errorf("name %q contains %U", name, r)
		}
	}
}

func TestMountNameSuffix(t *testing.T) {
	if got := suffixedName("BACKUP", 0); got != "BACKUP" {
		t.Errorf("suffix 0 = %q", got)
	}
	if got := suffixedName("BACKUP", 1); got != "BACKUP_1" {
		t.Errorf("suffix 1 = %q", got)
	}
	long := Name(strings.Repeat("ж", 200), "", "") // 254 bytes after the cut
	for _, n := range []int{1, 10, 999} {
		got := suffixedName(long, n)
		checkComponent(t, got)
		if !strings.HasSuffix(got, "_"+strconv.Itoa(n)) {
			t.Errorf("suffixedName(long, %d) = ...%q, lost its suffix", n, got[len(got)-8:])
		}
	}
}

func FuzzMountName(f *testing.F) {
	for _, s := range []string{"BACKUP", "..", ".", "a/../b", "\xff", "a,uid=0", strings.Repeat("é", 200), ".x", "\u202e", "BACKUP\u200b", "a\u2028b"} {
		f.Add(s, "", "sdb1")
	}
	f.Fuzz(func(t *testing.T, label, uuid, devname string) {
		checkComponent(t, Name(label, uuid, devname))
	})
}
