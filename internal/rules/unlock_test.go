package rules

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// testKey writes a keyfile of root's with mode perm and returns its path.
func testKey(t *testing.T, perm os.FileMode) string {
	t.Helper()
	looptest.Need(t, os.Geteuid() == 0, "root (a keyfile must be root's)")
	p := filepath.Join(t.TempDir(), "backup.key")
	if err := os.WriteFile(p, []byte("0123456789abcdef"), perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseUnlock(t *testing.T) {
	key := testKey(t, 0o600)
	rs := mustParse(t, fmt.Sprintf(`settings: {action_timeout: 45s}
rules:
  - name: backup-luks
    match: action == "add" && fs.type == "crypto_LUKS"
    actions:
      - unlock: {keyfile: %s}
      - mount: {}
      - run: {argv: [/usr/local/bin/backup, --device, "{{ unlock.device }}", --to, "{{ mount.path }}"]}
  - name: named
    match: action == "add" && fs.type == "crypto_LUKS"
    actions:
      - unlock: {keyfile: %s, name: offsite.backup, read_only: true, timeout: 2m}
      - notify: {message: "{{ unlock.device }}"}
`, key, key))
	got := []*UnlockSpec{rs.Rules[0].Actions[0].(*UnlockSpec), rs.Rules[1].Actions[0].(*UnlockSpec)}
	want := []*UnlockSpec{
		{Pos: Pos{"t.yaml", 6, 9}, Keyfile: key, Timeout: 45 * time.Second},
		{Pos: Pos{"t.yaml", 12, 9}, Keyfile: key, Name: "offsite.backup", ReadOnly: true, Timeout: 2 * time.Minute},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("unlock specs (-want +got):\n%s", diff)
	}
	if k := got[0].Kind(); k != "unlock" || got[0].Position() != want[0].Pos {
		t.Errorf("Kind %q, Position %v", k, got[0].Position())
	}
}

// TestParseUnlockErrors: each problem of an unlock action, where it is
// written. A keyfile others may read is refused when the rules load.
func TestParseUnlockErrors(t *testing.T) {
	key := testKey(t, 0o600)
	open := testKey(t, 0o644)
	dir := filepath.Dir(key)
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(key, link); err != nil {
		t.Fatal(err)
	}
	rule := "rules:\n  - name: a\n    match: 'true'\n    actions:\n"
	tests := []struct {
		name, actions string
		want          []string
	}{
		{"no keyfile", "      - unlock: {name: x}\n",
			[]string{`t.yaml:5:9: rule "a": unlock needs a keyfile (a file of root's no one else may read)`}},
		{"relative keyfile", "      - unlock: {keyfile: keys/x.key}\n",
			[]string{`t.yaml:5:27: rule "a": keyfile "keys/x.key" must be a clean absolute path`}},
		{"keyfile readable by others", "      - unlock: {keyfile: " + open + "}\n",
			[]string{fmt.Sprintf(`t.yaml:5:27: rule "a": unsafe keyfile: %s is readable by its group or others (mode 0644; chmod 0400 %s)`, open, open)}},
		{"keyfile a symlink", "      - unlock: {keyfile: " + link + "}\n",
			[]string{fmt.Sprintf(`t.yaml:5:27: rule "a": unsafe keyfile: %s is a symlink (name the file itself)`, link)}},
		{"keyfile missing", "      - unlock: {keyfile: " + dir + "/none.key}\n",
			[]string{fmt.Sprintf(`t.yaml:5:27: rule "a": keyfile: lstat %s/none.key: no such file or directory`, dir)}},
		{"bad names", "      - unlock: {keyfile: " + key + ", name: '-x'}\n      - unlock: {keyfile: " + key + ", name: 'luks-{{ fs.uuid }}'}\n",
			[]string{
				`t.yaml:5:` + fmt.Sprint(35+len(key)) + `: rule "a": name "-x": use at most 127 letters, digits and #+.:=@_- (not starting with -)`,
				`t.yaml:6:9: rule "a": a rule unlocks its device once (the first unlock is at line 5)`,
				`t.yaml:6:` + fmt.Sprint(35+len(key)) + `: rule "a": name is a plain name, not a template: a device never names its mapping`,
			}},
		{"unknown key", "      - unlock: {keyfile: " + key + ", passphrase: x}\n",
			[]string{`t.yaml:5:` + fmt.Sprint(29+len(key)) + `: rule "a": unknown key "passphrase" in unlock (want keyfile, name, read_only, timeout)`}},
		{"unlock.device before the unlock", "      - notify: {message: '{{ unlock.device }}'}\n      - unlock: {keyfile: " + key + "}\n",
			[]string{`t.yaml:5:31: rule "a": unlock.device is empty here: only an unlock action earlier in the rule sets it`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseTest(t, rule+tt.actions)
			if diff := cmp.Diff(tt.want, errLines(err)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
	_, err := parseTest(t, "rules:\n  - name: a\n    match: unlock.device != \"\"\n")
	if want := []string{`t.yaml:3:12: rule "a": match: unlock.device is only known in actions, after an unlock`}; !cmp.Equal(want, errLines(err)) {
		t.Errorf("unlock.device in a match: %q", errLines(err))
	}
}

func TestMappingName(t *testing.T) {
	long := strings.Repeat("a", 200)
	tests := []struct {
		spec UnlockSpec
		uuid string
		want string
	}{
		{UnlockSpec{}, "ed32c0be-7d35-4b42-ac27-8e8114bb0e78", "luks-ed32c0be-7d35-4b42-ac27-8e8114bb0e78"},
		{UnlockSpec{Name: "backup"}, "ed32c0be-7d35-4b42-ac27-8e8114bb0e78", "backup"},
		// A LUKS header's UUID is whatever its maker wrote there.
		{UnlockSpec{}, "../../x y\n$(id)é", "luks-______x_y___id__"},
		{UnlockSpec{}, long, "luks-" + long[:122]},
	}
	for _, tt := range tests {
		got, err := tt.spec.MappingName(tt.uuid)
		if err != nil || got != tt.want {
			t.Errorf("MappingName(%q) = %q, %v; want %q", tt.uuid, got, err, tt.want)
		}
		if !mappingName.MatchString(got) || len(got) > maxMappingName {
			t.Errorf("%q is not a valid mapping name", got)
		}
	}
	if _, err := (&UnlockSpec{}).MappingName(""); err == nil {
		t.Error("a device without a UUID got a mapping name")
	}
}

func TestRenderUnlockDevice(t *testing.T) {
	ev := capture(t, "loop0p1-partition-add.kernel")
	env := NewEnv(ev, nil)
	if got, err := tmpl("{{ unlock.device }}").Render(env); err != nil || got != "" {
		t.Errorf("before an unlock: %q, %v", got, err)
	}
	env.SetUnlockDevice("/dev/mapper/luks-1234")
	if got, err := tmpl("mkfs {{ unlock.device }}").Render(env); err != nil || got != "mkfs /dev/mapper/luks-1234" {
		t.Errorf("unlock.device: %q, %v", got, err)
	}
}
