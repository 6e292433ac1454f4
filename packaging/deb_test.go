package packaging

import (
	"debug/elf"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// debArch is the Debian name of this machine's Go architecture.
func debArch() string {
	switch runtime.GOARCH {
	case "386":
		return "i386"
	case "arm":
		return "armhf"
	case "ppc64le":
		return "ppc64el"
	case "mipsle":
		return "mipsel"
	case "mips64le":
		return "mips64el"
	}
	return runtime.GOARCH
}

// dpkgExcludes returns whether dpkg's configuration keeps a path from
// being installed: slim Debian images exclude /usr/share/man/* with
// path-exclude in /etc/dpkg/dpkg.cfg.d. The last matching path-exclude or
// path-include decides, and "*" matches "/" too (fnmatch without
// FNM_PATHNAME).
func dpkgExcludes(t *testing.T) func(name string) bool {
	t.Helper()
	type rule struct {
		include bool
		re      *regexp.Regexp
	}
	var rules []rule
	files, _ := filepath.Glob("/etc/dpkg/dpkg.cfg.d/*")
	for _, f := range append([]string{"/etc/dpkg/dpkg.cfg"}, files...) {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			key, glob, ok := strings.Cut(strings.TrimSpace(line), "=")
			if !ok {
				key, glob, ok = strings.Cut(strings.TrimSpace(line), " ")
			}
			if !ok || key != "path-exclude" && key != "path-include" {
				continue
			}
			re := regexp.QuoteMeta(strings.TrimSpace(glob))
			re = strings.NewReplacer(`\*`, ".*", `\?`, ".").Replace(re)
			rules = append(rules, rule{key == "path-include", regexp.MustCompile("^" + re + "$")})
		}
	}
	return func(name string) bool {
		excluded := false
		for _, r := range rules {
			if r.re.MatchString(name) {
				excluded = !r.include
			}
		}
		return excluded
	}
}

// debFiles is every file of the package, with its mode: what make install
// installs, and the package's documentation.
func debFiles() map[string]fs.FileMode {
	files := installedFiles()
	files["/usr/share/doc/hotplugd/copyright"] = 0o644
	files["/usr/share/doc/hotplugd/changelog.gz"] = 0o644
	return files
}

// buildDeb runs make deb into a new directory and returns the package.
func buildDeb(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"dpkg-deb", "dpkg-shlibdeps", "gcc"} {
		needTool(t, tool)
	}
	debdir := t.TempDir()
	runMake(t, "deb", "DEBDIR="+debdir)
	debs, _ := filepath.Glob(filepath.Join(debdir, "hotplugd_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb DEBDIR=%s made %v, want one hotplugd_*.deb", debdir, debs)
	}
	return debs[0]
}

// dpkgStatus returns dpkg's abbreviated status of a package ("ii",
// "rc", ...; "" when dpkg does not know it) and whether any of its files
// are on the machine: anything but not-installed.
func dpkgStatus(t *testing.T, pkg string) (status string, present bool) {
	t.Helper()
	out, _, err := runErr(t, "", os.Environ(), "dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg)
	if err != nil {
		return "", false // unknown to dpkg
	}
	status = strings.TrimSpace(out)
	return status, len(status) > 1 && status[1] != 'n'
}

// The daemon's directories under the unit's RuntimeDirectory= and
// StateDirectory=.
const (
	runDir   = "/run/hotplugd"
	stateDir = "/var/lib/hotplugd"
)

// setAside renames dir, when it exists, out of the way of the test's
// dpkg -P and renames it back when the test ends. A directory a live
// daemon answers in is not touched: the test needs it gone.
func setAside(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Lstat(dir); os.IsNotExist(err) {
		return
	}
	if c, err := net.Dial("unix", filepath.Join(dir, "control")); err == nil {
		c.Close()
		need(t, false, "a hotplugd daemon answers on %s/control; the test's dpkg -P would remove its directory", dir)
	}
	aside := fmt.Sprintf("%s.aside-%d", dir, os.Getpid())
	if err := os.Rename(dir, aside); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s set aside as %s for the test", dir, aside)
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		if err := os.Rename(aside, dir); err != nil {
			t.Errorf("cleanup: put back %s: %v", dir, err)
		}
	})
}

// TestDebPackage builds the .deb, checks its contents, installs it on this
// machine with dpkg -i, checks what dpkg registered, removes it, and purges
// it. It changes the host, so it refuses to run where hotplugd is already
// installed (by package or by make install), and cleans up with dpkg -P
// even when it fails.
func TestDebPackage(t *testing.T) {
	needRoot(t)
	for _, tool := range []string{"dpkg", "dpkg-deb", "dpkg-query"} {
		needTool(t, tool)
	}
	status, present := dpkgStatus(t, "hotplugd")
	need(t, !present, "a hotplugd package is already on this machine (%s); the test would replace it", status)
	for _, p := range []string{"/usr/bin/hotplugd", "/etc/hotplugd"} {
		_, err := os.Lstat(p)
		need(t, os.IsNotExist(err), "%s exists; the test's dpkg -P would remove it", p)
	}
	// What a daemon run from the tree (make run) left is kept from the
	// purge, and put back.
	for _, p := range []string{runDir, stateDir} {
		setAside(t, p)
	}

	deb := buildDeb(t)
	if want := "_" + debArch() + ".deb"; !strings.HasSuffix(deb, want) {
		t.Errorf("%s: file name does not end in %s", deb, want)
	}

	// The control file.
	fields := run(t, "", os.Environ(), "dpkg-deb", "-f", deb, "Package", "Architecture", "Depends", "Suggests", "Version")
	for _, w := range []string{"Package: hotplugd\n", "Architecture: " + debArch() + "\n", "Depends: libc6 (>= ", "ntfs-3g"} {
		if !strings.Contains(fields, w) {
			t.Errorf("control fields lack %q:\n%s", w, fields)
		}
	}
	conffiles := run(t, "", os.Environ(), "dpkg-deb", "--info", deb, "conffiles")
	if strings.TrimSpace(conffiles) != "/etc/hotplugd/rules.yaml" {
		t.Errorf("conffiles = %q, want /etc/hotplugd/rules.yaml", conffiles)
	}
	for _, script := range []string{"postinst", "prerm", "postrm", "md5sums"} {
		if _, _, err := runErr(t, "", os.Environ(), "dpkg-deb", "--info", deb, script); err != nil {
			t.Errorf("the package has no %s", script)
		}
	}

	// Every file, owned by root.
	listing := run(t, "", os.Environ(), "dpkg-deb", "-c", deb)
	listed := map[string]string{} // path → "mode owner"
	for _, line := range strings.Split(strings.TrimSpace(listing), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			t.Fatalf("dpkg-deb -c line %q", line)
		}
		listed[strings.TrimPrefix(f[len(f)-1], ".")] = f[0] + " " + f[1]
	}
	for name, mode := range debFiles() {
		want := "-" + mode.String()[1:] + " root/root"
		if got, ok := listed[name]; !ok {
			t.Errorf("%s is not in the package", name)
		} else if got != want {
			t.Errorf("%s: %s in the package, want %s", name, got, want)
		}
	}
	for name, attr := range listed {
		if _, ok := debFiles()[name]; !ok && !strings.HasPrefix(attr, "d") {
			t.Errorf("the package holds an unexpected file %s", name)
		}
	}

	// The binary is the cgo build: os/user goes through the C library, so
	// it links libc, and nothing else Depends does not name.
	x := filepath.Join(t.TempDir(), "x")
	run(t, "", os.Environ(), "dpkg-deb", "-x", deb, x)
	if ef, err := elf.Open(filepath.Join(x, "usr/bin/hotplugd")); err != nil {
		t.Error(err)
	} else {
		libs, err := ef.ImportedLibraries()
		if err != nil || len(libs) != 1 || libs[0] != "libc.so.6" {
			t.Errorf("/usr/bin/hotplugd links %q (%v), want libc.so.6 alone: build it with cgo (BUILD=cgo)", libs, err)
		}
		ef.Close()
	}

	// Keep a running systemd from starting the daemon on this machine while
	// the test runs: deb-systemd-invoke asks policy-rc.d.
	const policy = "/usr/sbin/policy-rc.d"
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		if _, err := os.Lstat(policy); os.IsNotExist(err) {
			if err := os.WriteFile(policy, []byte("#!/bin/sh\nexit 101\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(policy) })
		}
	}
	t.Cleanup(func() {
		if _, present := dpkgStatus(t, "hotplugd"); present {
			if out, err := exec.Command("dpkg", "-P", "hotplugd").CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg -P hotplugd: %v\n%s", err, out)
			}
		}
	})

	dpkg := func(args ...string) string {
		t.Helper()
		env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		return run(t, "", env, "dpkg", append([]string{"--force-confold"}, args...)...)
	}
	dpkg("-i", deb)

	if status := run(t, "", os.Environ(), "dpkg", "-s", "hotplugd"); !strings.Contains(status, "Status: install ok installed") {
		t.Errorf("dpkg -s hotplugd after dpkg -i:\n%s", status)
	}
	registered := run(t, "", os.Environ(), "dpkg-query", "-W", "-f=${Conffiles}", "hotplugd")
	if !strings.Contains(registered, "/etc/hotplugd/rules.yaml ") {
		t.Errorf("rules.yaml is not a registered conffile: %q", registered)
	}
	excluded := dpkgExcludes(t)
	for name, mode := range debFiles() {
		if excluded(name) {
			t.Logf("%s: not checked, dpkg is configured to leave it out (path-exclude)", name)
			continue
		}
		fi, err := os.Stat(name)
		if err != nil {
			t.Errorf("after dpkg -i: %v", err)
		} else if fi.Mode().Perm() != mode {
			t.Errorf("after dpkg -i: %s has mode %04o, want %04o", name, fi.Mode().Perm(), mode)
		}
	}
	if out := run(t, "", os.Environ(), "/usr/bin/hotplugd", "version"); !strings.HasPrefix(out, "hotplugd ") {
		t.Errorf("installed hotplugd version printed %q", out)
	}
	// postinst enabled the unit, as debhelper's scripts would, also without a
	// running systemd.
	const wants = "/etc/systemd/system/multi-user.target.wants/hotplugd.service"
	helper := false
	if _, err := os.Stat("/usr/bin/deb-systemd-helper"); err == nil {
		helper = true
		if _, err := os.Lstat(wants); err != nil {
			t.Errorf("postinst did not enable the unit: %v", err)
		}
	}

	// A reinstall keeps a changed conffile.
	mine := "# my rules\nrules: []\n"
	if err := os.WriteFile("/etc/hotplugd/rules.yaml", []byte(mine), 0o644); err != nil {
		t.Fatal(err)
	}
	dpkg("-i", deb)
	if got := readFile(t, "/etc/hotplugd/rules.yaml"); got != mine {
		t.Errorf("reinstalling the package replaced a changed rules.yaml with:\n%s", got)
	}

	// remove keeps the configuration, purge removes it.
	dpkg("-r", "hotplugd")
	if _, err := os.Stat("/usr/bin/hotplugd"); !os.IsNotExist(err) {
		t.Errorf("after dpkg -r: /usr/bin/hotplugd: %v", err)
	}
	if got := readFile(t, "/etc/hotplugd/rules.yaml"); got != mine {
		t.Errorf("dpkg -r changed rules.yaml to:\n%s", got)
	}
	// What the daemon leaves behind, the state file and the MQTT outbox,
	// goes with the purge.
	for _, f := range []string{runDir + "/mounts.json", stateDir + "/mqtt/outbox"} {
		if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte("{}\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dpkg("-P", "hotplugd")
	if status, present := dpkgStatus(t, "hotplugd"); present {
		t.Errorf("after dpkg -P hotplugd, dpkg reports %q", status)
	}
	for name := range debFiles() {
		if _, err := os.Lstat(name); !os.IsNotExist(err) {
			t.Errorf("after dpkg -P: %s: %v", name, err)
		}
	}
	for _, p := range []string{"/etc/hotplugd", runDir, stateDir, "/etc/systemd/system/hotplugd.service"} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("after dpkg -P: %s: %v", p, err)
		}
	}
	if helper {
		if _, err := os.Lstat(wants); !os.IsNotExist(err) {
			t.Errorf("after dpkg -P the unit is still enabled: %s: %v", wants, err)
		}
	}
}
