package scope

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary be the waiting re-execution, as
// hotplugd's main is.
func TestMain(m *testing.M) {
	RunShim()
	os.Exit(m.Run())
}

// TestStartGated: the process is moved while it is still the waiting
// re-execution, and only then runs the real program, with its own
// arguments and environment.
func TestStartGated(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	sh, err := filepath.EvalSymlinks("/bin/sh")
	if err != nil {
		t.Fatal(err)
	}
	var sawShim bool
	var gotUnit, gotSlice string
	s := &Starter{log: slog.New(slog.DiscardHandler), move: func(_ context.Context, pid int, unit, slice, _ string) error {
		time.Sleep(100 * time.Millisecond) // long enough to be past the gate, were there none
		exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
		sawShim = err == nil && exe != sh
		gotUnit, gotSlice = unit, slice
		return nil
	}}
	cmd := exec.Command("/bin/sh", "-c", `printf '%s %s' "$(tr '\0' ' ' < /proc/$$/cmdline)" "$X" > "$1"`, "sh", out)
	cmd.Args[0] = "helper-name"
	cmd.Env = []string{"X=kept"}
	if err := s.Start(cmd, "hotplugd-test", "system.slice", "a test"); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if !sawShim {
		t.Error("the process was past the gate when it was moved")
	}
	if want := "hotplugd-test-" + strconv.Itoa(cmd.Process.Pid) + ".scope"; gotUnit != want || gotSlice != "system.slice" {
		t.Errorf("scope %s in %s, want %s in system.slice", gotUnit, gotSlice, want)
	}
	if b, _ := os.ReadFile(out); !strings.HasPrefix(string(b), "helper-name -c ") || !strings.HasSuffix(string(b), " kept") {
		t.Errorf("the program ran with %q, want its own argv[0] and environment", b)
	}
}

// TestStartWithoutScope: when systemd cannot make the scope the program
// still runs; without systemd it is started directly.
func TestStartWithoutScope(t *testing.T) {
	s := &Starter{log: slog.New(slog.DiscardHandler), move: func(context.Context, int, string, string, string) error {
		return errors.New("no systemd")
	}}
	for _, st := range []*Starter{s, {log: slog.New(slog.DiscardHandler)}, nil} {
		cmd := exec.Command("/bin/true")
		if err := st.Start(cmd, "hotplugd-test", "", "x"); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("the program did not run: %v", err)
		}
	}
}

// TestShimNeedsArgv0: the binary is the waiting re-execution only when
// started as one: the test binary run with the same arguments but its own
// argv[0] runs its tests instead.
func TestShimNeedsArgv0(t *testing.T) {
	if os.Getenv("HOTPLUGD_TEST_SHIM_CHILD") != "" {
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestShimNeedsArgv0$", "/bin/false")
	cmd.Env = append(os.Environ(), "HOTPLUGD_TEST_SHIM_CHILD=1")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "PASS") {
		t.Errorf("%v: %s", err, out)
	}
}
