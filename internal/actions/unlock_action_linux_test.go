package actions

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/actions/crypt"
	"github.com/hotplugd/hotplugd/internal/actions/crypt/crypttest"
	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/actions/run"
	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/logtest"
	"github.com/hotplugd/hotplugd/internal/looptest"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// luksDevice is what rules read of a LUKS partition.
type luksDevice struct {
	rules.EventOnly
	fs uevent.FS
}

func (d luksDevice) FS() uevent.FS { return d.fs }

const luksUUID = "ed32c0be-7d35-4b42-ac27-8e8114bb0e78"

// luksKey writes a keyfile of root's, whose contents must be in no Step.
func luksKey(t *testing.T) string {
	t.Helper()
	looptest.Need(t, os.Geteuid() == 0, "root (a keyfile must be root's)")
	p := filepath.Join(t.TempDir(), "backup.key")
	if err := os.WriteFile(p, []byte("secret-of-the-disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

const luksRules = `
rules:
  - name: backup-luks
    match: action == "add" && fs.type == "crypto_LUKS"
    actions:
      - unlock: {keyfile: %s}
      - mount: {}
      - run: {argv: [%s, "{{ unlock.device }}", "{{ mount.path }}"]}
`

// TestUnlockPlanned: the dry run shows the cryptsetup command with the
// keyfile's path only, the mapping and its node, and the actions after
// it see {{ unlock.device }} and a mount point to come.
func TestUnlockPlanned(t *testing.T) {
	key := luksKey(t)
	rs := loadRules(t, fmt.Sprintf(luksRules, key, "/bin/echo"))
	m := planMounter(t)
	set, err := Build(rs, &Deps{PlanOnly: true, Mounter: m})
	if err != nil {
		t.Fatal(err)
	}
	ev := event(t, "ACTION=add", "DEVPATH=/devices/virtual/block/sdb/sdb1", "SUBSYSTEM=block", "SEQNUM=4",
		"DEVNAME=sdb1", "MAJOR=8", "MINOR=17")
	dev := luksDevice{EventOnly: rules.EventOnly{Event: ev}, fs: uevent.FS{Type: "crypto_LUKS", Usage: "crypto", UUID: luksUUID}}
	var steps []Step
	set.Run(context.Background(), ev, dev, rs.Rules, observerFunc(func(st Step, err error) {
		if err != nil {
			t.Errorf("%s: %v", st.Kind, err)
		}
		steps = append(steps, st)
	}))
	if len(steps) != 3 {
		t.Fatalf("steps %+v", steps)
	}
	node := "/dev/mapper/luks-" + luksUUID
	u := steps[0]
	wantArgv := []string{"--key-file", "-", "--", "/dev/sdb1", "luks-" + luksUUID}
	if u.Kind != "unlock" || u.Mapping != "luks-"+luksUUID || u.Cleartext != node || u.Keyfile != key ||
		len(u.Argv) < 5 || !cmp.Equal(u.Argv[len(u.Argv)-5:], wantArgv) || !strings.HasSuffix(u.Argv[0], "cryptsetup") {
		t.Errorf("unlock step %+v", u)
	}
	if mnt := steps[1]; mnt.Devnode != node || mnt.MountPath != filepath.Join(m.Root(), mount.UnknownName) || mnt.Mount != nil {
		t.Errorf("mount step %+v", mnt)
	}
	if diff := cmp.Diff([]string{"/bin/echo", node, filepath.Join(m.Root(), mount.UnknownName)}, steps[2].Argv); diff != "" {
		t.Errorf("argv after the unlock (-want +got):\n%s", diff)
	}
	if s := fmt.Sprintf("%+v", steps); strings.Contains(s, "secret-of-the-disk") {
		t.Errorf("a step holds the key: %s", s)
	}
}

// TestUnlockNotLUKS: an unlock of a device that holds no LUKS header
// fails and ends its rule; nothing runs.
func TestUnlockNotLUKS(t *testing.T) {
	rs := loadRules(t, fmt.Sprintf(luksRules, luksKey(t), "/bin/true"))
	set, err := Build(rs, &Deps{PlanOnly: true, Mounter: planMounter(t)})
	if err != nil {
		t.Fatal(err)
	}
	ev := event(t, "ACTION=add", "DEVPATH=/devices/virtual/block/sdb/sdb1", "SUBSYSTEM=block", "SEQNUM=4",
		"DEVNAME=sdb1", "MAJOR=8", "MINOR=17")
	dev := luksDevice{EventOnly: rules.EventOnly{Event: ev}, fs: uevent.FS{Type: "vfat", Usage: "filesystem"}}
	var errs []error
	set.Run(context.Background(), ev, dev, rs.Rules, observerFunc(func(_ Step, err error) { errs = append(errs, err) }))
	if len(errs) != 1 || !errors.Is(errs[0], errNotLUKS) {
		t.Errorf("errors %v, want one: %v", errs, errNotLUKS)
	}
}

// TestUnlockMountRemove: the daemon's path on a fake cryptsetup: the
// device unlocked, its cleartext probed and mounted at its label, a run
// that sees {{ unlock.device }} and {{ mount.path }}; the removal of the
// backing device unmounts the cleartext and closes the mapping.
func TestUnlockMountRemove(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	key := luksKey(t)
	backing := looptest.Attach(t, looptest.Image(t, 8<<20, ""))
	bst := looptest.WaitBlockDevice(t, backing.Dev)
	clear := looptest.Attach(t, looptest.Image(t, 32<<20, ""))
	looptest.Mkfs(t, "ext4", "SECRET", clear.Dev)
	cst := looptest.WaitBlockDevice(t, clear.Dev)
	dir := t.TempDir()
	num := fmt.Sprintf("%d:%d", unix.Major(cst.Rdev), unix.Minor(cst.Rdev))
	fake := crypttest.New(t, "secret-of-the-disk", clear.Dev, num) // it opens only with the key on stdin
	log, _ := logtest.New(t)
	root := filepath.Join(dir, "media")
	m, err := mount.NewMounter(mount.Config{MountRoot: root, StatePath: filepath.Join(dir, "run", "mounts.json"),
		Roots:  host.Roots{Sys: fake.Sys, Dev: fake.Dev, Etc: dir},
		Logger: log, Crypt: &crypt.Cryptsetup{Path: fake.Path, Runner: &run.Runner{Log: log}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var probed []string
	deps := &Deps{Log: log, Runner: &run.Runner{Log: log}, Mounter: m, Probe: func(_ context.Context, devname string) (uevent.FS, error) {
		probed = append(probed, devname)
		return uevent.FS{Type: "ext4", Usage: "filesystem", Label: "SECRET"}, nil
	}}
	out := filepath.Join(dir, "seen")
	rs := loadRules(t, fmt.Sprintf(luksRules, key, "/bin/true")+`
      - run: {argv: [/bin/sh, -c, 'echo "$0 $1" > `+out+`', "{{ unlock.device }}", "{{ mount.path }}"]}
`)
	set, err := Build(rs, deps)
	if err != nil {
		t.Fatal(err)
	}
	props := []string{"DEVPATH=/devices/virtual/block/" + backing.Name, "SUBSYSTEM=block", "DEVNAME=" + backing.Name,
		fmt.Sprintf("MAJOR=%d", unix.Major(bst.Rdev)), fmt.Sprintf("MINOR=%d", unix.Minor(bst.Rdev))}
	add := event(t, append([]string{"ACTION=add", "SEQNUM=1"}, props...)...)
	dev := luksDevice{EventOnly: rules.EventOnly{Event: add}, fs: uevent.FS{Type: "crypto_LUKS", Usage: "crypto", UUID: luksUUID}}
	var rec recorder
	set.Run(context.Background(), add, dev, rs.Rules, &rec)
	point := filepath.Join(root, "SECRET")
	node := filepath.Join(fake.Dev, "mapper", "luks-"+luksUUID)
	if b, err := os.ReadFile(out); err != nil || string(b) != node+" "+point+"\n" {
		t.Errorf("the run saw %q (%v), want %q; steps:\n%s", b, err, node+" "+point, strings.Join(rec.lines, "\n"))
	}
	if !cmp.Equal(probed, []string{"dm-0"}) {
		t.Errorf("probed %q, want the cleartext dm-0", probed)
	}
	if calls := fake.Calls(t); len(calls) != 1 || strings.Contains(calls[0], "secret-of-the-disk") {
		t.Errorf("cryptsetup calls %q, want one open, the key on stdin only", calls)
	}

	rec = recorder{}
	remove := event(t, append([]string{"ACTION=remove", "SEQNUM=2"}, props...)...)
	set.Run(context.Background(), remove, nil, nil, &rec)
	closeArgv := fmt.Sprintf("%q", []string{fake.Path, "close", "--", "luks-" + luksUUID})
	if want := []string{`(removal) unmount argv=` + closeArgv + ` path="` + point + `" msg=""`}; !cmp.Equal(want, rec.lines) {
		t.Errorf("removal: %q, want %q", rec.lines, want)
	}
	if _, err := os.Stat(point); !errors.Is(err, os.ErrNotExist) || len(m.Mappings()) != 0 || len(m.Entries()) != 0 {
		t.Errorf("after the removal: %s still there (%v), mappings %+v, mounts %+v", point, err, m.Mappings(), m.Entries())
	}
	if fake.Open() {
		t.Error("the mapping was not closed")
	}
}

// TestMountReadOnlyUnlock: the mount after a read-only unlock asks for
// ro, which mount(2) needs on a read-only device; other mounts do not.
func TestMountReadOnlyUnlock(t *testing.T) {
	a := &mountAction{spec: &rules.MountSpec{Options: []string{"noatime"}}}
	ro := a.request(&Context{Rule: "r", Unlocked: &mount.Mapping{ReadOnly: true}})
	rw := a.request(&Context{Rule: "r", Unlocked: &mount.Mapping{}})
	plain := a.request(&Context{Rule: "r"})
	if !cmp.Equal(ro.Options, []string{"noatime", "ro"}) || !cmp.Equal(rw.Options, []string{"noatime"}) ||
		!cmp.Equal(plain.Options, []string{"noatime"}) || !cmp.Equal(a.spec.Options, []string{"noatime"}) {
		t.Errorf("options: read-only unlock %q, unlock %q, no unlock %q; the rule's now %q", ro.Options, rw.Options, plain.Options, a.spec.Options)
	}
}
