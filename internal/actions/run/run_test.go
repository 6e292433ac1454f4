package run

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/hotplugd/hotplugd/internal/logtest"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// runEvent builds an event the way the listener would, through the
// checks of uevent.FromProps.
func runEvent(t testing.TB, props ...string) *uevent.Event {
	t.Helper()
	var ps []uevent.Property
	for _, kv := range props {
		k, v, _ := strings.Cut(kv, "=")
		ps = append(ps, uevent.Property{Key: k, Value: v})
	}
	ev, err := uevent.FromProps(ps)
	if err != nil {
		t.Fatalf("FromProps: %v", err)
	}
	ev.Source = uevent.SourceKernel
	return &ev
}

func TestRunEnviron(t *testing.T) {
	defer goleak.VerifyNone(t)
	ev := runEvent(t,
		"ACTION=add", "DEVPATH=/devices/virtual/block/loop7", "SUBSYSTEM=block",
		"DEVNAME=loop7", "DEVTYPE=disk", "SEQNUM=4242", "MAJOR=7",
		"PATH=/evil", "LD_PRELOAD=/tmp/evil.so", "IFS=x", "HOME=/root/evil",
		"RULE=fake", "DEVNODE=/dev/evil", "SYNTH_ARG_key=lower",
		"ID_FS_LABEL=a b $(touch x) `id`; \n=z\xff",
	)
	tests := []struct {
		name string
		req  RunRequest
		want []string
	}{
		{
			name: "loop7 add as root",
			req:  RunRequest{Event: ev, DevNode: "/dev/loop7", Rule: "r1"},
			want: []string{
				"PATH=" + DefaultPath,
				"HOTPLUG_ACTION=add",
				"HOTPLUG_DEVPATH=/devices/virtual/block/loop7",
				"HOTPLUG_SUBSYSTEM=block",
				"HOTPLUG_DEVNAME=loop7",
				"HOTPLUG_DEVTYPE=disk",
				"HOTPLUG_SEQNUM=4242",
				"HOTPLUG_MAJOR=7",
				"HOTPLUG_PATH=/evil",
				"HOTPLUG_LD_PRELOAD=/tmp/evil.so",
				"HOTPLUG_IFS=x",
				"HOTPLUG_HOME=/root/evil",
				"HOTPLUG_RULE=r1",
				"HOTPLUG_DEVNODE=/dev/loop7",
				"HOTPLUG_ID_FS_LABEL=a b $(touch x) `id`; \n=z\xff",
				"HOTPLUG_SOURCE=kernel",
			},
		},
		{
			name: "loop7 add as a user with rule env",
			req: RunRequest{
				Event: ev, DevNode: "/dev/loop7", Rule: "r2",
				User: &Credential{Uid: 1000, Gid: 1000, Home: "/home/alice", Name: "alice"},
				Env:  []string{"LANG=C.UTF-8", "HOTPLUG_RULE=from-rule", "PATH=/opt/bin"},
			},
			want: []string{
				"PATH=/opt/bin",
				"HOME=/home/alice", "USER=alice", "LOGNAME=alice",
				"LANG=C.UTF-8",
				"HOTPLUG_ACTION=add",
				"HOTPLUG_DEVPATH=/devices/virtual/block/loop7",
				"HOTPLUG_SUBSYSTEM=block",
				"HOTPLUG_DEVNAME=loop7",
				"HOTPLUG_DEVTYPE=disk",
				"HOTPLUG_SEQNUM=4242",
				"HOTPLUG_MAJOR=7",
				"HOTPLUG_PATH=/evil",
				"HOTPLUG_LD_PRELOAD=/tmp/evil.so",
				"HOTPLUG_IFS=x",
				"HOTPLUG_HOME=/root/evil",
				"HOTPLUG_RULE=from-rule",
				"HOTPLUG_DEVNODE=/dev/loop7",
				"HOTPLUG_ID_FS_LABEL=a b $(touch x) `id`; \n=z\xff",
				"HOTPLUG_SOURCE=kernel",
			},
		},
		{
			name: "no event",
			req:  RunRequest{Rule: "r3"},
			want: []string{"PATH=" + DefaultPath, "HOTPLUG_RULE=r3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runEnviron(&tt.req, DefaultPath)
			if err != nil {
				t.Fatal(err)
			}
			names := map[string]bool{}
			for _, kv := range got {
				k, _, _ := strings.Cut(kv, "=")
				if names[k] {
					t.Errorf("duplicate variable %s", k)
				}
				names[k] = true
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tt.want))
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("environment (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunEnvironBadRuleEnv(t *testing.T) {
	defer goleak.VerifyNone(t)
	for _, kv := range []string{"NOEQUALS", "=v", "1X=v", "A B=v", "X=a\x00b"} {
		if _, err := runEnviron(&RunRequest{Env: []string{kv}}, DefaultPath); !errors.Is(err, ErrBadRequest) {
			t.Errorf("env %q: err = %v, want ErrBadRequest", kv, err)
		}
	}
}

func TestRunLookPath(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	noexec := filepath.Join(dir, "data")
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{exe, 0o755}, {noexec, 0o644}} {
		if err := os.WriteFile(f.path, []byte("#!/bin/sh\n"), f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := "relative/bin:" + dir
	tests := []struct {
		name    string
		want    string
		wantErr error
	}{
		{"tool", exe, nil},
		{exe, exe, nil},
		{"data", "", ErrCommandNotFound},
		{"subdir", "", ErrCommandNotFound},
		{noexec, "", ErrCommandNotFound},
		{"missing", "", ErrCommandNotFound},
		{"./tool", "", ErrBadRequest},
		{"bin/tool", "", ErrBadRequest},
		{"", "", ErrBadRequest},
	}
	for _, tt := range tests {
		got, err := runLookPath(tt.name, path)
		if got != tt.want || !errors.Is(err, tt.wantErr) {
			t.Errorf("runLookPath(%q) = %q, %v; want %q, %v", tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestRunBadRequest(t *testing.T) {
	defer goleak.VerifyNone(t)
	log, records := logtest.New(t)
	r := &Runner{Log: log}
	for _, argv := range [][]string{nil, {}, {""}, {"/bin/true", "a\x00b"}} {
		if _, err := r.Run(t.Context(), RunRequest{Argv: argv, Rule: "bad"}); !errors.Is(err, ErrBadRequest) {
			t.Errorf("argv %q: err = %v, want ErrBadRequest", argv, err)
		}
	}
	for _, rec := range records() {
		if rec.Level != slog.LevelError || rec.Msg != "run failed" || rec.Str("rule") != "bad" {
			t.Errorf("record %+v, want error \"run failed\" rule=bad", rec)
		}
	}
}

// TestRunOutputBudget drives the output writers directly: lines become
// records with the line as an attribute, long lines are cut, and nothing
// past the budget is logged but everything is counted.
func TestRunOutputBudget(t *testing.T) {
	defer goleak.VerifyNone(t)
	log, records := logtest.New(t)
	o := newRunOutput(t.Context(), log, "budget", 6000)
	long := strings.Repeat("x", 5000)
	for _, w := range []struct {
		s *runStream
		p string
	}{
		{o.stdout, "hello %s %d"},
		{o.stdout, " world\r\n\n"},
		{o.stderr, "oops\n"},
		{o.stdout, long + "\n"}, // cut to maxRunLine
		{o.stdout, long + "\n"}, // cut to what is left of the budget
		{o.stdout, long + "\n"}, // only counted
		{o.stderr, "tail without newline"},
	} {
		if n, err := w.s.Write([]byte(w.p)); n != len(w.p) || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	total, dropped := o.finish()

	type line struct {
		Level     slog.Level
		Stream    string
		Line      string
		Truncated bool
	}
	var got []line
	var limitSaid int
	for _, rec := range records() {
		switch rec.Msg {
		case "run output":
			if rec.Str("rule") != "budget" {
				t.Errorf("record without rule: %+v", rec)
			}
			got = append(got, line{rec.Level, rec.Str("stream"), rec.Str("line"), rec.Str("truncated") == "true"})
		case "run output limit reached, discarding the rest":
			limitSaid++
		default:
			t.Errorf("unexpected record %+v", rec)
		}
	}
	// What is left of the budget for the second long line; a logged
	// line costs its bytes ("\r" included) and its newline.
	rest := 6000 - (len("hello %s %d world\r") + 1) - 1 - len("oops\n") - (maxRunLine + 1)
	want := []line{
		{slog.LevelInfo, "stdout", "hello %s %d world", false},
		{slog.LevelInfo, "stdout", "", false},
		{slog.LevelWarn, "stderr", "oops", false},
		{slog.LevelInfo, "stdout", long[:maxRunLine], true},
		{slog.LevelInfo, "stdout", long[:rest], true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if limitSaid != 1 {
		t.Errorf("limit reached said %d times, want 1", limitSaid)
	}
	wantTotal := int64(len("hello %s %d world\r\n\noops\n") + 3*(5000+1) + len("tail without newline"))
	if total != wantTotal || total-dropped != 6000 {
		t.Errorf("total %d dropped %d (logged %d), want total %d logged 6000", total, dropped, total-dropped, wantTotal)
	}
}
