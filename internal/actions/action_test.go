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

	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// recorder is an Observer that writes what it hears as lines.
type recorder struct{ lines []string }

func (r *recorder) Matched(rule *rules.Rule) { r.lines = append(r.lines, "matched "+rule.Name) }
func (r *recorder) Did(rule *rules.Rule, st Step, err error) {
	name := "(removal)"
	if rule != nil {
		name = rule.Name
	}
	line := fmt.Sprintf("%s %s argv=%q path=%q msg=%q", name, st.Kind, st.Argv, st.MountPath, st.Message)
	if err != nil {
		line += " err"
	}
	r.lines = append(r.lines, line)
}
func (r *recorder) Ended(rule *rules.Rule, left int) {
	r.lines = append(r.lines, fmt.Sprintf("ended %s, %d not run", rule.Name, left))
}

func loadRules(t *testing.T, yaml string) *rules.RuleSet {
	t.Helper()
	rs, err := rules.Parse("rules.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

func event(t *testing.T, props ...string) *uevent.Event {
	t.Helper()
	var ps []uevent.Property
	for _, kv := range props {
		k, v, _ := strings.Cut(kv, "=")
		ps = append(ps, uevent.Property{Key: k, Value: v})
	}
	ev, err := uevent.FromProps(ps)
	if err != nil {
		t.Fatal(err)
	}
	return &ev
}

// planMounter is a plan-only mounter whose mount root is a new directory.
func planMounter(t *testing.T) *mount.Mounter {
	t.Helper()
	dir := t.TempDir()
	m, err := mount.NewMounter(mount.Config{
		MountRoot: filepath.Join(dir, "media"),
		StatePath: filepath.Join(dir, "mounts.json"),
		PlanOnly:  true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestRunPlanOnly: with a plan-only executor every action says what it
// would do, nothing runs, and a failed action ends its rule.
func TestRunPlanOnly(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	rs := loadRules(t, `
rules:
  - name: first
    match: action == "add"
    actions:
      - run: {argv: [/usr/bin/touch, `+marker+`, "{{ devname }}"]}
      - notify: {message: "{{ devname }} done"}
  - name: broken
    match: action == "add"
    actions:
      - notify: {message: "{{ int(env.NOPE) }}"}
      - run: {argv: [/usr/bin/touch, `+marker+`]}
      - run: {argv: [/usr/bin/touch, `+marker+`]}
`)
	set, err := Build(rs, &Deps{PlanOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ev := event(t, "ACTION=add", "DEVPATH=/devices/virtual/net/x0", "SUBSYSTEM=net", "SEQNUM=1", "DEVNAME=x0")
	var rec recorder
	set.Run(context.Background(), ev, nil, rs.Rules, &rec)
	want := []string{
		"matched first",
		`first run argv=["/usr/bin/touch" "` + marker + `" "x0"] path="" msg=""`,
		`first notify argv=[] path="" msg="x0 done"`,
		"matched broken",
		`broken notify argv=[] path="" msg="" err`,
		"ended broken, 2 not run",
	}
	if diff := cmp.Diff(want, rec.lines); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a plan-only run executed its program: %v", err)
	}
}

// TestRunRemovalUnmounts: the removal of a block device ends with the
// unmount, whatever the rules say, and only then.
func TestRunRemovalUnmounts(t *testing.T) {
	rs := loadRules(t, `
rules:
  - name: gone
    match: action == "remove"
    actions:
      - unmount: {}
      - notify: {message: "{{ devname }} was at {{ mount.path }}"}
`)
	m := planMounter(t)
	set, err := Build(rs, &Deps{PlanOnly: true, Mounter: m})
	if err != nil {
		t.Fatal(err)
	}
	block := event(t, "ACTION=remove", "DEVPATH=/devices/virtual/block/loop0/loop0p1", "SUBSYSTEM=block",
		"SEQNUM=2", "DEVNAME=loop0p1", "MAJOR=259", "MINOR=0")
	var rec recorder
	set.Run(context.Background(), block, nil, rs.Rules, &rec)
	want := []string{
		"matched gone",
		`gone unmount argv=[] path="" msg=""`,
		`gone notify argv=[] path="" msg="loop0p1 was at ` + filepath.Join(m.Root(), mount.UnknownName) + `"`,
		`(removal) unmount argv=[] path="" msg=""`,
	}
	if diff := cmp.Diff(want, rec.lines); diff != "" {
		t.Errorf("block remove (-want +got):\n%s", diff)
	}

	rec = recorder{}
	set.Run(context.Background(), block, nil, nil, &rec)
	if diff := cmp.Diff([]string{`(removal) unmount argv=[] path="" msg=""`}, rec.lines); diff != "" {
		t.Errorf("block remove, no rule (-want +got):\n%s", diff)
	}

	rec = recorder{}
	net := event(t, "ACTION=remove", "DEVPATH=/devices/virtual/net/x0", "SUBSYSTEM=net", "SEQNUM=3")
	set.Run(context.Background(), net, nil, nil, &rec)
	if len(rec.lines) != 0 {
		t.Errorf("remove of a net device: %q, want nothing", rec.lines)
	}
}

// TestMountPlanned: a plan-only mount reports the mounter's own plan: the
// mount point and the whole option string, and the actions after it see
// the mount point.
func TestMountPlanned(t *testing.T) {
	rs := loadRules(t, `
rules:
  - name: stick
    match: action == "add"
    actions:
      - mount: {options: [noatime]}
      - run: {argv: [/bin/echo, "{{ mount.path }}"]}
`)
	m := planMounter(t)
	deps := &Deps{PlanOnly: true, Mounter: m}
	set, err := Build(rs, deps)
	if err != nil {
		t.Fatal(err)
	}
	ev := event(t, "ACTION=add", "DEVPATH=/devices/virtual/block/loop0/loop0p1", "SUBSYSTEM=block", "SEQNUM=4",
		"DEVNAME=loop0p1", "MAJOR=259", "MINOR=0", "ID_FS_TYPE=ext4", "ID_FS_USAGE=filesystem", `ID_FS_LABEL_ENC=My\x20Disk`)
	var steps []Step
	set.Run(context.Background(), ev, nil, rs.Rules, observerFunc(func(st Step, err error) {
		if err != nil {
			t.Errorf("%s: %v", st.Kind, err)
		}
		steps = append(steps, st)
	}))
	if len(steps) != 2 || steps[0].Mount == nil {
		t.Fatalf("steps %+v", steps)
	}
	path := filepath.Join(m.Root(), "My Disk")
	p := steps[0].Mount
	if p.MountPoint != path || p.Options != "nosuid,nodev,noexec,noatime,errors=remount-ro" {
		t.Errorf("plan: mount point %q options %q", p.MountPoint, p.Options)
	}
	if diff := cmp.Diff([]string{"/bin/echo", path}, steps[1].Argv); diff != "" {
		t.Errorf("argv after the mount (-want +got):\n%s", diff)
	}
}

type observerFunc func(Step, error)

func (observerFunc) Matched(*rules.Rule)                     {}
func (f observerFunc) Did(_ *rules.Rule, st Step, err error) { f(st, err) }
func (observerFunc) Ended(*rules.Rule, int)                  {}

// TestMountWithoutMounter: a mount in a process that cannot mount fails
// with the reason, and ends its rule.
func TestMountWithoutMounter(t *testing.T) {
	rs := loadRules(t, `
rules:
  - name: stick
    match: action == "add"
    actions:
      - mount: {}
      - run: {argv: [/bin/true]}
`)
	set, err := Build(rs, &Deps{PlanOnly: true, MountErr: errors.New("hotplugd runs as uid 1000")})
	if err != nil {
		t.Fatal(err)
	}
	ev := event(t, "ACTION=add", "DEVPATH=/devices/virtual/block/loop0", "SUBSYSTEM=block", "SEQNUM=5", "DEVNAME=loop0")
	var rec recorder
	var gotErr error
	set.Run(context.Background(), ev, nil, rs.Rules, observerFunc(func(st Step, err error) { gotErr = err; rec.Did(rs.Rules[0], st, err) }))
	if !errors.Is(gotErr, errNoMounter) || !strings.Contains(gotErr.Error(), "uid 1000") {
		t.Errorf("error %v, want %v with the reason", gotErr, errNoMounter)
	}
	if len(rec.lines) != 1 {
		t.Errorf("steps %q: the run after a failed mount must not run", rec.lines)
	}
}
