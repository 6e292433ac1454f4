package replay

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// check replays the loop image through rulesText against the
// expectations at path, and returns the diffs and the error of Finish.
func check(t *testing.T, rulesText, path string) ([]string, error) {
	t.Helper()
	x, err := ReadExpectations(path)
	if err != nil {
		t.Fatal(err)
	}
	var diffs []string
	for _, o := range replayFile(t, loadRules(t, rulesText), loopImage) {
		if d := x.Check(&o); d != nil {
			diffs = append(diffs, d.String())
		}
	}
	return diffs, x.Finish()
}

func update(t *testing.T, rulesText, path string) {
	t.Helper()
	u := NewUpdater()
	for _, o := range replayFile(t, loadRules(t, rulesText), loopImage) {
		u.Add(o)
	}
	if err := u.Write(path); err != nil {
		t.Fatal(err)
	}
}

// TestExpectUpdateThenDiff: --update writes what the rules do; they then
// agree; a changed match makes the check fail with a diff naming the
// event and the rule; --update again agrees, and keeps the comment.
func TestExpectUpdateThenDiff(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loop-image.expect.yaml")
	if err := os.WriteFile(path, []byte("# The loop image of the example.\n\nevents: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	update(t, stickRules, path)
	if diffs, err := check(t, stickRules, path); len(diffs) > 0 || err != nil {
		t.Fatalf("after --update: %v, diffs:\n%s", err, strings.Join(diffs, ""))
	}
	changed := strings.Replace(stickRules, `action == "add" && subsystem == "block" && fs.usage == "filesystem"`,
		`action == "add" && subsystem == "block" && fs.type == "ext4"`, 1)
	diffs, err := check(t, changed, path)
	if err != nil || len(diffs) != 2 {
		t.Fatalf("changed match: %v, %d diffs, want 2 (the add, and the remove not unmounted):\n%s", err, len(diffs), strings.Join(diffs, ""))
	}
	for _, want := range []string{"event 2 (", "add /devices/", "differs (-want +got):", "- rules: [automount, parent-walk]", "+ rules: [parent-walk]",
		`- automount mount: mount_path "/media/STICK"`} {
		if !strings.Contains(diffs[0], want) {
			t.Errorf("diff lacks %q:\n%s", want, diffs[0])
		}
	}
	if !strings.Contains(diffs[1], `- (removal) unmount: mount_path "/media/STICK"`) {
		t.Errorf("remove's diff:\n%s", diffs[1])
	}
	update(t, changed, path)
	if diffs, err := check(t, changed, path); len(diffs) > 0 || err != nil {
		t.Errorf("after the second --update: %v, diffs:\n%s", err, strings.Join(diffs, ""))
	}
	if b, _ := os.ReadFile(path); !strings.HasPrefix(string(b), "# The loop image of the example.\n\nevents:\n  - seqnum: ") {
		t.Errorf("the update lost the comment:\n%s", b)
	}
}

// TestExpectPartial: an expectation without actions compares the rules
// only, and an action's fields only where given.
func TestExpectPartial(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.yaml")
	text := `events:
  - index: 2
    rules: [automount, parent-walk]
    actions:
      - {rule: automount, kind: mount}
      - {rule: automount, kind: notify}
  - index: 3
    devpath: /devices/virtual/block/loop0/loop0p1
    rules: [gone]
`
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if diffs, err := check(t, stickRules, path); len(diffs) > 0 || err != nil {
		t.Errorf("%v, diffs:\n%s", err, strings.Join(diffs, ""))
	}
}

// TestExpectErrors: an expectations file that cannot be used says where.
func TestExpectErrors(t *testing.T) {
	for _, tt := range []struct {
		name, text, want string
	}{
		{"unknown field", "events:\n  - index: 2\n    rules: []\n    colour: red\n", `x.yaml:4: unknown field "colour" in an event's expectation`},
		{"unknown field of an action", "events:\n  - index: 2\n    rules: []\n    actions:\n      - {kind: run, args: [x]}\n", `x.yaml:5: unknown field "args" in an action`},
		{"unknown top-level field", "event:\n  - index: 2\n", `x.yaml:1: unknown field "event" in an expectations file`},
		{"no rules", "events:\n  - index: 2\n", "x.yaml:2: an event's expectation needs rules"},
		{"no event", "events:\n  - rules: []\n", "x.yaml:2: give the event's index (from 1) or its seqnum"},
		{"both", "events:\n  - {index: 1, seqnum: 4, rules: []}\n", "x.yaml:2: give the event's index"},
		{"twice", "events:\n  - {index: 1, rules: []}\n  - {index: 1, rules: [a]}\n", "x.yaml:3: event 1 has an expectation already, at line 2"},
		{"not YAML", "events: [\n", "x.yaml:"},
		{"wrong type", "events:\n  - {index: one, rules: []}\n", "x.yaml:2: cannot unmarshal"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.yaml")
			if err := os.WriteFile(path, []byte(tt.text), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := ReadExpectations(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// TestExpectNotOfTheRecording: an expectation of an event the recording
// does not have is an input error, not a difference.
func TestExpectNotOfTheRecording(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.yaml")
	if err := os.WriteFile(path, []byte("events:\n  - {seqnum: 1, rules: []}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := check(t, stickRules, path)
	var ie *InputError
	if !errors.As(err, &ie) || ie.Line != 2 || !strings.Contains(err.Error(), "no seqnum 1 in the recording") {
		t.Errorf("Finish: %v", err)
	}
}

func TestLineDiff(t *testing.T) {
	got := lineDiff([]string{"a", "b", "c", "d"}, []string{"a", "x", "c", "d", "e"})
	want := []string{"  a", "- b", "+ x", "  c", "  d", "+ e"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
