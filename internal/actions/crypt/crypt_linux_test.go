package crypt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/actions/run"
	"github.com/hotplugd/hotplugd/internal/keyfile"
	"github.com/hotplugd/hotplugd/internal/logtest"
	"github.com/hotplugd/hotplugd/internal/looptest"
)

// secret is the test key: no log line, argv or environment may hold it.
const secret = "s3cret-key-material-0123456789"

// fake is a cryptsetup that records its argv, environment and stdin in
// dir, then exits with the status in dir/status (0 without one).
func fake(t *testing.T) (prog, dir string) {
	t.Helper()
	dir = t.TempDir()
	prog = filepath.Join(dir, "cryptsetup")
	script := fmt.Sprintf(`#!/bin/sh
d=%s
printf '%%s\n' "$@" > "$d/argv"
env > "$d/env"
cat > "$d/stdin"
[ -f "$d/sleep" ] && sleep "$(cat "$d/sleep")"
exit "$(cat "$d/status" 2>/dev/null || echo 0)"
`, dir)
	if err := os.WriteFile(prog, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return prog, dir
}

func key(t *testing.T) string {
	t.Helper()
	looptest.Need(t, os.Geteuid() == 0, "root (a keyfile must be root's)")
	p := filepath.Join(t.TempDir(), "backup.key")
	if err := os.WriteFile(p, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func read(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestOpen(t *testing.T) {
	prog, dir := fake(t)
	log, buf := logtest.New(t)
	c := &Cryptsetup{Path: prog, Runner: &run.Runner{Log: log}}
	req := OpenRequest{Device: "/dev/sdb1", Name: "luks-1234", Keyfile: key(t), ReadOnly: true, Rule: "r", Timeout: time.Minute}
	if err := c.Open(t.Context(), req); err != nil {
		t.Fatal(err)
	}
	want := []string{"open", "--type", "luks", "--key-file", "-", "--readonly", "--", "/dev/sdb1", "luks-1234"}
	if diff := cmp.Diff(want, strings.Fields(read(t, dir, "argv"))); diff != "" {
		t.Errorf("argv (-want +got):\n%s", diff)
	}
	if got := read(t, dir, "stdin"); got != secret {
		t.Errorf("stdin %q, want the key", got)
	}
	env := read(t, dir, "env")
	if strings.Contains(env, secret) || strings.Contains(env, req.Keyfile) {
		t.Errorf("the environment holds the key or its path:\n%s", env)
	}
	for _, r := range buf() {
		if strings.Contains(fmt.Sprint(r), secret) {
			t.Errorf("a log record holds the key: %v", r)
		}
	}
	if got := c.OpenArgv(OpenRequest{Device: "/dev/sdc", Name: "x"}); !cmp.Equal(got,
		[]string{prog, "open", "--type", "luks", "--key-file", "-", "--", "/dev/sdc", "x"}) {
		t.Errorf("OpenArgv without read_only: %q", got)
	}
}

// TestOpenErrors: a refused keyfile runs nothing; cryptsetup's exit
// codes become errors that say what went wrong.
func TestOpenErrors(t *testing.T) {
	prog, dir := fake(t)
	log, _ := logtest.New(t)
	c := &Cryptsetup{Path: prog, Runner: &run.Runner{Log: log, Grace: 100 * time.Millisecond}}
	k := key(t)
	req := OpenRequest{Device: "/dev/sdb1", Name: "luks-1234", Keyfile: k, Timeout: time.Minute}
	for status, want := range map[string]error{"2": ErrWrongKey, "4": ErrWrongDevice, "5": ErrBusy, "1": ErrFailed} {
		if err := os.WriteFile(filepath.Join(dir, "status"), []byte(status), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := c.Open(t.Context(), req); !errors.Is(err, want) {
			t.Errorf("exit %s: %v, want %v", status, err, want)
		}
	}
	os.Remove(filepath.Join(dir, "status"))
	if err := os.Chmod(k, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, "argv"))
	if err := c.Open(t.Context(), req); !errors.Is(err, keyfile.ErrUnsafe) {
		t.Errorf("a keyfile others may read: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "argv")); err == nil {
		t.Error("cryptsetup ran with a keyfile others may read")
	}
	if err := os.Chmod(k, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sleep"), []byte("60"), 0o600); err != nil {
		t.Fatal(err)
	}
	req.Timeout = 200 * time.Millisecond
	start := time.Now()
	if err := c.Open(t.Context(), req); !errors.Is(err, run.ErrTimeout) || time.Since(start) > 10*time.Second {
		t.Errorf("a hung cryptsetup: %v after %v, want a timeout", err, time.Since(start))
	}
	missing := &Cryptsetup{Path: filepath.Join(dir, "none"), Runner: &run.Runner{Log: log}}
	if err := missing.Open(t.Context(), req); !errors.Is(err, ErrNotFound) {
		t.Errorf("no cryptsetup: %v", err)
	}
}

func TestClose(t *testing.T) {
	prog, dir := fake(t)
	log, _ := logtest.New(t)
	c := &Cryptsetup{Path: prog, Runner: &run.Runner{Log: log}}
	for _, deferred := range []bool{false, true} {
		if err := c.Close(t.Context(), CloseRequest{Name: "luks-1234", Deferred: deferred, Timeout: time.Minute}); err != nil {
			t.Fatal(err)
		}
		want := "close\n--\nluks-1234\n"
		if deferred {
			want = "close\n--deferred\n--\nluks-1234\n"
		}
		if got := read(t, dir, "argv"); got != want {
			t.Errorf("deferred %v: argv %q, want %q", deferred, got, want)
		}
		if got := read(t, dir, "stdin"); got != "" {
			t.Errorf("close got stdin %q", got)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "status"), []byte("5"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(t.Context(), CloseRequest{Name: "luks-1234"}); !errors.Is(err, ErrBusy) {
		t.Errorf("a mapping in use: %v, want ErrBusy", err)
	}
}
