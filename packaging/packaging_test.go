package packaging

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// need skips the test when a prerequisite is missing, or fails it in CI,
// where .ci/run installs every prerequisite and a skip would hide a gap.
func need(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing (CI=true): "+format, args...)
	}
	t.Skipf("prerequisite missing: "+format, args...)
}

// needTool returns the path of an installed program.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	need(t, err == nil, "%s is not installed", name)
	return p
}

func needRoot(t *testing.T) {
	t.Helper()
	need(t, os.Geteuid() == 0, "needs root")
}

// repoRoot is the module root, where the Makefile is.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "Makefile")); err != nil {
		t.Fatalf("no Makefile in %s: %v", root, err)
	}
	return root
}

// makeEnv is the environment of a make run by a test: without the
// variables that would change what the Makefile does (an outer make's
// MAKEFLAGS carries its command-line variables, such as PREFIX).
func makeEnv() []string {
	drop := map[string]bool{
		"MAKEFLAGS": true, "MFLAGS": true, "MAKELEVEL": true, "MAKEOVERRIDES": true,
		"DESTDIR": true, "PREFIX": true, "BINDIR": true, "MANDIR": true, "UNITDIR": true,
		"BASHCOMPDIR": true, "ZSHCOMPDIR": true, "DEBDIR": true, "DEB_VERSION": true,
		"DEB_ARCH": true, "BIN": true, "INSTALL": true, "DISTDIR": true, "BUILD": true,
		"VERSION": true, "SOURCE_DATE_EPOCH": true,
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !drop[k] {
			env = append(env, kv)
		}
	}
	return env
}

// run runs a command and returns its standard output; a failure or a
// timeout fails the test with both outputs.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	stdout, stderr, err := runErr(t, dir, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, stdout, stderr)
	}
	return stdout
}

func runErr(t *testing.T, dir string, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return runTimeout(t, 5*time.Minute, dir, env, name, args...)
}

// runTimeout runs a command, killing it after timeout.
func runTimeout(t *testing.T, timeout time.Duration, dir string, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.WaitDelay = 5 * time.Second
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (killed after %v)", err, timeout)
	}
	return out.String(), errOut.String(), err
}

// runMake runs make in the repository with the given arguments.
func runMake(t *testing.T, args ...string) string {
	t.Helper()
	needTool(t, "make")
	args = append([]string{"--no-print-directory"}, args...)
	return run(t, repoRoot(t), makeEnv(), "make", args...)
}

// unitDir is where the Makefile installs the unit by default.
func unitDir() string {
	out, err := exec.Command("pkg-config", "--variable=systemdsystemunitdir", "systemd").Output()
	if d := strings.TrimSpace(string(out)); err == nil && d != "" {
		return d
	}
	return "/lib/systemd/system"
}

// installedFiles is every file make install puts in place with PREFIX=/usr,
// with its mode.
func installedFiles() map[string]fs.FileMode {
	return map[string]fs.FileMode{
		"/usr/bin/hotplugd":                               0o755,
		unitDir() + "/hotplugd.service":                   0o644,
		"/etc/hotplugd/rules.yaml":                        0o644,
		"/usr/share/man/man8/hotplugd.8.gz":               0o644,
		"/usr/share/man/man5/hotplugd.rules.5.gz":         0o644,
		"/usr/share/bash-completion/completions/hotplugd": 0o644,
		"/usr/share/zsh/vendor-completions/_hotplugd":     0o644,
	}
}

// tree returns every non-directory below root, by path relative to root
// (with a leading "/"), with its permission bits.
func tree(t *testing.T, root string) map[string]fs.FileMode {
	t.Helper()
	got := map[string]fs.FileMode{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		got["/"+filepath.ToSlash(rel)] = fi.Mode() & (fs.ModePerm | fs.ModeType)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func gunzip(t *testing.T, name string) string {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return string(b)
}

// execLines returns the Exec*= lines of a unit.
func execLines(unit string) []string {
	var lines []string
	for _, l := range strings.Split(unit, "\n") {
		if strings.HasPrefix(l, "Exec") {
			lines = append(lines, l)
		}
	}
	return lines
}

func TestInstallLayout(t *testing.T) {
	destdir := t.TempDir()
	out := runMake(t, "install", "DESTDIR="+destdir)
	if strings.Contains(out, "systemctl enable") {
		t.Errorf("install with DESTDIR printed the start hint, meant for a real install:\n%s", out)
	}

	want := installedFiles()
	if diff := cmp.Diff(want, tree(t, destdir)); diff != "" {
		t.Fatalf("installed files (-want +got):\n%s", diff)
	}
	for _, dir := range []string{"/etc/hotplugd", "/usr/bin", unitDir()} {
		fi, err := os.Stat(destdir + dir)
		if err != nil {
			t.Fatal(err)
		}
		// The daemon refuses a rules file in a directory others can write.
		if got := fi.Mode().Perm(); got != 0o755 {
			t.Errorf("%s: mode %04o, want 0755", dir, got)
		}
	}
	if os.Geteuid() == 0 {
		for name := range want {
			fi, err := os.Stat(destdir + name)
			if err != nil {
				t.Fatal(err)
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || st.Gid != 0 {
				t.Errorf("%s: owned by %d:%d, want root:root", name, st.Uid, st.Gid)
			}
		}
	}

	root := repoRoot(t)
	rules := destdir + "/etc/hotplugd/rules.yaml"
	if got, want := readFile(t, rules), readFile(t, filepath.Join(root, "configs/rules.yaml")); got != want {
		t.Errorf("installed rules.yaml differs from configs/rules.yaml")
	}
	unit := readFile(t, destdir+unitDir()+"/hotplugd.service")
	if got, want := unit, readFile(t, filepath.Join(root, "packaging/systemd/hotplugd.service")); got != want {
		t.Errorf("with PREFIX=/usr the installed unit differs from packaging/systemd/hotplugd.service")
	}
	for _, page := range []string{"/usr/share/man/man8/hotplugd.8.gz", "/usr/share/man/man5/hotplugd.rules.5.gz"} {
		if roff := gunzip(t, destdir+page); !strings.Contains(roff, "\n.TH ") {
			t.Errorf("%s is not a man page (no .TH):\n%.300s", page, roff)
		}
	}

	// A reinstall (an upgrade) never overwrites the administrator's rules.
	mine := "# my rules\nrules: []\n"
	if err := os.WriteFile(rules, []byte(mine), 0o644); err != nil {
		t.Fatal(err)
	}
	out = runMake(t, "install", "DESTDIR="+destdir)
	if got := readFile(t, rules); got != mine {
		t.Errorf("a second install overwrote a changed rules.yaml; now:\n%s", got)
	}
	if !strings.Contains(out, "kept "+rules) {
		t.Errorf("a second install does not say it kept %s:\n%s", rules, out)
	}
	if diff := cmp.Diff(want, tree(t, destdir)); diff != "" {
		t.Errorf("files after the second install (-want +got):\n%s", diff)
	}

	// uninstall removes everything but the rules.
	out = runMake(t, "uninstall", "DESTDIR="+destdir)
	left := map[string]fs.FileMode{"/etc/hotplugd/rules.yaml": 0o644}
	if diff := cmp.Diff(left, tree(t, destdir)); diff != "" {
		t.Errorf("files left by uninstall (-want +got):\n%s", diff)
	}
	if got := readFile(t, rules); got != mine {
		t.Errorf("uninstall changed rules.yaml; now:\n%s", got)
	}
	if !strings.Contains(out, "kept "+rules) {
		t.Errorf("uninstall does not say it kept %s:\n%s", rules, out)
	}
}

func TestInstallPrefix(t *testing.T) {
	destdir := t.TempDir()
	runMake(t, "install", "DESTDIR="+destdir, "PREFIX=/usr/local")
	want := map[string]fs.FileMode{}
	for name, mode := range installedFiles() {
		if strings.HasPrefix(name, "/usr/") {
			name = "/usr/local/" + strings.TrimPrefix(name, "/usr/")
		}
		want[name] = mode
	}
	if diff := cmp.Diff(want, tree(t, destdir)); diff != "" {
		t.Fatalf("installed files with PREFIX=/usr/local (-want +got):\n%s", diff)
	}
	// The unit must start the binary where it was installed.
	unit := readFile(t, destdir+unitDir()+"/hotplugd.service")
	lines := execLines(unit)
	var starts int
	for _, l := range lines {
		if strings.Contains(l, "hotplugd ") {
			starts++
			if !strings.Contains(l, "=/usr/local/bin/hotplugd ") {
				t.Errorf("unit line %q does not run /usr/local/bin/hotplugd", l)
			}
		}
	}
	if starts < 2 {
		t.Errorf("unit has %d hotplugd command lines, want ExecStartPre and ExecStart:\n%s", starts, strings.Join(lines, "\n"))
	}
	// The configuration stays in /etc: it is the binary's default.
	if !strings.Contains(unit, "--config /etc/hotplugd/rules.yaml") {
		t.Errorf("unit no longer reads /etc/hotplugd/rules.yaml:\n%s", strings.Join(lines, "\n"))
	}
}

// TestUnitVerifies runs systemd-analyze verify on the installed unit. It
// checks the unit offline: systemd need not be running, but every command
// line must name an executable, so the unit is verified in a copy whose
// hotplugd paths point into DESTDIR, and man: references are looked up in
// DESTDIR's man pages.
func TestUnitVerifies(t *testing.T) {
	analyze := needTool(t, "systemd-analyze")
	needTool(t, "man")
	destdir := t.TempDir()
	runMake(t, "install", "DESTDIR="+destdir)

	unit := readFile(t, destdir+unitDir()+"/hotplugd.service")
	copyDir := t.TempDir()
	copyPath := filepath.Join(copyDir, "hotplugd.service")
	unit = strings.ReplaceAll(unit, "/usr/bin/hotplugd", destdir+"/usr/bin/hotplugd")
	if err := os.WriteFile(copyPath, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "MANPATH="+destdir+"/usr/share/man", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0")
	stdout, stderr, err := runErr(t, copyDir, env, analyze, "verify", copyPath)
	// verify exits 0 on some problems (unknown keys), so its output must be
	// empty too.
	if err != nil || strings.TrimSpace(stdout+stderr) != "" {
		t.Errorf("systemd-analyze verify hotplugd.service: %v\n%s%s", err, stdout, stderr)
	}
}

// commands are the subcommands hotplugd(8) documents.
var commands = []string{"run", "check", "monitor", "test", "trigger", "status", "eject", "reload", "settle", "version"}

// manText renders a man page as man(1) shows it on an 80-column terminal,
// requiring that groff and man have nothing to warn about.
func manText(t *testing.T, page string) string {
	t.Helper()
	env := append(os.Environ(), "MANWIDTH=80", "MANPAGER=cat", "PAGER=cat", "LC_ALL=C.UTF-8")
	stdout, stderr, err := runErr(t, "", env, "man", "--warnings", "-l", page)
	if err != nil || stderr != "" {
		t.Errorf("man --warnings -l %s: %v\n%s", page, err, stderr)
	}
	// Undo hyphenation at line ends and the justification's extra spaces,
	// so the text can be searched.
	text := regexp.MustCompile(`[‐-]\n\s+`).ReplaceAllString(stdout, "")
	return strings.Join(strings.Fields(text), " ")
}

func TestManPagesRender(t *testing.T) {
	needTool(t, "man")
	needTool(t, "groff")
	runMake(t, "man")
	dir := filepath.Join(repoRoot(t), "dist", "man")

	text := manText(t, filepath.Join(dir, "hotplugd.8"))
	want := []string{
		"HOTPLUGD(8)", "NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "SIGNALS", "EXIT STATUS",
		"ENVIRONMENT", "FILES", "EXAMPLES", "SEE ALSO",
		"--config", "--json", "--source", "--subsystem", "--event", "--syspath", "--action", "--dry-run",
		"SIGHUP", "SIGTERM", "SIGINT", "/etc/hotplugd/rules.yaml", "/run/hotplugd/mounts.json",
		"NOTIFY_SOCKET", "WATCHDOG_USEC", "JOURNAL_STREAM", "hotplugd.rules(5)",
	}
	for _, c := range commands {
		want = append(want, "hotplugd "+c)
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("hotplugd(8) does not mention %q", w)
		}
	}

	text = manText(t, filepath.Join(dir, "hotplugd.rules.5"))
	want = []string{
		"HOTPLUGD.RULES(5)", "SETTINGS", "RULES", "EXPRESSIONS", "TEMPLATES", "ACTIONS", "SECURITY", "EXAMPLES",
		// settings, with their defaults
		"source:", "coldplug:", "workers:", "action_timeout:", "mount_root:", "state_dir:", "log_level:",
		"(default kernel)", "(default true)", "(default 8", "(default 30s)", "(default /media)",
		"(default /run/hotplugd)", "(default info)",
		// rules
		"name:", "match:", "actions:", "continue:",
		// the expression environment
		"action (string)", "subsystem (string)", "devtype (string)", "devpath (string)", "devname (string)",
		"devnode (string)", "seqnum (int)", "source (string)", "env (map", "fs.type", "fs.label", "fs.uuid",
		"fs.usage", "fs.version", "attr(name)", "attrs(name)", "has_parent(subsystem)", "glob(pattern, s)",
		"mount.path (string)", "unlock.device (string)", "{{ EXPR }}", "ID_FS_*",
		// actions and their fields
		"- run:", "argv:", "timeout:", "user:", "env:", "HOTPLUG_ACTION",
		"- mount:", "options:", "owner:", "exec:", "nosuid", "nodev", "noexec",
		"- unmount: {}",
		"- unlock:", "keyfile:", "read_only:",
		"- notify:", "message:", "targets:", "log: {}", "webhook:", "url", "headers", "max_attempts", "desktop: {}",
	}
	for _, opt := range []string{"ro", "rw", "noatime", "nodiratime", "relatime", "strictatime", "lazytime", "sync", "dirsync", "flush", "discard"} {
		want = append(want, " "+opt+",", " "+opt+".")
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			// Mount options end a list item with "," or the list with ".":
			// one of each pair is enough.
			if (strings.HasSuffix(w, ",") && strings.Contains(text, strings.TrimSuffix(w, ",")+".")) ||
				(strings.HasSuffix(w, ".") && strings.Contains(text, strings.TrimSuffix(w, ".")+",")) {
				continue
			}
			t.Errorf("hotplugd.rules(5) does not mention %q", w)
		}
	}
}

// TestDocsCoverEveryFlag asks the built binary for each command's flags
// and checks that the man page and both completions know them, so a flag
// added to a command cannot be forgotten in the docs. Commands the binary
// does not have yet are left out.
func TestDocsCoverEveryFlag(t *testing.T) {
	root := repoRoot(t)
	bin := filepath.Join(t.TempDir(), "hotplugd")
	run(t, root, os.Environ(), "go", "build", "-o", bin, "./cmd/hotplugd")

	man := readFile(t, filepath.Join(root, "docs/man/hotplugd.8.md"))
	bash := readFile(t, filepath.Join(root, "contrib/completion/hotplugd.bash"))
	zsh := readFile(t, filepath.Join(root, "contrib/completion/_hotplugd"))
	flagLine := regexp.MustCompile(`(?m)^\s+-([a-z][a-z0-9-]*)`)
	for _, c := range commands {
		stdout, stderr, _ := runErr(t, root, os.Environ(), bin, c, "-h")
		help := stdout + stderr
		if strings.Contains(help, "unknown command") {
			t.Logf("hotplugd %s: not implemented yet", c)
			continue
		}
		if !strings.Contains(man, "## "+c+"\n") {
			t.Errorf("hotplugd(8) has no section for the command %s", c)
		}
		for _, m := range flagLine.FindAllStringSubmatch(help, -1) {
			flag := "--" + m[1]
			if m[1] == "h" || m[1] == "help" {
				continue
			}
			if !strings.Contains(man, "**"+flag+"**") {
				t.Errorf("hotplugd %s %s is not in docs/man/hotplugd.8.md", c, flag)
			}
			if !strings.Contains(bash, flag) {
				t.Errorf("hotplugd %s %s is not in the bash completion", c, flag)
			}
			if !strings.Contains(zsh, flag) {
				t.Errorf("hotplugd %s %s is not in the zsh completion", c, flag)
			}
		}
	}
}
