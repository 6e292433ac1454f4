package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/actions/crypt"
	"github.com/hotplugd/hotplugd/internal/keyfile/keytest"
	"github.com/hotplugd/hotplugd/internal/rules"
)

// stick is the shipped recording of a USB stick plugged in and pulled
// out, made in the real-machine suite's guest; loopImage that of a disk
// image's partition on a loop device, added and removed.
// luksStick is the same stick with a LUKS2 header on its partition
// (derived from the recording of stick).
const (
	stick     = "../../configs/examples/testdata/usb-stick.jsonl"
	loopImage = "../../configs/examples/testdata/loop-image.jsonl"
	luksStick = "../../configs/examples/testdata/luks-stick.jsonl"
)

// stickRules mount whatever filesystem is added, say so, and say which
// label is removed.
const stickRules = `settings: {mount_root: /media}
rules:
  - name: automount
    match: action == "add" && subsystem == "block" && fs.usage == "filesystem"
    actions:
      - mount: {options: [noatime]}
      - notify: {message: "{{ fs.label }} at {{ mount.path }}"}
  - name: gone
    match: action == "remove" && subsystem == "block" && fs.usage == "filesystem"
    actions:
      - notify: {message: "{{ fs.label }} removed"}
  - name: parent-walk
    match: action == "add" && devtype == "partition" && attrs("removable") != "" && attr("partition") == "1"
`

func loadRules(t testing.TB, text string) *rules.RuleSet {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	rs, err := rules.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// replayFile replays the recording at path through rs.
func replayFile(t testing.TB, rs *rules.RuleSet, path string) []Outcome {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return replayAll(t, rs, f, path)
}

func replayAll(t testing.TB, rs *rules.RuleSet, r io.Reader, name string) []Outcome {
	t.Helper()
	rp, err := New(rs)
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	var out []Outcome
	rd := NewReader(r, name)
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rp.Replay(context.Background(), ev))
	}
}

func names(o Outcome) string {
	var n []string
	for _, r := range o.Matched {
		n = append(n, r.Name)
	}
	return strings.Join(n, ",")
}

// TestReplayStick: the automount rule matches the partition's add, and
// its remove sees the same fs.label, from what the add knew, and is
// unmounted from where the add mounted it.
func TestReplayStick(t *testing.T) {
	outs := replayFile(t, loadRules(t, stickRules), stick)
	var add, remove *Outcome
	for i := range outs {
		o := &outs[i]
		ev := o.Rec.Event
		switch {
		case ev.Action == "add" && ev.DevType == "partition":
			add = o
		case ev.Action == "remove" && add != nil && ev.DevPath == add.Rec.Event.DevPath:
			remove = o
		case len(o.Matched) > 0 || len(o.Steps) > 0:
			t.Errorf("event %d (%s %s): rules %s, steps %+v; want none", o.Index, ev.Action, ev.DevPath, names(*o), o.Steps)
		}
	}
	if add == nil || remove == nil {
		t.Fatalf("%s has no add and remove of a partition", stick)
	}
	label := add.Rec.FS.Label
	if names(*add) != "automount,parent-walk" || add.Facts != Recorded || label == "" {
		t.Errorf("add: rules %s, facts %v, label %q; want automount and parent-walk, recorded, a label", names(*add), add.Facts, label)
	}
	path := "/media/" + label
	if len(add.Steps) != 2 || add.Steps[0].MountPath != path || add.Steps[0].Mount == nil || add.Steps[1].Message != label+" at "+path {
		t.Errorf("add: steps %+v; want the mount at %s and its notification", add.Steps, path)
	}
	if names(*remove) != "gone" || remove.Facts != Remembered || remove.FS.Label != label || remove.Rec.Walk == nil || len(remove.Rec.Walk) != 0 {
		t.Errorf("remove: rules %s, facts %v, fs %+v; want gone, remembered, label %q", names(*remove), remove.Facts, remove.FS, label)
	}
	if len(remove.Steps) != 2 || remove.Steps[0].Message != label+" removed" || remove.Steps[1].Rule != nil || remove.Steps[1].MountPath != path {
		t.Errorf("remove: steps %+v; want the notification and the unmount from %s", remove.Steps, path)
	}
}

// luksRules unlock the stick's partition, mount the cleartext and say
// where; %s is the keyfile, %s the unlock's further settings.
const luksRules = `settings: {mount_root: /media}
rules:
  - name: luks-stick
    match: action == "add" && subsystem == "block" && fs.type == "crypto_LUKS" && fs.label == "STICK"
    actions:
      - unlock: {keyfile: %s%s}
      - mount: {options: [noatime]}
      - run: {argv: [/bin/echo, "{{ unlock.device }}", "{{ mount.path }}"]}
`

// TestReplayLUKS: the add of a LUKS partition plans the unlock with its
// cryptsetup command (the key on stdin, its path in no argv), the mount
// of the cleartext and a run that sees both; its remove plans what the
// daemon does, the cleartext unmounted from where it was planned, then
// the mapping closed.
func TestReplayLUKS(t *testing.T) {
	key := keytest.Key(t, "the key of the stick")
	outs := replayFile(t, loadRules(t, fmt.Sprintf(luksRules, key, "")), luksStick)
	const (
		name = "luks-ed32c0be-7d35-4b42-ac27-8e8114bb0e78"
		node = "/dev/mapper/" + name
		path = "/media/<mount point>" // a replay opens nothing: what is inside, and its label, is not known
	)
	cryptsetup := crypt.DefaultPaths[0] // the replay's machine's, whatever this one has
	var got []string
	for _, o := range outs {
		for _, st := range o.Steps {
			rule := "(removal)"
			if st.Rule != nil {
				rule = st.Rule.Name
			}
			got = append(got, fmt.Sprintf("%d %s %s argv=%q path=%q mapping=%q err=%v", o.Rec.Event.Seqnum, rule, st.Kind,
				st.Argv, st.MountPath, st.Mapping, st.Err))
		}
	}
	want := []string{
		fmt.Sprintf("687 luks-stick unlock argv=%q path=\"\" mapping=%q err=<nil>",
			[]string{cryptsetup, "open", "--type", "luks", "--key-file", "-", "--", "/dev/sda1", name}, name),
		fmt.Sprintf("687 luks-stick mount argv=[] path=%q mapping=\"\" err=<nil>", path),
		fmt.Sprintf("687 luks-stick run argv=%q path=\"\" mapping=\"\" err=<nil>", []string{"/bin/echo", node, path}),
		fmt.Sprintf("692 (removal) unmount argv=%q path=%q mapping=%q err=<nil>", []string{cryptsetup, "close", "--", name}, path, name),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("steps (-want +got):\n%s", diff)
	}
	if s := fmt.Sprintf("%+v", outs); strings.Contains(s, "the key of the stick") {
		t.Error("an outcome holds the key")
	}
}

// TestReplayLUKSExpect: the expectations of a LUKS stick have the
// unlock's cryptsetup command, so a changed unlock (read-only here)
// differs; and the close of the mapping after the removal.
func TestReplayLUKSExpect(t *testing.T) {
	key := keytest.Key(t, "the key of the stick")
	path := filepath.Join(t.TempDir(), "luks.expect.yaml")
	u := NewUpdater()
	for _, o := range replayFile(t, loadRules(t, fmt.Sprintf(luksRules, key, "")), luksStick) {
		u.Add(o)
	}
	if err := u.Write(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: unlock\n        argv: [" + crypt.DefaultPaths[0] + ", open,",
		"kind: unmount\n        argv: [" + crypt.DefaultPaths[0] + ", close, --, luks-ed32c0be-"} {
		if !strings.Contains(string(b), want) {
			t.Errorf("expectations lack %q:\n%s", want, b)
		}
	}
	x, err := ReadExpectations(path)
	if err != nil {
		t.Fatal(err)
	}
	var diffs []string
	for _, o := range replayFile(t, loadRules(t, fmt.Sprintf(luksRules, key, ", read_only: true")), luksStick) {
		if d := x.Check(&o); d != nil {
			diffs = append(diffs, d.String())
		}
	}
	if len(diffs) != 1 || !strings.Contains(diffs[0], `+ luks-stick unlock: argv ["`+crypt.DefaultPaths[0]+`", "open", "--type", "luks", "--key-file", "-", "--readonly", "--"`) {
		t.Errorf("a read-only unlock: diffs\n%s", strings.Join(diffs, ""))
	}
}

// TestReplayWithoutFacts: an event without a walk, and a remove of a
// device no event told of, answer "" and false, and say so.
func TestReplayWithoutFacts(t *testing.T) {
	rs := loadRules(t, `rules:
  - {name: removable, match: 'attrs("removable") == "0"'}
  - {name: any-fs, match: 'fs.usage != ""'}
  - {name: not-usb, match: '!has_parent("usb")'}
`)
	in := `{"seqnum":7,"action":"add","devpath":"/devices/virtual/block/loop1/loop1p1","subsystem":"block","devname":"loop1p1","env":{"MAJOR":"259","MINOR":"1"}}
{"seqnum":8,"action":"remove","devpath":"/devices/virtual/block/loop2/loop2p1","subsystem":"block","devname":"loop2p1","env":{"MAJOR":"259","MINOR":"2"},"walk":[]}
{"seqnum":9,"action":"add","devpath":"/devices/virtual/block/loop3","subsystem":"block","devname":"loop3","env":{"ID_FS_USAGE":"filesystem"},"walk":[{"devpath":"/devices/virtual/block/loop3","subsystem":"block","devtype":"disk","driver":"","attrs":{"removable":"0"}}]}
`
	outs := replayAll(t, rs, strings.NewReader(in), "in")
	for i, want := range []struct {
		facts Facts
		rules string
	}{{NotRecorded, "not-usb"}, {Unknown, "not-usb"}, {Recorded, "removable,any-fs,not-usb"}} {
		if o := outs[i]; o.Facts != want.facts || names(o) != want.rules {
			t.Errorf("event %d: facts %v, rules %s; want %v, %s", i+1, o.Facts, names(o), want.facts, want.rules)
		}
	}
}

// TestReaderErrors: each line that is not a recorded event is named by
// its line.
func TestReaderErrors(t *testing.T) {
	good := `{"seqnum":1,"action":"change","devpath":"/devices/virtual/net/lo","subsystem":"net"}`
	for _, tt := range []struct {
		name, in, want string
	}{
		{"truncated line", "# a comment\n" + good + "\n" + good[:50] + "\n", "in:3: not a recorded event: unexpected end of JSON input"},
		{"not an event", good + "\n\n" + `{"seqnum":2}` + "\n", "in:3: not a recorded event: no ACTION"},
		{"not JSON", "KEY=VALUE\n", "in:1: not a recorded event: invalid character 'K' looking for beginning of value"},
		{"unknown field", good[:len(good)-1] + `,"walks":[]}`, `in:1: not a recorded event: json: unknown field "walks"`},
		{"too long", good + "\n" + strings.Repeat(" ", maxLine+1) + "\n", "in:2: line longer than"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rd := NewReader(strings.NewReader(tt.in), "in")
			var err error
			for err == nil {
				_, err = rd.Next()
			}
			var ie *InputError
			if !errors.As(err, &ie) || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}
