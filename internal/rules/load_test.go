package rules

import (
	"errors"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"os/user"

	"github.com/hotplugd/hotplugd/internal/account"
)

// fakeUsers resolves the users the tests name without /etc/passwd.
func fakeUsers(name string) (*User, error) {
	switch name {
	case "root", "0":
		return &User{Name: "root", UID: 0, GID: 0}, nil
	case "backup":
		return &User{Name: "backup", UID: 34, GID: 34}, nil
	case "alice", "1000":
		return &User{Name: "alice", UID: 1000, GID: 1000}, nil
	}
	return nil, user.UnknownUserError(name)
}

func parseTest(t testing.TB, src string) (*RuleSet, error) {
	t.Helper()
	return parse("t.yaml", []byte(src), fakeUsers)
}

func mustParse(t testing.TB, src string) *RuleSet {
	t.Helper()
	rs, err := parseTest(t, src)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return rs
}

// errLines returns the lines of an Errors, or the error itself.
func errLines(err error) []string {
	var es Errors
	if errors.As(err, &es) {
		lines := make([]string, len(es))
		for i, e := range es {
			lines[i] = e.Error()
		}
		return lines
	}
	if err != nil {
		return []string{"not Errors: " + err.Error()}
	}
	return nil
}

// ok is a valid rule to embed in inputs that test something else.
const ok = `
  - name: ok
    match: action == "add"
`

// parseErrorTests is the loader's error table; FuzzParse is seeded from
// it too.
var parseErrorTests = []struct {
	name string
	in   string
	want []string
}{
	{
		"yaml syntax error",
		"rules:\n  - name: a: b\n",
		[]string{`t.yaml:2:1: YAML: mapping values are not allowed in this context`},
	},
	{
		"yaml tab indentation",
		"rules:\n\t- name: a\n",
		[]string{`t.yaml:2:1: YAML: found character that cannot start any token`},
	},
	{
		"not a mapping",
		"- a\n- b\n",
		[]string{`t.yaml:1:1: a rules file is a mapping with the keys settings and rules`},
	},
	{
		"unknown top-level key",
		"rulez: []\n",
		[]string{`t.yaml:1:1: unknown key "rulez" in the file (want settings, rules)`},
	},
	{
		"duplicate top-level key",
		"rules: []\nrules: []\n",
		[]string{`t.yaml:2:1: key "rules" given twice in the file (first at line 1)`},
	},
	{
		"two documents",
		"rules: []\n---\nrules: []\n",
		[]string{`t.yaml:2:1: more than one YAML document (remove the "---")`},
	},
	{
		"anchor and alias",
		"rules:\n  - &r\n    name: a\n    match: 'true'\n  - *r\n",
		[]string{
			`t.yaml:2:5: YAML anchors (&r) are not supported`,
			`t.yaml:5:5: YAML aliases (*r) are not supported`,
		},
	},
	{
		"custom tag",
		"rules:\n  - name: !shell a\n    match: 'true'\n",
		[]string{`t.yaml:2:11: YAML tag !shell is not supported`},
	},
	{
		"rules not a list",
		"rules: {name: a}\n",
		[]string{`t.yaml:1:8: rules must be a list`},
	},
	{
		"rule not a mapping",
		"rules:\n  - usb\n",
		[]string{`t.yaml:2:5: a rule must be a mapping with the keys name, match, actions, continue`},
	},
	{
		"unknown rule key",
		"rules:\n  - name: a\n    match: 'true'\n    action: []\n",
		[]string{`t.yaml:4:5: rule "a": unknown key "action" in rule (want name, match, actions, continue)`},
	},
	{
		"missing name",
		"rules:\n  - match: 'true'\n",
		[]string{`t.yaml:2:5: rule has no name`},
	},
	{
		"empty name",
		"rules:\n  - name:\n    match: 'true'\n",
		[]string{`t.yaml:2:10: name must be a string`},
	},
	{
		"bad name",
		"rules:\n  - name: my rule\n    match: 'true'\n",
		[]string{`t.yaml:2:11: rule "my rule": name: use letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit)`},
	},
	{
		"missing match",
		"rules:\n  - name: a\n    actions: []\n",
		[]string{`t.yaml:2:5: rule "a": rule has no match`},
	},
	{
		"duplicate rule name",
		"rules:\n  - name: a\n    match: 'true'\n  - name: a\n    match: 'false'\n",
		[]string{`t.yaml:4:11: rule "a": duplicate rule name (first at line 2)`},
	},
	{
		"non-boolean match",
		"rules:\n  - name: a\n    match: devname\n",
		[]string{`t.yaml:3:12: rule "a": match: expected bool, but got string`},
	},
	{
		"unknown variable",
		"rules:\n  - name: a\n    match: action == \"add\" && vendor == \"x\"\n",
		[]string{`t.yaml:3:31: rule "a": match: unknown name vendor`},
	},
	{
		"unknown function",
		"rules:\n  - name: a\n    match: sysattr(\"x\") == \"1\"\n",
		[]string{`t.yaml:3:12: rule "a": match: unknown name sysattr`},
	},
	{
		"unknown fs field",
		"rules:\n  - name: a\n    match: fs.kind == \"ext4\"\n",
		[]string{`t.yaml:3:15: rule "a": match: type uevent.FS has no field kind`},
	},
	{
		"wrong argument type",
		"rules:\n  - name: a\n    match: attr(1) == \"x\"\n",
		[]string{`t.yaml:3:17: rule "a": match: cannot use int as argument (type string) to call attr`},
	},
	{
		"syntax error in a folded match",
		"rules:\n  - name: a\n    match: >\n      action == \"add\"\n      && subsystem = \"block\"\n",
		[]string{`t.yaml:5:20: rule "a": match: unexpected token Operator("=")`},
	},
	{
		"error in a literal match, second line",
		"rules:\n  - name: a\n    match: |\n      action == \"add\" &&\n        has_parent(\"usb\", \"x\", \"y\")\n",
		[]string{`t.yaml:5:9: rule "a": match: too many arguments to call has_parent`},
	},
	{
		"mount.path in match",
		"rules:\n  - name: a\n    match: mount.path != \"\"\n",
		[]string{`t.yaml:3:12: rule "a": match: mount.path is only known in actions, after a mount`},
	},
	{
		"bad glob pattern",
		"rules:\n  - name: a\n    match: glob(\"sd[a\", devname)\n",
		[]string{`t.yaml:3:17: rule "a": match: glob pattern "sd[a": syntax error in pattern`},
	},
	{
		"expression too large",
		"rules:\n  - name: a\n    match: " + strings.Repeat(`1==1||`, 300) + "false\n",
		[]string{`t.yaml:3:12: rule "a": match: expression has more than 1000 nodes`},
	},
	{
		"expression too long",
		"rules:\n  - name: a\n    match: " + strings.Repeat(`devname + `, 420) + "devname == devname\n",
		[]string{`t.yaml:3:12: rule "a": match: expression is 4218 bytes long, limit 4096`},
	},
	{
		"never true",
		"rules:\n  - name: a\n    match: action == \"add\" && subsystem == \"net\" && action in [\"remove\", \"change\"]\n",
		[]string{`t.yaml:3:12: rule "a": match: can never be true: its conditions on action exclude each other`},
	},
	{
		"continue not a bool",
		"rules:\n  - name: a\n    match: 'true'\n    continue: no\n",
		[]string{`t.yaml:4:15: rule "a": continue must be true or false`},
	},
	{
		"actions not a list",
		"rules:\n  - name: a\n    match: 'true'\n    actions: {run: {argv: [/bin/true]}}\n",
		[]string{`t.yaml:4:14: rule "a": actions must be a list`},
	},
	{
		"unknown action type",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - exec: {argv: [/bin/true]}\n",
		[]string{`t.yaml:5:9: rule "a": unknown action "exec" (want run, mount, unmount, notify or unlock)`},
	},
	{
		"two keys in one action",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - mount: {}\n        notify: {message: hi}\n",
		[]string{`t.yaml:6:9: rule "a": actions[0] has more than one key (mount and notify); write each action as its own list item`},
	},
	{
		"unknown run key",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - run: {argv: [/bin/true], shell: true}\n",
		[]string{`t.yaml:5:34: rule "a": unknown key "shell" in run (want argv, timeout, user, env)`},
	},
	{
		"run without argv",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - run: {timeout: 5s}\n",
		[]string{`t.yaml:5:9: rule "a": run needs argv (the program and its arguments)`},
	},
	{
		"empty argv",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - run: {argv: []}\n",
		[]string{`t.yaml:5:21: rule "a": argv must not be empty`},
	},
	{
		"relative program",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - run: {argv: [backup, '{{ devnode }}']}\n",
		[]string{`t.yaml:5:22: rule "a": argv[0] "backup" must be an absolute path`},
	},
	{
		"templated program",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - run: {argv: ['/usr/bin/{{ env.PROG }}']}\n",
		[]string{`t.yaml:5:22: rule "a": argv[0] must not contain {{ }}: the program is chosen when the rules load, never by a device`},
	},
	{
		"bad duration",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - run: {argv: [/bin/true], timeout: 5 minutes}\n",
		[]string{`t.yaml:5:43: rule "a": timeout: bad duration "5 minutes" (want a number and a unit, like 30s, 5m or 2h)`},
	},
	{
		"duration without unit",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - run: {argv: [/bin/true], timeout: 30}\n",
		[]string{`t.yaml:5:43: rule "a": timeout: bad duration "30" (want a number and a unit, like 30s, 5m or 2h)`},
	},
	{
		"negative duration",
		"settings:\n  action_timeout: -1s\n",
		[]string{`t.yaml:2:19: action_timeout: duration "-1s" must be positive`},
	},
	{
		"unknown user",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - run: {argv: [/bin/true], user: mallory}\n      - mount: {owner: nobody2}\n",
		[]string{
			`t.yaml:5:40: rule "a": user: unknown user "mallory": not in ` + account.Database,
			`t.yaml:6:24: rule "a": owner: unknown user "nobody2": not in ` + account.Database,
		},
	},
	{
		"forbidden env",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - run:\n          argv: [/bin/true]\n          env: {LD_PRELOAD: '{{ fs.label }}', 1X: a}\n",
		[]string{
			`t.yaml:7:17: rule "a": env: LD_PRELOAD is not allowed (it changes how programs are loaded or shells parse)`,
			`t.yaml:7:47: rule "a": env: "1X" is not a variable name`,
		},
	},
	{
		"broken templates",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - run:\n          argv: [/bin/echo, '{{ devnode', '{{ }}', 'a }} b', '{{ nope }}', '{{ env }}']\n",
		[]string{
			`t.yaml:6:30: rule "a": argv[1]: "{{" without "}}"`,
			`t.yaml:6:44: rule "a": argv[2]: empty {{ }}`,
			`t.yaml:6:55: rule "a": argv[3]: "}}" without "{{" (write {{ "}}" }} for the text "}}")`,
			`t.yaml:6:66: rule "a": argv[4]: unknown name nope`,
			`t.yaml:6:80: rule "a": argv[5]: expression yields map[string]string; want a string, number or bool`,
		},
	},
	{
		"mount.path before mount",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - notify: {message: 'at {{ mount.path }}'}\n      - mount: {}\n      - notify: {message: 'at {{ mount.path }}'}\n",
		[]string{`t.yaml:5:34: rule "a": mount.path is empty here: only a mount or unmount action earlier in the rule sets it`},
	},
	{
		"mount options",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - mount:\n          options: [noatime, 'ro,suid', suid, exec, uid=0, 'umask=077', x-systemd.automount, \"a\\tb\", nodev, '']\n",
		[]string{
			`t.yaml:6:30: rule "a": mount option "ro,suid" contains ","; give each option as its own list item`,
			`t.yaml:6:41: rule "a": mount option "suid" is not allowed: removable media are always mounted nosuid,nodev`,
			`t.yaml:6:47: rule "a": mount option "exec" is not allowed; write exec: true`,
			`t.yaml:6:53: rule "a": mount option "uid" is not allowed; set owner: instead`,
			`t.yaml:6:60: rule "a": mount option "umask=077": options with values are not allowed`,
			`t.yaml:6:73: rule "a": mount option "x-systemd.automount" is not on the allow-list (ro, rw, noatime, nodiratime, relatime, strictatime, lazytime, sync, dirsync, flush, discard)`,
			`t.yaml:6:94: rule "a": mount option "a\tb" contains a space or control character`,
			`t.yaml:6:102: rule "a": mount option "nodev" is always set`,
			`t.yaml:6:109: rule "a": mount option is empty`,
		},
	},
	{
		"contradicting mount options",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - mount: {options: [ro, noatime, rw, relatime]}\n",
		[]string{
			`t.yaml:5:26: rule "a": mount options "ro" and "rw" contradict each other`,
			`t.yaml:5:26: rule "a": mount options noatime and relatime contradict each other (pick one)`,
		},
	},
	{
		"noexec",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - mount: {exec: true, options: [noexec]}\n",
		[]string{`t.yaml:5:39: rule "a": mount option "noexec" is always set unless exec: true`},
	},
	{
		"unmount with keys",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - unmount: {lazy: true}\n",
		[]string{`t.yaml:5:19: rule "a": unknown key "lazy" in unmount (it takes no keys)`},
	},
	{
		"notify without message",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - notify: {targets: [desktop: {}]}\n",
		[]string{`t.yaml:5:9: rule "a": notify needs a message`},
	},
	{
		"bad targets",
		"rules:\n  - name: a\n    match: 'true'\n    actions:\n      - notify:\n          message: hi\n          targets:\n            - email: {to: root}\n            - webhook: {url: 'ftp://example.com/x'}\n            - webhook: {url: 'http://h/', max_attempts: 0, headers: {'Bad Name': x, X-Ok: \"a\\nb\"}}\n            - webhook: {timeout: 1s}\n",
		[]string{
			`t.yaml:8:15: rule "a": unknown target "email" (want log, webhook, desktop or mqtt)`,
			`t.yaml:9:30: rule "a": url "ftp://example.com/x" must start with http:// or https:// and name a host`,
			`t.yaml:10:57: rule "a": max_attempts must be a whole number from 1 to 20`,
			`t.yaml:10:70: rule "a": headers: "Bad Name" is not a header name`,
			`t.yaml:10:91: rule "a": headers.X-Ok: value contains a line break or NUL`,
			`t.yaml:11:15: rule "a": webhook needs a url`,
		},
	},
	{
		"bad settings",
		"settings:\n  source: netlink\n  coldplug: 1\n  workers: 0\n  mount_root: media\n  state_dir: /run/../tmp\n  log_level: verbose\n  logfile: x\n",
		[]string{
			`t.yaml:2:11: source must be kernel, udev or auto, not "netlink"`,
			`t.yaml:3:13: coldplug must be true or false`,
			`t.yaml:4:12: workers must be a whole number from 1 to 1024`,
			`t.yaml:5:15: mount_root must be an absolute path, not "media"`,
			`t.yaml:6:14: state_dir "/run/../tmp" is not a clean path (did you mean "/tmp"?)`,
			`t.yaml:7:14: log_level must be debug, info, warn or error, not "verbose"`,
			`t.yaml:8:3: unknown key "logfile" in settings (want source, coldplug, workers, action_timeout, mount_root, state_dir, log_level, control, metrics, network, mqtt)`,
		},
	},
	{
		"every problem of the file",
		"rules:\n  - name: a\n    match: nope\n" + ok + "  - name: b\n    match: 'true'\n    actions: [{notify: {message: '{{ x }}'}}]\n",
		[]string{
			`t.yaml:3:12: rule "a": match: unknown name nope`,
			`t.yaml:9:38: rule "b": message: unknown name x`,
		},
	},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range parseErrorTests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseTest(t, tt.in)
			if diff := cmp.Diff(tt.want, errLines(err)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseErrorFields(t *testing.T) {
	_, err := parseTest(t, "rules:\n  - name: a\n    match: nope\n")
	want := Errors{{File: "t.yaml", Line: 3, Col: 12, Rule: "a", Msg: "match: unknown name nope"}}
	var got Errors
	if !errors.As(err, &got) {
		t.Fatalf("error %v is not Errors", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	var one *Error
	if !errors.As(err, &one) || one.Rule != "a" {
		t.Errorf("errors.As(*Error) = %v", one)
	}
}

func TestParseBounds(t *testing.T) {
	t.Run("file too large", func(t *testing.T) {
		big := "# " + strings.Repeat("x", MaxFileSize) + "\n"
		_, err := parseTest(t, big)
		want := []string{"t.yaml:1:1: file is larger than 1048576 bytes"}
		if diff := cmp.Diff(want, errLines(err)); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	})
	t.Run("billion laughs", func(t *testing.T) {
		var b strings.Builder
		b.WriteString("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n")
		for i := 1; i < 10; i++ {
			b.WriteString("a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " [")
			for j := 0; j < 9; j++ {
				if j > 0 {
					b.WriteString(", ")
				}
				b.WriteString("*a" + string(rune('0'+i-1)))
			}
			b.WriteString("]\n")
		}
		start := time.Now()
		_, err := parseTest(t, b.String())
		if err == nil || !strings.Contains(err.Error(), "YAML anchors (&a0) are not supported") {
			t.Errorf("err = %v, want anchors rejected", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("took %v", d)
		}
	})
	t.Run("deep nesting", func(t *testing.T) {
		_, err := parseTest(t, strings.Repeat("[", 20000))
		if err == nil {
			t.Error("no error")
		}
	})
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte("rules:\n  - name: a\n    match: nope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	want := []string{path + `:3:12: rule "a": match: unknown name nope`}
	if diff := cmp.Diff(want, errLines(err)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want ErrNotExist", err)
	}
	if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("Load(dir) = %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, 2*MaxFileSize), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "file is larger than") {
		t.Errorf("Load(big) = %v", err)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "# only a comment\n", "settings:\nrules:\n", "rules: []\n"} {
		rs, err := parseTest(t, in)
		if err != nil {
			t.Errorf("%q: %v", in, err)
			continue
		}
		if diff := cmp.Diff(DefaultSettings(), rs.Settings); diff != "" || len(rs.Rules) != 0 {
			t.Errorf("%q: settings (-want +got):\n%s, %d rules", in, diff, len(rs.Rules))
		}
	}
}

// The example of hotplugd.rules(5), loaded into the structures the actions
// package consumes.
const designExample = `
settings:
  source: udev
  coldplug: false
  workers: 4
  action_timeout: 1m
  mount_root: /run/media
  state_dir: /var/lib/hotplugd
  log_level: debug

rules:
  - name: usb-automount                  # unique, required
    match: >                             # an expr program; must be boolean
      action == "add" && subsystem == "block"
      && fs.usage == "filesystem" && attrs("removable") == "1"
    actions:
      - mount:
          options: [noatime]             # added to the safe defaults, never replacing them
          owner: alice                   # uid/gid for vfat/exfat/ntfs/iso9660 (default root)
      - notify:
          message: "Mounted {{ fs.label ?? devname }} at {{ mount.path }}"
          targets:                       # log always; these in addition
            - webhook: {url: "http://127.0.0.1:8080/hotplug", timeout: 5s, max_attempts: 5}
            - desktop: {}
    continue: true                       # keep evaluating later rules (default true)

  - name: backup-disk
    match: action == "add" && fs.uuid == "5E2F-1A3B"
    actions:
      - run:
          argv: ["/usr/local/bin/backup", "--device", "{{ devnode }}"]
          timeout: 2h
          user: backup                   # run as this user (default root)
          env: {BACKUP_LABEL: "{{ fs.label }}"}

  - name: usb-unmount-notice
    match: action == "remove" && subsystem == "block" && fs.usage == "filesystem"
    actions:
      - unmount: {}                      # explicit; removal unmounts anyway
      - notify: {message: "bye", targets: [log: {}, webhook: {url: "https://h.example/x", headers: {Authorization: "Bearer t"}}]}
    continue: false
`

func TestParseDesign(t *testing.T) {
	rs := mustParse(t, designExample)
	alice := &User{Name: "alice", UID: 1000, GID: 1000}
	backup := &User{Name: "backup", UID: 34, GID: 34}
	hook, _ := url.Parse("http://127.0.0.1:8080/hotplug")
	hook2, _ := url.Parse("https://h.example/x")
	want := &RuleSet{
		File: "t.yaml",
		Settings: Settings{
			Source: "udev", Coldplug: false, Workers: 4, ActionTimeout: time.Minute,
			MountRoot: "/run/media", StateDir: "/var/lib/hotplugd", LogLevel: slog.LevelDebug,
			Control: ControlSettings{Socket: "/run/hotplugd/control", GID: -1},
			Metrics: MetricsSettings{Interval: 15 * time.Second},
		},
		Rules: []*Rule{
			{
				Name:     "usb-automount",
				Match:    "action == \"add\" && subsystem == \"block\" && fs.usage == \"filesystem\" && attrs(\"removable\") == \"1\"\n",
				Continue: true,
				Pos:      Pos{"t.yaml", 12, 5},
				Actions: []Action{
					&MountSpec{Pos: Pos{"t.yaml", 17, 9}, Options: []string{"noatime"}, Owner: alice, Timeout: time.Minute},
					&NotifySpec{
						Pos:     Pos{"t.yaml", 20, 9},
						Message: tmpl("Mounted {{ fs.label ?? devname }} at {{ mount.path }}"),
						Targets: []Target{
							&WebhookTarget{URL: hook, Timeout: 5 * time.Second, MaxAttempts: 5},
							&DesktopTarget{},
						},
					},
				},
			},
			{
				Name:     "backup-disk",
				Match:    `action == "add" && fs.uuid == "5E2F-1A3B"`,
				Continue: true,
				Pos:      Pos{"t.yaml", 27, 5},
				Actions: []Action{
					&RunSpec{
						Pos:     Pos{"t.yaml", 30, 9},
						Argv:    []*Template{tmpl("/usr/local/bin/backup"), tmpl("--device"), tmpl("{{ devnode }}")},
						Timeout: 2 * time.Hour,
						User:    backup,
						Env:     map[string]*Template{"BACKUP_LABEL": tmpl("{{ fs.label }}")},
					},
				},
			},
			{
				Name:     "usb-unmount-notice",
				Match:    `action == "remove" && subsystem == "block" && fs.usage == "filesystem"`,
				Continue: false,
				Pos:      Pos{"t.yaml", 36, 5},
				Actions: []Action{
					&UnmountSpec{Pos: Pos{"t.yaml", 39, 9}},
					&NotifySpec{
						Pos:     Pos{"t.yaml", 40, 9},
						Message: tmpl("bye"),
						Targets: []Target{
							&LogTarget{},
							&WebhookTarget{URL: hook2, Headers: map[string]string{"Authorization": "Bearer t"}, Timeout: 10 * time.Second, MaxAttempts: 3},
						},
					},
				},
			},
		},
	}
	opts := cmp.Options{
		cmpopts.IgnoreUnexported(RuleSet{}, Rule{}),
		cmp.Comparer(func(a, b *Template) bool { return a.String() == b.String() }),
	}
	if diff := cmp.Diff(want, rs, opts); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	actions, subsystems := rs.Rules[0].Requires()
	if diff := cmp.Diff([][]string{{"add"}, {"block"}}, [][]string{actions, subsystems}); diff != "" {
		t.Errorf("Requires (-want +got):\n%s", diff)
	}
}

func tmpl(s string) *Template {
	t, _, probs := compileTemplate(s)
	if len(probs) > 0 {
		panic(probs[0].msg)
	}
	return t
}

func TestUnsafePermissions(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	uid := os.Getuid()
	check := func(want []string) {
		t.Helper()
		got, err := UnsafePermissions(path, uid)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	}
	check(nil)
	if err := os.Chmod(path, 0o664); err != nil {
		t.Fatal(err)
	}
	check([]string{"file " + path + " is writable by its group (mode 0664)"})
	if err := os.Chmod(path, 0o646); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	check([]string{
		"file " + path + " is writable by others (mode 0646)",
		"directory " + dir + " is writable by its group and others (mode 0777)",
	})
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if uid == 0 {
		// Owned by someone else: only root can arrange that.
		if err := os.Chown(path, 1000, 1000); err != nil {
			t.Fatal(err)
		}
		check([]string{"file " + path + " is owned by uid 1000, not root"})
	}
	if _, err := UnsafePermissions(filepath.Join(dir, "missing"), uid); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// An ancestor anyone may write lets them swap the rules' directory; one
// with the sticky bit (like /tmp) does not.
func TestUnsafePermissionsAncestor(t *testing.T) {
	top := t.TempDir()
	mid := filepath.Join(top, "mid")
	dir := filepath.Join(mid, "hotplugd")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	uid := os.Getuid()
	for _, tc := range []struct {
		mode os.FileMode
		want []string
	}{
		{0o755, nil},
		{0o777, []string{"directory " + mid + " is writable by its group and others (mode 0777)"}},
		{0o777 | os.ModeSticky, nil},
	} {
		if err := os.Chmod(mid, tc.mode); err != nil {
			t.Fatal(err)
		}
		got, err := UnsafePermissions(path, uid)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("ancestor mode %v (-want +got):\n%s", tc.mode, diff)
		}
	}
}

func TestTestdataValid(t *testing.T) {
	paths, _ := filepath.Glob("testdata/*.yaml")
	if len(paths) == 0 {
		t.Fatal("no testdata")
	}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := parse(p, data, fakeUsers); err != nil {
			t.Errorf("%v", err)
		}
	}
}

func TestLookupUser(t *testing.T) {
	u, err := lookupUser("root")
	if err != nil || u.UID != 0 || u.GID != 0 || u.Name != "root" {
		t.Errorf("root: %+v, %v", u, err)
	}
	if u, err := lookupUser("0"); err != nil || u.Name != "root" {
		t.Errorf("uid 0: %+v, %v", u, err)
	}
	var unknown user.UnknownUserError
	if _, err := lookupUser("no-such-user-hotplugd"); !errors.As(err, &unknown) {
		t.Errorf("unknown user: %v", err)
	}
	// Parse resolves users of the system.
	rs, err := Parse("p.yaml", []byte("rules:\n  - name: a\n    match: 'true'\n    actions: [{run: {argv: [/bin/true], user: root}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := rs.Rules[0].Actions[0].(*RunSpec).User; got == nil || got.UID != 0 || got.Home != "/root" || len(got.Groups) == 0 {
		t.Errorf("user = %+v, want root with its home and groups", got)
	}
}

func TestOneLine(t *testing.T) {
	if got := oneLine("a\nb\tc\x7f"); got != `a\x0ab\x09c\x7f` {
		t.Errorf("oneLine = %q", got)
	}
	if got := oneLine("plain"); got != "plain" {
		t.Errorf("oneLine = %q", got)
	}
}

func TestKinds(t *testing.T) {
	p := Pos{"f", 1, 2}
	for _, tt := range []struct {
		a    Action
		kind string
	}{{&RunSpec{Pos: p}, "run"}, {&MountSpec{Pos: p}, "mount"}, {&UnmountSpec{Pos: p}, "unmount"}, {&NotifySpec{Pos: p}, "notify"}} {
		if tt.a.Kind() != tt.kind || tt.a.Position() != p {
			t.Errorf("%T: %s %v", tt.a, tt.a.Kind(), tt.a.Position())
		}
	}
	for _, tt := range []struct {
		t    Target
		kind string
	}{{&LogTarget{}, "log"}, {&WebhookTarget{}, "webhook"}, {&DesktopTarget{}, "desktop"}} {
		if tt.t.Kind() != tt.kind {
			t.Errorf("%T: %s", tt.t, tt.t.Kind())
		}
	}
	if p.String() != "f:1:2" {
		t.Errorf("Pos.String() = %q", p.String())
	}
}

func TestParseControlMetrics(t *testing.T) {
	rs := mustParse(t, "settings:\n  control: {socket: /run/hotplugd/ctl, group: root}\n"+
		"  metrics: {listen: \"127.0.0.1:9661\", textfile: /var/lib/node_exporter/hotplugd.prom, interval: 30s}\nrules: []\n")
	want := Settings{Control: ControlSettings{Socket: "/run/hotplugd/ctl", Group: "root", GID: 0},
		Metrics: MetricsSettings{Listen: "127.0.0.1:9661", Textfile: "/var/lib/node_exporter/hotplugd.prom", Interval: 30 * time.Second}}
	if diff := cmp.Diff(want.Control, rs.Settings.Control); diff != "" {
		t.Errorf("control (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want.Metrics, rs.Settings.Metrics); diff != "" {
		t.Errorf("metrics (-want +got):\n%s", diff)
	}
	_, err := Parse("t.yaml", []byte("settings:\n  control: {socket: run/ctl, group: no-such-group-here, mode: 1}\n"+
		"  metrics: {listen: 9661, interval: soon}\nrules: []\n"))
	for _, want := range []string{
		`t.yaml:2:21: control.socket must be an absolute path, not "run/ctl"`,
		`t.yaml:2:37: control.group: unknown group "no-such-group-here"`,
		`t.yaml:2:57: unknown key "mode" in control (want socket, group)`,
		`t.yaml:3:21: metrics.listen "9661": want host:port`,
		`t.yaml:3:37: metrics.interval`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, err)
		}
	}
}
