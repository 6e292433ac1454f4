package run

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/logtest"
	"github.com/hotplugd/hotplugd/internal/looptest"
)

// runHelperEnv switches the test binary into TestRunHelperProcess when it
// is the child of a Run. It reaches the child through RunRequest.Env, the
// only way in: the child's environment is built from scratch.
const runHelperEnv = "HOTPLUGD_RUN_HELPER"

// TestRunHelperProcess is not a test: it is the child process of the tests
// below (the os/exec test pattern), selected by runHelperEnv:
//
//	dump=DIR     write argv, environment and process facts into DIR
//	flood=N,M    write N bytes to stdout and M to stderr, in 100-byte lines
func TestRunHelperProcess(t *testing.T) {
	mode, arg, ok := strings.Cut(os.Getenv(runHelperEnv), "=")
	if !ok {
		return
	}
	code := 0
	switch mode {
	case "dump":
		if err := runHelperDump(arg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	case "flood":
		out, errb, _ := strings.Cut(arg, ",")
		n, _ := strconv.Atoi(out)
		m, _ := strconv.Atoi(errb)
		runHelperFlood(os.Stdout, n)
		runHelperFlood(os.Stderr, m)
	default:
		code = 2
	}
	os.Exit(code)
}

func runHelperDump(dir string) error {
	nul := func(ss []string) []byte { return []byte(strings.Join(ss, "\x00") + "\x00") }
	stdin, _ := os.Readlink("/proc/self/fd/0")
	cwd, _ := os.Getwd()
	facts := fmt.Sprintf("pid=%d pgid=%d stdin=%s cwd=%s", os.Getpid(), unix.Getpgrp(), stdin, cwd)
	return errors.Join(
		os.WriteFile(filepath.Join(dir, "argv"), nul(os.Args), 0o600),
		os.WriteFile(filepath.Join(dir, "env"), nul(os.Environ()), 0o600),
		os.WriteFile(filepath.Join(dir, "facts"), []byte(facts), 0o600),
	)
}

func runHelperFlood(f *os.File, n int) {
	line := strings.Repeat("a", 99) + "\n"
	buf := []byte(strings.Repeat(line, 10000)) // 1 MB
	for n > 0 {
		k, err := f.Write(buf[:min(n, len(buf))])
		if err != nil {
			return
		}
		n -= k
	}
}

// runNeed fails under CI (where every prerequisite must be present) and
// skips elsewhere.
func runNeed(t *testing.T, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing: %s", what)
	}
	t.Skipf("prerequisite missing: %s", what)
}

func runNeedTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		_, err := runLookPath(tool, DefaultPath)
		runNeed(t, err == nil, tool)
	}
}

// runSubreaper makes the test process the reaper of its orphans for the
// duration of the test. PID 1 of a test machine or container may not
// reap: the orphaned grandchildren of an action would then stay zombies
// of PID 1, and still count as members of their process group.
func runSubreaper(t *testing.T) {
	t.Helper()
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	t.Cleanup(func() { _ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) })
}

// runHelper returns the argv that re-executes this test binary as
// TestRunHelperProcess, followed by args.
func runHelper(t *testing.T, args ...string) []string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return append([]string{exe, "-test.run=^TestRunHelperProcess$", "--"}, args...)
}

// runProc is one line of /proc/PID/stat.
type runProc struct {
	pid, ppid, pgid int
	state           byte
	comm            string
}

func runProcs(t *testing.T) []runProc {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var ps []runProc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces and ')'.
		open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
		if open < 0 || end < 0 {
			continue
		}
		f := strings.Fields(string(b[end+1:]))
		if len(f) < 3 {
			continue
		}
		p := runProc{pid: pid, state: f[0][0], comm: string(b[open+1 : end])}
		p.ppid, _ = strconv.Atoi(f[1])
		p.pgid, _ = strconv.Atoi(f[2])
		ps = append(ps, p)
	}
	return ps
}

// runAssertGone checks that nothing is left of the group pgid and that
// the test process has no zombie children.
func runAssertGone(t *testing.T, pgid int) {
	t.Helper()
	if pgid <= 0 {
		t.Fatalf("no process group (pid %d)", pgid)
	}
	if err := unix.Kill(-pgid, 0); err != unix.ESRCH {
		var left []runProc
		for _, p := range runProcs(t) {
			if p.pgid == pgid {
				left = append(left, p)
			}
		}
		t.Errorf("kill(-%d, 0) = %v, want ESRCH; left in the group: %+v", pgid, err, left)
	}
	for _, p := range runProcs(t) {
		if p.ppid == os.Getpid() && p.state == 'Z' {
			t.Errorf("zombie child left: %+v", p)
		}
	}
}

func runNUL(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

func TestRunArgvLiteral(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker")
	log, _ := logtest.New(t)
	r := &Runner{Log: log}
	argv := runHelper(t,
		"$(touch "+marker+")", "`touch "+marker+"`", "a;touch "+marker, "x | y", "a && b",
		"'single'", `"double"`, "$HOME", "*", "a\nb", "", " spaced ", "\xff\xfe", "--flag=v",
	)
	res, err := r.Run(t.Context(), RunRequest{
		Argv: argv, Rule: "argv",
		Env:     []string{runHelperEnv + "=dump=" + dir},
		Timeout: time.Minute,
	})
	if err != nil {
		t.Fatalf("Run: %v (%+v)", err, res)
	}
	if diff := cmp.Diff(argv, runNUL(t, filepath.Join(dir, "argv"))); diff != "" {
		t.Errorf("argv seen by the child (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an argument was interpreted: %s exists (%v)", marker, err)
	}
	facts, err := os.ReadFile(filepath.Join(dir, "facts"))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("pid=%d pgid=%d stdin=/dev/null cwd=/", res.PID, res.PID)
	if string(facts) != want {
		t.Errorf("child facts %q, want %q", facts, want)
	}
	if res.ExitCode != 0 || res.Signal != "" || res.TimedOut {
		t.Errorf("result %+v, want a clean exit", res)
	}
	runAssertGone(t, res.PID)
}

func TestRunEnvironment(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	log, _ := logtest.New(t)
	r := &Runner{Log: log}
	label := "a b $(touch x) `id`; \n=z\xff"
	ev := runEvent(t,
		"ACTION=add", "DEVPATH=/devices/virtual/block/loop7", "SUBSYSTEM=block",
		"DEVNAME=loop7", "DEVTYPE=disk", "SEQNUM=4242",
		"PATH=/evil", "LD_PRELOAD=/nonexistent/evil.so", "IFS=x", "LD_LIBRARY_PATH=/evil",
		"BASH_ENV=/evil", "RULE=fake", "SYNTH_ARG_key=lower", "ID_FS_LABEL="+label,
	)
	helper := runHelperEnv + "=dump=" + dir
	res, err := r.Run(t.Context(), RunRequest{
		Argv: runHelper(t), Env: []string{helper}, Event: ev, DevNode: "/dev/loop7", Rule: "env-rule", Timeout: time.Minute,
	})
	if err != nil {
		t.Fatalf("Run: %v (%+v)", err, res)
	}
	got := runNUL(t, filepath.Join(dir, "env"))
	slices.Sort(got)
	want := []string{
		"PATH=" + DefaultPath,
		"HOTPLUG_ACTION=add",
		"HOTPLUG_DEVPATH=/devices/virtual/block/loop7",
		"HOTPLUG_SUBSYSTEM=block",
		"HOTPLUG_DEVNAME=loop7",
		"HOTPLUG_DEVTYPE=disk",
		"HOTPLUG_DEVNODE=/dev/loop7",
		"HOTPLUG_SEQNUM=4242",
		"HOTPLUG_SOURCE=kernel",
		"HOTPLUG_RULE=env-rule",
		"HOTPLUG_PATH=/evil",
		"HOTPLUG_LD_PRELOAD=/nonexistent/evil.so",
		"HOTPLUG_IFS=x",
		"HOTPLUG_LD_LIBRARY_PATH=/evil",
		"HOTPLUG_BASH_ENV=/evil",
		"HOTPLUG_ID_FS_LABEL=" + label,
		helper,
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("child environment (-want +got):\n%s", diff)
	}
	for _, kv := range got {
		name, _, _ := strings.Cut(kv, "=")
		if _, fromEvent := ev.Lookup(name); fromEvent && name != "PATH" {
			t.Errorf("child got %s, a name taken from the event", kv)
		}
	}
	runAssertGone(t, res.PID)
}

func TestRunAsUser(t *testing.T) {
	defer goleak.VerifyNone(t)
	runNeed(t, os.Geteuid() == 0, "root")
	runNeedTools(t, "cat", "env")
	nobody, err := user.Lookup("nobody")
	runNeed(t, err == nil, "user nobody")
	uid, _ := strconv.ParseUint(nobody.Uid, 10, 32)
	gid, _ := strconv.ParseUint(nobody.Gid, 10, 32)
	cred := &Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{uint32(gid)}, Home: nobody.HomeDir, Name: "nobody"}

	log, records := logtest.New(t)
	r := &Runner{Log: log}
	for _, argv := range [][]string{{"cat", "/proc/self/status"}, {"env"}} {
		res, err := r.Run(t.Context(), RunRequest{Argv: argv, Rule: "as-nobody", User: cred, Timeout: time.Minute})
		if err != nil {
			t.Fatalf("Run %q: %v", argv, err)
		}
		runAssertGone(t, res.PID)
	}
	lines := map[string]bool{}
	for _, rec := range records() {
		if rec.Msg == "run output" {
			lines[rec.Str("line")] = true
		}
	}
	u, g := nobody.Uid, nobody.Gid
	for _, want := range []string{
		"Uid:\t" + u + "\t" + u + "\t" + u + "\t" + u,
		"Gid:\t" + g + "\t" + g + "\t" + g + "\t" + g,
		"Groups:\t" + g + " ",
		"HOME=" + nobody.HomeDir, "USER=nobody", "LOGNAME=nobody", "PATH=" + DefaultPath,
	} {
		if !lines[want] && !lines[strings.TrimSuffix(want, " ")] {
			t.Errorf("the child did not print %q", want)
		}
	}
}

func TestRunCommandLookup(t *testing.T) {
	defer goleak.VerifyNone(t)
	runNeedTools(t, "true")
	log, records := logtest.New(t)
	r := &Runner{Log: log}
	res, err := r.Run(t.Context(), RunRequest{Argv: []string{"true"}, Rule: "lookup"})
	if err != nil {
		t.Fatalf("Run true: %v", err)
	}
	runAssertGone(t, res.PID)
	if _, err := r.Run(t.Context(), RunRequest{Argv: []string{"hotplugd-no-such-command"}, Rule: "lookup"}); !errors.Is(err, ErrCommandNotFound) {
		t.Errorf("missing command: err = %v, want ErrCommandNotFound", err)
	}
	var finished, failed int
	for _, rec := range records() {
		switch {
		case rec.Level == slog.LevelInfo && rec.Msg == "run finished":
			finished++
		case rec.Level == slog.LevelError && rec.Msg == "run failed":
			failed++
		}
	}
	if finished != 1 || failed != 1 {
		t.Errorf("%d finished and %d failed records, want 1 and 1", finished, failed)
	}
}

func TestRunExitStatus(t *testing.T) {
	defer goleak.VerifyNone(t)
	runNeedTools(t, "sh")
	tests := []struct {
		name     string
		script   string
		code     int
		signal   string
		level    slog.Level
		exitErr  bool
		duration time.Duration
	}{
		{"success", "exit 0", 0, "", slog.LevelInfo, false, 0},
		{"exit 3", "exit 3", 3, "", slog.LevelError, true, 0},
		{"killed by SIGUSR1", "kill -USR1 $$", -1, "SIGUSR1", slog.LevelError, true, 0},
		{"slow success", "sleep 0.2", 0, "", slog.LevelInfo, false, 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, records := logtest.New(t)
			r := &Runner{Log: log}
			res, err := r.Run(t.Context(), RunRequest{Argv: []string{"/bin/sh", "-c", tt.script}, Rule: "status", Timeout: time.Minute})
			var ee *exec.ExitError
			if errors.As(err, &ee) != tt.exitErr || (err == nil) == tt.exitErr {
				t.Errorf("err = %v, want an *exec.ExitError: %v", err, tt.exitErr)
			}
			if res.ExitCode != tt.code || res.Signal != tt.signal || res.TimedOut {
				t.Errorf("result %+v, want exit %d signal %q", res, tt.code, tt.signal)
			}
			if res.Duration < tt.duration {
				t.Errorf("duration %v, want at least %v", res.Duration, tt.duration)
			}
			recs := records()
			last := recs[len(recs)-1]
			if last.Level != tt.level || last.Str("exit_code") != strconv.Itoa(tt.code) ||
				last.Str("signal") != tt.signal || last.Str("rule") != "status" {
				t.Errorf("outcome record %+v, want level %v exit_code %d signal %q", last, tt.level, tt.code, tt.signal)
			}
			runAssertGone(t, res.PID)
		})
	}
}

func TestRunTimeoutKillsGroup(t *testing.T) {
	defer goleak.VerifyNone(t)
	runNeedTools(t, "sh", "sleep")
	runSubreaper(t)
	log, records := logtest.New(t)
	r := &Runner{Log: log, Grace: 5 * time.Second}
	res, err := r.Run(t.Context(), RunRequest{
		Argv:    []string{"/bin/sh", "-c", "sleep 1000 & sleep 1000"},
		Rule:    "slow",
		Timeout: 300 * time.Millisecond,
	})
	t.Logf("took %v", res.Duration)
	if !errors.Is(err, ErrTimeout) || !res.TimedOut {
		t.Errorf("err = %v, TimedOut %v; want ErrTimeout", err, res.TimedOut)
	}
	if res.Signal != "SIGTERM" {
		t.Errorf("signal %q, want SIGTERM (it was asked to stop, not killed)", res.Signal)
	}
	if res.Duration < 300*time.Millisecond || res.Duration >= r.Grace {
		t.Errorf("took %v, want the 300ms timeout and less than the grace period", res.Duration)
	}
	runAssertGone(t, res.PID)
	recs := records()
	if last := recs[len(recs)-1]; last.Level != slog.LevelError || last.Str("timed_out") != "true" {
		t.Errorf("outcome record %+v, want error with timed_out=true", last)
	}
}

func TestRunIgnoredTERMGetsKILL(t *testing.T) {
	defer goleak.VerifyNone(t)
	runNeedTools(t, "sh", "sleep")
	runSubreaper(t)
	log, _ := logtest.New(t)
	grace := 400 * time.Millisecond
	r := &Runner{Log: log, Grace: grace}
	res, err := r.Run(t.Context(), RunRequest{
		Argv:    []string{"/bin/sh", "-c", "trap '' TERM; sleep 1000 & sleep 1000"},
		Rule:    "stubborn",
		Timeout: 200 * time.Millisecond,
	})
	t.Logf("took %v", res.Duration)
	if !errors.Is(err, ErrTimeout) || !res.TimedOut || res.Signal != "SIGKILL" {
		t.Errorf("err = %v, result %+v; want a timeout ended by SIGKILL", err, res)
	}
	if min, max := 200*time.Millisecond+grace, 10*time.Second; res.Duration < min || res.Duration > max {
		t.Errorf("took %v, want between %v and %v", res.Duration, min, max)
	}
	runAssertGone(t, res.PID)
}

func TestRunContextCancel(t *testing.T) {
	defer goleak.VerifyNone(t)
	runNeedTools(t, "sh", "sleep")
	runSubreaper(t)
	log, _ := logtest.New(t)
	r := &Runner{Log: log, Grace: 5 * time.Second}
	ctx, cancel := context.WithCancel(t.Context())
	stop := time.AfterFunc(200*time.Millisecond, cancel)
	defer stop.Stop()
	start := time.Now()
	res, err := r.Run(ctx, RunRequest{
		Argv:    []string{"/bin/sh", "-c", "sleep 1000 & sleep 1000"},
		Rule:    "shutdown",
		Timeout: time.Hour,
	})
	took := time.Since(start)
	t.Logf("took %v", took)
	if !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) || res.TimedOut {
		t.Errorf("err = %v, TimedOut %v; want context.Canceled and no timeout", err, res.TimedOut)
	}
	if took >= r.Grace {
		t.Errorf("Run took %v after cancel at 200ms: SIGTERM to the group did not end it", took)
	}
	runAssertGone(t, res.PID)
}

// A grandchild still in the group is killed when the leader exits, which
// closes the pipes at once; one that left the group (setsid) keeps them
// open, and Run stops reading after WaitDelay (Grace).
func TestRunGrandchildHoldingOutput(t *testing.T) {
	defer goleak.VerifyNone(t)
	runNeedTools(t, "sh", "sleep", "setsid", "cut")
	runSubreaper(t)

	t.Run("in the group", func(t *testing.T) {
		log, records := logtest.New(t)
		r := &Runner{Log: log} // Grace and WaitDelay 5s
		res, err := r.Run(t.Context(), RunRequest{
			Argv: []string{"/bin/sh", "-c", "sleep 1000 & echo started"},
			Rule: "bg", Timeout: time.Minute,
		})
		t.Logf("took %v", res.Duration)
		if err != nil || res.ExitCode != 0 {
			t.Errorf("err = %v, result %+v; want success", err, res)
		}
		if res.Duration >= r.grace() {
			t.Errorf("took %v: the grandchild holding stdout was not killed with its group", res.Duration)
		}
		if !slices.ContainsFunc(records(), func(r logtest.Record) bool { return r.Str("line") == "started" }) {
			t.Error("output line missing")
		}
		runAssertGone(t, res.PID)
	})

	t.Run("escaped the group", func(t *testing.T) {
		dir := t.TempDir()
		pidfile := filepath.Join(dir, "pid")
		log, records := logtest.New(t)
		grace := 500 * time.Millisecond
		r := &Runner{Log: log, Grace: grace}
		res, err := r.Run(t.Context(), RunRequest{
			// The leader exits only once the grandchild is in a group of
			// its own (field 5 of /proc/PID/stat), else the kill at the
			// leader's exit would still reach it.
			Argv: []string{"/bin/sh", "-c", `setsid sleep 1000 & echo $! > "$PIDFILE"
				until [ "$(cut -d' ' -f5 /proc/$!/stat)" = $! ]; do sleep 0.01; done
				echo started`},
			Env:  []string{"PIDFILE=" + pidfile},
			Rule: "escape", Timeout: time.Minute,
		})
		t.Cleanup(func() {
			b, err := os.ReadFile(pidfile)
			if err != nil {
				return
			}
			if pid, _ := strconv.Atoi(strings.TrimSpace(string(b))); pid > 0 {
				_ = unix.Kill(pid, unix.SIGKILL)
				_, _ = unix.Wait4(pid, nil, 0, nil) // ours: we are the subreaper
			}
		})
		t.Logf("took %v", res.Duration)
		if err != nil || res.ExitCode != 0 {
			t.Errorf("err = %v, result %+v; want success", err, res)
		}
		// The script itself may take a while on a loaded machine; what
		// matters is that Run waited for WaitDelay and no longer than the
		// escaped sleep 1000.
		if res.Duration < grace || res.Duration > grace+10*time.Second {
			t.Errorf("took %v, want WaitDelay (%v) and a little more", res.Duration, grace)
		}
		if !slices.ContainsFunc(records(), func(r logtest.Record) bool {
			return r.Level == slog.LevelWarn && strings.Contains(r.Msg, "held open")
		}) {
			t.Error("no warning about the pipes held open")
		}
		runAssertGone(t, res.PID)
	})
}

func TestRunOutputFlood(t *testing.T) {
	defer goleak.VerifyNone(t)
	const stdout, stderr = 100_000_000, 1_000_000
	log, records := logtest.New(t)
	r := &Runner{Log: log}

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var peak uint64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			peak = max(peak, m.HeapInuse)
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	res, err := r.Run(t.Context(), RunRequest{
		Argv:    runHelper(t),
		Env:     []string{fmt.Sprintf("%s=flood=%d,%d", runHelperEnv, stdout, stderr)},
		Rule:    "flood",
		Timeout: 2 * time.Minute,
	})
	close(done)
	wg.Wait()
	t.Logf("took %v, result %+v", res.Duration, res)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.OutputBytes != stdout+stderr {
		t.Errorf("read %d bytes, want %d", res.OutputBytes, stdout+stderr)
	}
	if logged := res.OutputBytes - res.DroppedBytes; logged != DefaultMaxOutput {
		t.Errorf("logged %d bytes, want exactly the %d budget", logged, DefaultMaxOutput)
	}
	var lineBytes int64
	for _, rec := range records() {
		if rec.Msg == "run output" {
			lineBytes += int64(len(rec.Str("line"))) + 1
		}
	}
	if lineBytes > DefaultMaxOutput+1 {
		t.Errorf("%d bytes of lines in the log, over the %d budget", lineBytes, DefaultMaxOutput)
	}
	if growth := int64(peak) - int64(before.HeapInuse); growth > 32<<20 {
		t.Errorf("heap grew by %d MiB while reading 100 MB", growth>>20)
	}
	t.Logf("heap in use: %d KiB before, %d KiB peak", before.HeapInuse>>10, peak>>10)
	runAssertGone(t, res.PID)
}

func TestRunOutputLongLine(t *testing.T) {
	defer goleak.VerifyNone(t)
	runNeedTools(t, "sh", "head", "tr")
	const size = 10_000_000
	log, records := logtest.New(t)
	r := &Runner{Log: log}
	res, err := r.Run(t.Context(), RunRequest{
		Argv: []string{"/bin/sh", "-c", fmt.Sprintf(`head -c %d /dev/zero | tr '\0' a`, size)},
		Rule: "long", Timeout: time.Minute,
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	var lines []logtest.Record
	for _, rec := range records() {
		if rec.Msg == "run output" {
			lines = append(lines, rec)
		}
	}
	if len(lines) != 1 || lines[0].Str("line") != strings.Repeat("a", maxRunLine) || lines[0].Str("truncated") != "true" {
		t.Errorf("got %d output records, want one of %d bytes marked truncated", len(lines), maxRunLine)
	}
	if res.OutputBytes != size || res.DroppedBytes != size-maxRunLine {
		t.Errorf("output %d dropped %d, want %d and %d", res.OutputBytes, res.DroppedBytes, size, size-maxRunLine)
	}
	runAssertGone(t, res.PID)
}

// Device strings reach the log as attribute values, never as the message.
func TestRunLogsOutputAsAttrs(t *testing.T) {
	defer goleak.VerifyNone(t)
	runNeedTools(t, "sh")
	label := `%s %d %!x(MISSING) "quoted" \ end`
	ev := runEvent(t, "ACTION=add", "DEVPATH=/devices/virtual/block/loop3", "SUBSYSTEM=block",
		"DEVNAME=loop3", "SEQNUM=9", "ID_FS_LABEL="+label)

	var buf bytes.Buffer
	var mu sync.Mutex
	text := slog.New(slog.NewTextHandler(&runLockedWriter{w: &buf, mu: &mu}, nil))
	rec, records := logtest.New(t)
	for _, log := range []*slog.Logger{text, rec} {
		r := &Runner{Log: log}
		if _, err := r.Run(t.Context(), RunRequest{
			Argv:  []string{"/bin/sh", "-c", `printf '%s\n' "$HOTPLUG_ID_FS_LABEL"; echo "to stderr" >&2`},
			Event: ev, Rule: "label", Timeout: time.Minute,
		}); err != nil {
			t.Fatalf("Run: %v", err)
		}
	}
	var stdout, stderr bool
	for _, r := range records() {
		switch {
		case r.Msg == "run output" && r.Level == slog.LevelInfo && r.Str("stream") == "stdout" && r.Str("line") == label:
			stdout = true
		case r.Msg == "run output" && r.Level == slog.LevelWarn && r.Str("stream") == "stderr" && r.Str("line") == "to stderr":
			stderr = true
		}
		if r.Msg != "run output" && r.Msg != "run finished" {
			t.Errorf("unexpected record %+v", r)
		}
	}
	if !stdout || !stderr {
		t.Errorf("output records: stdout %v, stderr %v; want both", stdout, stderr)
	}
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	t.Logf("text handler:\n%s", out)
	if want := `level=INFO msg="run output" rule=label stream=stdout line="%s %d %!x(MISSING) \"quoted\" \\ end"`; !strings.Contains(out, want) {
		t.Errorf("text log lacks %s", want)
	}
}

type runLockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (w *runLockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

// TestRunUnkillable: an action stuck in uninterruptible sleep (a read of
// a stalled device) does not die of SIGKILL. Run gives up on it after the
// grace periods, counts it as left behind, and returns, so the worker is
// free; once the device answers the process is reaped and uncounted.
func TestRunUnkillable(t *testing.T) {
	dev := looptest.Stall(t)
	log, _ := logtest.New(t)
	r := &Runner{Log: log, Grace: 200 * time.Millisecond}
	start := time.Now()
	res, err := r.Run(context.Background(), RunRequest{Argv: dev.ReadArgv(), Rule: "stuck", Timeout: 300 * time.Millisecond})
	took := time.Since(start)
	if !errors.Is(err, ErrUnkillable) {
		t.Fatalf("Run: %v (%+v), want %v", err, res, ErrUnkillable)
	}
	if took > 5*time.Second {
		t.Errorf("Run returned after %v", took)
	}
	if r.Leaked() != 1 {
		t.Errorf("Leaked() = %d, want 1", r.Leaked())
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", res.PID)); !strings.Contains(string(b), ") D ") {
		t.Errorf("the process left behind is not in uninterruptible sleep: %q", b)
	}
	dev.Resume()
	deadline := time.Now().Add(10 * time.Second)
	for r.Leaked() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the process left behind was never reaped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := unix.Kill(res.PID, 0); !errors.Is(err, unix.ESRCH) {
		t.Errorf("pid %d still exists (a zombie?): %v", res.PID, err)
	}
}

// TestRunStdin: RunRequest.Stdin is the child's fd 0, the very file
// handed over, not something reopened by its path.
func TestRunStdin(t *testing.T) {
	defer goleak.VerifyNone(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(key)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Rename(key, key+".moved"); err != nil {
		t.Fatal(err)
	}
	log, _ := logtest.New(t)
	res, err := (&Runner{Log: log}).Run(t.Context(), RunRequest{
		Argv: runHelper(t), Rule: "stdin", Stdin: f,
		Env: []string{runHelperEnv + "=dump=" + dir}, Timeout: time.Minute,
	})
	if err != nil {
		t.Fatalf("Run: %v (%+v)", err, res)
	}
	facts, err := os.ReadFile(filepath.Join(dir, "facts"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "stdin=" + key + ".moved "; !strings.Contains(string(facts), want) {
		t.Errorf("child facts %q, want %q", facts, want)
	}
}
