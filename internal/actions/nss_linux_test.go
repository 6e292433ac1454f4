package actions

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/account"
	"github.com/hotplugd/hotplugd/internal/actions/run"
	"github.com/hotplugd/hotplugd/internal/logtest"
	"github.com/hotplugd/hotplugd/internal/looptest"
	"github.com/hotplugd/hotplugd/internal/nsstest"
	"github.com/hotplugd/hotplugd/internal/rules"
)

// TestRunAsNSSUser: a rule whose user only an NSS module knows (as an LDAP
// or SSSD user is unknown to /etc/passwd) loads, and its run action's
// child really has that user's uid, gid, supplementary group and home, as
// the kernel and the environment tell the child itself.
func TestRunAsNSSUser(t *testing.T) {
	looptest.Need(t, account.NSS, "a cgo build: os/user asks NSS only through the C library (CGO_ENABLED=1, no osusergo tag)")
	cat, err1 := exec.LookPath("cat")
	env, err2 := exec.LookPath("env")
	looptest.Need(t, err1 == nil && err2 == nil, "cat and env")
	u := nsstest.AddUser(t)

	path := filepath.Join(t.TempDir(), "rules.yaml")
	src := fmt.Sprintf(`rules:
  - name: as-nss-user
    match: action == "change" && subsystem == "net"
    actions:
      - run: {argv: [%s, /proc/self/status], user: %s}
      - run: {argv: [%s], user: %s}
`, cat, u.Name, env, u.Name)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Load(path)
	if err != nil {
		t.Fatalf("the rules do not load:\n%v", err)
	}
	log, records := logtest.New(t)
	set, err := Build(rs, &Deps{Log: log, Runner: &run.Runner{Log: log}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ev := event(t, "ACTION=change", "DEVPATH=/devices/virtual/net/lo", "SUBSYSTEM=net", "SEQNUM=1", "INTERFACE=lo")
	var rec recorder
	set.Run(ctx, ev, nil, rs.Rules, &rec)
	for _, l := range rec.lines {
		if strings.HasSuffix(l, " err") {
			t.Errorf("an action failed: %s", l)
		}
	}

	said := map[string]bool{}
	for _, r := range records() {
		if r.Msg == "run output" {
			said[r.Str("line")] = true
		}
	}
	id, gid := fmt.Sprint(u.UID), fmt.Sprint(u.GID)
	for _, want := range []string{
		"Uid:\t" + id + "\t" + id + "\t" + id + "\t" + id,
		"Gid:\t" + gid + "\t" + gid + "\t" + gid + "\t" + gid,
		fmt.Sprintf("Groups:\t%d %d ", u.GID, u.GroupGID),
		"HOME=" + u.Home, "USER=" + u.Name, "LOGNAME=" + u.Name,
	} {
		if !said[want] && !said[strings.TrimSuffix(want, " ")] {
			t.Errorf("the child did not print %q", want)
		}
	}
}
