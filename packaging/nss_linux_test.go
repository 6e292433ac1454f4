package packaging

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotplugd/hotplugd/internal/nsstest"
)

// TestUsersFromNSS checks a rule that names a user only an NSS module
// knows with the two builds of make release: the package's (cgo) binary
// accepts it; the tarball's static one says at the user's FILE:LINE:COL
// that it does not know the user and that it read /etc/passwd alone. A
// user nobody knows is such an error from both.
func TestUsersFromNSS(t *testing.T) {
	needTool(t, "gcc")
	u := nsstest.AddUser(t)
	dir := t.TempDir()
	bins := map[string]string{"cgo": filepath.Join(dir, "cgo"), "static": filepath.Join(dir, "static")}
	for build, bin := range bins {
		runMake(t, "build", "BUILD="+build, "BIN="+bin)
	}

	rules := func(name string) (path, pos string) {
		line := fmt.Sprintf("      - run: {argv: [/bin/true], user: %s}", name)
		src := "rules:\n  - name: nss\n    match: action == \"add\"\n    actions:\n" + line + "\n"
		path = filepath.Join(t.TempDir(), "rules.yaml")
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		return path, fmt.Sprintf("%s:5:%d: ", path, strings.Index(line, name)+1)
	}
	known, knownPos := rules(u.Name)
	gone := u.Name + "-gone"
	unknown, unknownPos := rules(gone)

	check := func(build, path string) (string, error) {
		t.Helper()
		stdout, stderr, err := runErr(t, "", os.Environ(), bins[build], "check", "--config", path)
		t.Logf("%s hotplugd check %s: %v\n%s%s", build, path, err, stdout, stderr)
		return stdout + stderr, err
	}
	if out, err := check("cgo", known); err != nil || !strings.Contains(out, known+": ok, 1 rule") {
		t.Errorf("the package's hotplugd does not accept user %s, whom NSS knows: %v\n%s", u.Name, err, out)
	}
	for _, tc := range []struct {
		build, path, want string
	}{
		{"static", known, knownPos + `rule "nss": user: unknown user "` + u.Name + `": not in /etc/passwd and /etc/group (a static build`},
		{"static", unknown, unknownPos + `rule "nss": user: unknown user "` + gone + `": not in /etc/passwd and /etc/group (a static build`},
		{"cgo", unknown, unknownPos + `rule "nss": user: unknown user "` + gone + `": not in the user database (NSS`},
	} {
		if out, err := check(tc.build, tc.path); err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s hotplugd check %s: %v, want exit status 1 and %q:\n%s", tc.build, tc.path, err, tc.want, out)
		}
	}
}
