package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotplugd/hotplugd/internal/keyfile/keytest"
)

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string, mode os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.yaml", "rules:\n  - name: a\n    match: action == \"add\"\n", 0o644)
	bad := write("bad.yaml", "settings:\n  workers: many\nrules:\n  - name: a\n    match: nope\n  - name: a\n    match: 'true'\n    actions: [{exec: {}}]\n", 0o644)
	open := write("open.yaml", "rules: []\n", 0o666)

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"valid", []string{"check", "--config", good}, 0, good + ": ok, 1 rule\n", ""},
		{"every problem", []string{"check", "--config", bad}, 1, "",
			bad + ":2:12: workers must be a whole number from 1 to 1024\n" +
				bad + ":5:12: rule \"a\": match: unknown name nope\n" +
				bad + ":6:11: rule \"a\": duplicate rule name (first at line 4)\n" +
				bad + ":8:16: rule \"a\": unknown action \"exec\" (want run, mount, unmount, notify or unlock)\n"},
		{"writable by others", []string{"check", "--config", open}, 0, open + ": ok, 0 rules\n",
			open + ": warning: file " + open + " is writable by its group and others (mode 0666); the daemon, as root, will refuse it\n"},
		{"missing", []string{"check", "--config", filepath.Join(dir, "nope.yaml")}, 1, "",
			"hotplugd: open " + filepath.Join(dir, "nope.yaml") + ": no such file or directory\n"},
		{"stray argument", []string{"check", "x"}, 2, "", "hotplugd check: unexpected argument \"x\"\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, code := runCmd(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit status %d, want %d", code, tt.code)
			}
			want := "--- stdout\n" + tt.stdout + "--- stderr\n" + tt.stderr
			if tt.name == "stray argument" {
				// Followed by the usage text.
				if !strings.Contains(got, want) {
					t.Errorf("got:\n%s\nwant it to contain:\n%s", got, want)
				}
				return
			}
			if !strings.HasSuffix(got, want) {
				t.Errorf("got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// TestShippedConfigs checks every rules file the project ships, and the
// commented-out example of the default file once uncommented.
func TestShippedConfigs(t *testing.T) {
	paths, _ := filepath.Glob("../../configs/examples/*.yaml")
	if len(paths) < 6 {
		t.Errorf("%d examples, want at least 6", len(paths))
	}
	paths = append([]string{"../../configs/rules.yaml"}, paths...)
	for _, p := range paths {
		checked := keytest.Rules(t, p) // the keys of an unlock are made for the test
		got, code := runCmd(t, "check", "--config", checked)
		if code != 0 || !strings.Contains(got, checked+": ok, ") {
			t.Errorf("%s:\n%s", p, got)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(data), "# ") {
			t.Errorf("%s does not start with a comment saying what it does", p)
		}
	}

	data, err := os.ReadFile("../../configs/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	uncommented := 0
	in := false
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "  # - name: ") {
			in = true
		}
		if in && strings.HasPrefix(line, "  #   ") || in && strings.HasPrefix(line, "  # - ") {
			out = append(out, "  "+line[4:])
			uncommented++
			continue
		}
		in = in && strings.HasPrefix(line, "  #")
		out = append(out, line)
	}
	if uncommented == 0 {
		t.Fatal("configs/rules.yaml has no commented-out rule")
	}
	p := filepath.Join(t.TempDir(), "uncommented.yaml")
	if err := os.WriteFile(p, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, code := runCmd(t, "check", "--config", p); code != 0 || !strings.Contains(got, ": ok, 2 rules") {
		t.Errorf("the commented-out rule of configs/rules.yaml, uncommented:\n%s\n%s", strings.Join(out, "\n"), got)
	}
}

// TestCheckSymlinkLayouts: a rules file reached through a directory
// another user owns, as given or as a symlink leads, draws the warning
// that the daemon will refuse it.
func TestCheckSymlinkLayouts(t *testing.T) {
	top := symlinkTop(t)
	real := filepath.Join(top, "etc", "rules.yaml")
	user := filepath.Join(top, "user")
	// Layout 1: user/sub/rules.yaml, a symlink to root's file.
	sub := filepath.Join(user, "sub")
	mkdirs(t, sub)
	if err := os.Symlink(real, filepath.Join(sub, "rules.yaml")); err != nil {
		t.Fatal(err)
	}
	// Layout 2: conf -> user/conf, root's symlink into a user's directory.
	mkdirs(t, filepath.Join(user, "conf"))
	copyFile(t, real, filepath.Join(user, "conf", "rules.yaml"))
	if err := os.Symlink(filepath.Join(user, "conf"), filepath.Join(top, "conf")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(user, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{filepath.Join(sub, "rules.yaml"), filepath.Join(top, "conf", "rules.yaml")} {
		got, code := runCmd(t, "check", "--config", path)
		if code != 0 || !strings.Contains(got, "warning: directory "+user+" is owned by uid 1000") ||
			!strings.Contains(got, "the daemon, as root, will refuse it") {
			t.Errorf("check %s: exit %d\n%s", path, code, got)
		}
	}
	if got, _ := runCmd(t, "check", "--config", real); strings.Contains(got, "warning") {
		t.Errorf("check of the file itself warns:\n%s", got)
	}
}

// symlinkTop is a root-owned directory holding etc/rules.yaml and user/,
// for the symlink layouts; it needs root to hand directories to uid 1000.
func symlinkTop(t *testing.T) string {
	t.Helper()
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("prerequisite missing: root")
		}
		t.Skip("needs root")
	}
	top := t.TempDir()
	if err := os.Chmod(top, 0o755); err != nil {
		t.Fatal(err)
	}
	mkdirs(t, filepath.Join(top, "etc"), filepath.Join(top, "user"))
	if err := os.WriteFile(filepath.Join(top, "etc", "rules.yaml"), []byte("rules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return top
}

func mkdirs(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCheckKeyfile: check reports a keyfile others may read, where the
// rule names it, as the daemon would refuse it; made root's alone, the
// file is valid.
func TestCheckKeyfile(t *testing.T) {
	key := keytest.Key(t, "k")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "rules.yaml")
	rules := fmt.Sprintf("rules:\n  - name: luks\n    match: fs.type == \"crypto_LUKS\"\n    actions:\n      - unlock: {keyfile: %s}\n", key)
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	got, code := runCmd(t, "check", "--config", path)
	want := fmt.Sprintf("%s:5:27: rule \"luks\": unsafe keyfile: %s is readable by its group or others (mode 0644; chmod 0400 %s)\n", path, key, key)
	if code != 1 || !strings.HasSuffix(got, "--- stderr\n"+want) {
		t.Errorf("got:\n%s\nwant on stderr:\n%s", got, want)
	}
	if err := os.Chmod(key, 0o400); err != nil {
		t.Fatal(err)
	}
	if got, code := runCmd(t, "check", "--config", path); code != 0 || !strings.Contains(got, path+": ok, 1 rule") {
		t.Errorf("a keyfile of root's alone:\n%s", got)
	}
}
