package packaging

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDebLintian runs lintian on the package: no errors, and every
// warning it still gives is explained in packaging/deb/README.
func TestDebLintian(t *testing.T) {
	lintian := needTool(t, "lintian")
	deb := buildDeb(t)
	stdout, stderr, err := runTimeout(t, 10*time.Minute, "", os.Environ(), lintian, "--fail-on", "error", "--display-info", deb)
	t.Logf("lintian --fail-on error --display-info %s:\n%s%s", filepath.Base(deb), stdout, stderr)
	if err != nil {
		t.Errorf("lintian finds errors in the package: %v", err)
	}
	readme := readFile(t, filepath.Join(repoRoot(t), "packaging/deb/README"))
	for _, m := range regexp.MustCompile(`(?m)^W: hotplugd: (\S+)`).FindAllStringSubmatch(stdout, -1) {
		if !strings.Contains(readme, "`"+m[1]+"`") {
			t.Errorf("lintian warns %s; fix it or say why it stays in packaging/deb/README", m[1])
		}
	}
}

// TestLicenses: the copyright file of the package covers every module
// compiled into hotplugd, each with a license it spells out, and
// packaging/deb/README names every module go.mod requires.
func TestLicenses(t *testing.T) {
	root := repoRoot(t)
	env := append(os.Environ(), "CGO_ENABLED=1")
	out := run(t, root, env, "go", "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}}{{end}}{{end}}", "./cmd/hotplugd")
	var compiled []string
	for _, p := range strings.Fields(out) {
		if !slices.Contains(compiled, p) {
			compiled = append(compiled, p)
		}
	}
	if len(compiled) == 0 {
		t.Fatal("go list finds no module compiled into hotplugd")
	}

	copyright := readFile(t, filepath.Join(root, "packaging/deb/copyright"))
	paras := strings.Split(copyright, "\n\n")
	if !strings.HasPrefix(paras[0], "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n") {
		t.Errorf("copyright does not start with the machine-readable Format line:\n%s", paras[0])
	}
	files := map[string]string{}  // Files: pattern → License: short name
	licenses := map[string]bool{} // stand-alone License paragraphs
	for _, p := range paras[1:] {
		f := fields(p)
		switch {
		case f["Files"] != "":
			for _, pat := range strings.Fields(f["Files"]) {
				files[pat] = f["License"]
			}
			if f["Copyright"] == "" || f["License"] == "" {
				t.Errorf("copyright: Files: %s has no Copyright or no License", f["Files"])
			}
		case f["License"] != "":
			licenses[strings.SplitN(f["License"], "\n", 2)[0]] = true
		default:
			t.Errorf("copyright: a paragraph neither Files nor License:\n%s", p)
		}
	}
	for _, mod := range append(compiled, "*") {
		pat := mod + "/*"
		if mod == "*" {
			pat = mod
		}
		if _, ok := files[pat]; !ok {
			t.Errorf("copyright has no Files: %s paragraph, and %s is compiled into hotplugd", pat, mod)
		}
	}
	for pat, lic := range files {
		if !licenses[lic] {
			t.Errorf("copyright: Files: %s is under %q, which no License paragraph spells out", pat, lic)
		}
	}

	var gomod struct{ Require []struct{ Path string } }
	if err := json.Unmarshal([]byte(run(t, root, os.Environ(), "go", "mod", "edit", "-json")), &gomod); err != nil {
		t.Fatal(err)
	}
	readme := readFile(t, filepath.Join(root, "packaging/deb/README"))
	for _, r := range gomod.Require {
		if !strings.Contains(readme, r.Path) {
			t.Errorf("packaging/deb/README does not list %s, which go.mod requires, with its license", r.Path)
		}
	}
}

// fields parses one paragraph of a deb822 file; a continuation line
// (starting with a space) joins the field before it with a newline.
func fields(para string) map[string]string {
	f := map[string]string{}
	var last string
	for _, line := range strings.Split(strings.TrimSpace(para), "\n") {
		if strings.HasPrefix(line, " ") && last != "" {
			f[last] += "\n" + strings.TrimSpace(line)
			continue
		}
		k, v, _ := strings.Cut(line, ":")
		last = k
		f[k] = strings.TrimSpace(v)
	}
	return f
}
