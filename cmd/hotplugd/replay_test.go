package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotplugd/hotplugd/internal/keyfile/keytest"
)

// TestReplayGolden runs `hotplugd test --replay` on a recorded plug and
// pull of a loop partition.
func TestReplayGolden(t *testing.T) {
	const (
		rules   = "testdata/replay-rules.yaml"
		changed = "testdata/replay-rules-changed.yaml"
		events  = "testdata/loop0p1-plug-pull.jsonl"
		expect  = "testdata/replay.expect.yaml"
	)
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"print", []string{"--config", rules, "--replay", events}, 0},
		{"expect", []string{"--config", rules, "--replay", events, "--expect", expect}, 0},
		{"expect-differs", []string{"--config", changed, "--replay", events, "--expect", expect}, 1},
		{"truncated-line", []string{"--config", rules, "--replay", "testdata/replay-truncated.jsonl"}, 2},
		{"not-an-event", []string{"--config", rules, "--replay", "testdata/replay-not-an-event.jsonl"}, 2},
		{"unknown-field", []string{"--config", rules, "--replay", "testdata/replay-unknown-field.jsonl"}, 2},
		{"expect-unknown-field", []string{"--config", rules, "--replay", events, "--expect", "testdata/replay-unknown-field.expect.yaml"}, 2},
		{"expect-other-recording", []string{"--config", rules, "--replay", events, "--expect", "testdata/replay-other-recording.expect.yaml"}, 2},
		{"missing-events", []string{"--config", rules, "--replay", "testdata/nope.jsonl"}, 2},
		{"bad-rules", []string{"--config", "testdata/replay-not-an-event.jsonl", "--replay", events}, 2},
		{"expect-alone", []string{"--config", rules, "--expect", expect}, 2},
		{"update-alone", []string{"--config", rules, "--replay", events, "--update"}, 2},
		{"replay-and-event", []string{"--config", rules, "--replay", events, "--event", "testdata/usb-stick-add.json"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, code := runCmd(t, append([]string{"test"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit status %d, want %d", code, tt.code)
			}
			golden(t, "replay-"+tt.name, got)
		})
	}
}

// TestReplayUpdate: after a change of the rules --expect fails, --update
// rewrites the file, and --expect then passes.
func TestReplayUpdate(t *testing.T) {
	expect := filepath.Join(t.TempDir(), "replay.expect.yaml")
	b, err := os.ReadFile("testdata/replay.expect.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(expect, b, 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"test", "--config", "testdata/replay-rules-changed.yaml", "--replay", "testdata/loop0p1-plug-pull.jsonl", "--expect", expect}
	if got, code := runCmd(t, args...); code != 1 {
		t.Fatalf("before the update: exit %d, want 1\n%s", code, got)
	}
	if got, code := runCmd(t, append(args, "--update")...); code != 0 || !strings.Contains(got, "wrote "+expect+": 3 of 5 events match a rule or act\n") {
		t.Fatalf("update: exit %d\n%s", code, got)
	}
	if got, code := runCmd(t, args...); code != 0 || !strings.Contains(got, "all 5 events agree") {
		t.Errorf("after the update: exit %d\n%s", code, got)
	}
	if b, _ := os.ReadFile(expect); !strings.HasPrefix(string(b), "# What replay-rules.yaml does") {
		t.Errorf("the update lost the file's comment:\n%s", b)
	}
}

// TestReplayUnlock runs `hotplugd test --replay` on a LUKS stick plugged
// in and pulled out: the add unlocks, mounts the cleartext and runs, the
// remove unmounts the cleartext and closes the mapping; the expectations
// hold the cryptsetup commands, so a read-only unlock differs. The
// keyfile is the test's, shown as $KEYS.
func TestReplayUnlock(t *testing.T) {
	const (
		events = "../../configs/examples/testdata/luks-stick.jsonl"
		expect = "testdata/replay-luks.expect.yaml"
	)
	key := keytest.Key(t, "the key itself")
	dir := t.TempDir()
	rules := func(name, extra string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(`rules:
  - name: luks-stick
    match: action == "add" && subsystem == "block" && fs.label == "STICK"
    actions:
      - unlock: {keyfile: `+key+extra+`}
      - mount: {options: [noatime]}
      - run: {argv: [/bin/echo, "{{ unlock.device }}", "{{ mount.path }}"]}
`), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	plain, readOnly := rules("rules.yaml", ""), rules("read-only.yaml", ", read_only: true")
	for _, tt := range []struct {
		name string
		args []string
		code int
	}{
		{"print", []string{"--config", plain, "--replay", events}, 0},
		{"expect", []string{"--config", plain, "--replay", events, "--expect", expect}, 0},
		{"expect-differs", []string{"--config", readOnly, "--replay", events, "--expect", expect}, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, code := runCmd(t, append([]string{"test"}, tt.args...)...)
			if code != tt.code {
				t.Errorf("exit status %d, want %d", code, tt.code)
			}
			if strings.Contains(got, "the key itself") {
				t.Errorf("the output holds the key:\n%s", got)
			}
			got = strings.NewReplacer(filepath.Dir(key), "$KEYS", dir, "$RULES").Replace(got)
			golden(t, "replay-luks-"+tt.name, got)
		})
	}
}
