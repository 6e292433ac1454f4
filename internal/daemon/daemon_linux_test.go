package daemon

// End-to-end tests of `hotplugd run`: the built binary, a NOTIFY_SOCKET
// the test reads, real uevents from the kernel (writes to
// /sys/class/net/*/uevent), real processes. They need root; in CI (CI=true)
// a missing prerequisite fails them instead of skipping them.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

// The generous bounds of waiting: none of them is a speed requirement.
const (
	waitReady  = 15 * time.Second
	waitAction = 20 * time.Second
	waitExit   = 30 * time.Second
)

func TestBinaryReadyThenRunAction(t *testing.T) {
	bin := needBinary(t)
	dir := t.TempDir()
	tag, out := newTag(), filepath.Join(dir, "out")
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeRules(t, rulesPath, "", rule{
		name:  "lo-change",
		match: loMatch(tag),
		argv:  []string{"/bin/sh", "-c", `printf '%s %s %s\n' "$HOTPLUG_SYNTH_UUID" "$HOTPLUG_RULE" "$HOTPLUG_ACTION" >> "$0"`, out},
	})
	d := startDaemon(t, bin, rulesPath)
	m := d.ready(t)
	if !strings.Contains(m.vars["STATUS"], "1 rules") {
		t.Errorf("STATUS=%q with READY=1, want it to say \"1 rules\"", m.vars["STATUS"])
	}

	uuid := newUUID()
	trigger(t, loUevent, uuid, tag)
	got := waitFile(t, out, waitAction, func(s string) bool { return strings.HasSuffix(s, "\n") })
	if want := uuid + " lo-change change\n"; got != want {
		t.Errorf("the action wrote %q, want %q", got, want)
	}

	// An event of lo without the tag matches nothing: the file is left as
	// it is once a tagged event after it has been handled.
	trigger(t, loUevent, newUUID(), "other"+tag)
	uuid2 := newUUID()
	trigger(t, loUevent, uuid2, tag)
	got = waitFile(t, out, waitAction, func(s string) bool { return strings.Count(s, "\n") >= 2 })
	if want := uuid + " lo-change change\n" + uuid2 + " lo-change change\n"; got != want {
		t.Errorf("after an untagged and a tagged event the file is %q, want %q", got, want)
	}

	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, waitExit); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}

func TestBinaryReload(t *testing.T) {
	bin := needBinary(t)
	dir := t.TempDir()
	tag, out := newTag(), filepath.Join(dir, "out")
	rulesPath := filepath.Join(dir, "rules.yaml")
	// writeTo appends "NAME UUID" to out.
	writeTo := func(name string) []string {
		return []string{"/bin/sh", "-c", `echo "$HOTPLUG_RULE $HOTPLUG_SYNTH_UUID" >> "$0"`, out}
	}
	writeRules(t, rulesPath, "", rule{name: "old", match: loMatch(tag), argv: writeTo("old")})
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)

	// fire sends a tagged change of lo and waits for the line it makes.
	fire := func(rule string) string {
		t.Helper()
		uuid := newUUID()
		trigger(t, loUevent, uuid, tag)
		waitFile(t, out, waitAction, func(s string) bool { return strings.Contains(s, rule+" "+uuid+"\n") })
		return uuid
	}
	fire("old")

	// A broken file: RELOADING=1 with MONOTONIC_USEC, then READY=1 whose
	// STATUS names the error; the old rule stays in force.
	broken := "rules:\n  - name: new\n    match: action == \n    actions: []\n"
	if err := os.WriteFile(rulesPath, []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	before := monotonicUsec(t)
	d.signal(t, syscall.SIGHUP)
	m := d.notify.expect(t, "RELOADING", waitReady)
	after := monotonicUsec(t)
	if m.vars["RELOADING"] != "1" {
		t.Errorf("RELOADING=%q, want 1", m.vars["RELOADING"])
	}
	usec, err := strconv.ParseInt(m.vars["MONOTONIC_USEC"], 10, 64)
	if err != nil || usec < before || usec > after {
		t.Errorf("RELOADING=1 came with MONOTONIC_USEC=%q, want CLOCK_MONOTONIC in µs between %d and %d (message %q)",
			m.vars["MONOTONIC_USEC"], before, after, m.raw)
	}
	m = d.ready(t)
	status := m.vars["STATUS"]
	if !strings.Contains(status, "reload failed") || !strings.Contains(status, rulesPath+":3:") {
		t.Errorf("STATUS=%q after a broken reload, want it to say the reload failed at %s:3:COL", status, rulesPath)
	}
	d.waitLog(t, regexp.MustCompile(`level=ERROR msg="reload failed; the previous rules stay in force"`), waitAction)
	oldUUID := fire("old")

	// A good file: the new rule fires, the old one no longer does.
	writeRules(t, rulesPath, "", rule{name: "new", match: loMatch(tag), argv: writeTo("new")})
	d.signal(t, syscall.SIGHUP)
	d.notify.expect(t, "RELOADING", waitReady)
	m = d.ready(t)
	if status := m.vars["STATUS"]; strings.Contains(status, "error") || !strings.Contains(status, "1 rules") {
		t.Errorf("STATUS=%q after a good reload, want 1 rules and no error", status)
	}
	newUUID := fire("new")
	fire("new") // handled after newUUID's event: lo's events are in order
	b, _ := os.ReadFile(out)
	if s := string(b); strings.Contains(s, "old "+newUUID) {
		t.Errorf("the old rule still fired after a good reload:\n%s", s)
	}
	if s := string(b); strings.Contains(s, "new "+oldUUID) {
		t.Errorf("the new rule fired while the broken file was refused:\n%s", s)
	}

	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, waitExit); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

func monotonicUsec(t *testing.T) int64 {
	t.Helper()
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

func TestBinaryWatchdog(t *testing.T) {
	bin := needBinary(t)
	const window = 1200 * time.Millisecond
	count := func(d *daemonProc, from time.Time) int {
		n := 0
		for _, m := range d.notify.all() {
			if m.vars["WATCHDOG"] == "1" && !m.at.Before(from) && m.at.Before(from.Add(window)) {
				n++
			}
		}
		return n
	}
	t.Run("pings at half the period", func(t *testing.T) {
		dir := t.TempDir()
		rulesPath := filepath.Join(dir, "rules.yaml")
		writeRules(t, rulesPath, "")
		d := startDaemon(t, bin, rulesPath, "WATCHDOG_USEC=400000")
		from := d.ready(t).at
		time.Sleep(window + 100*time.Millisecond)
		// 200 ms apart: 6 in the window. The bounds are loose but tell
		// half the period from the whole (3) or a quarter (12).
		if n := count(d, from); n < 4 || n > 9 {
			t.Errorf("%d WATCHDOG=1 in %v with WATCHDOG_USEC=400000, want about 6 (4 to 9)", n, window)
		}
	})
	t.Run("WATCHDOG_PID names this process", func(t *testing.T) {
		// go-systemd checks WATCHDOG_PID against getpid(); the child's pid
		// is not known before it starts, so the variable is only checked
		// the other way: meant for another process, no pings.
		dir := t.TempDir()
		rulesPath := filepath.Join(dir, "rules.yaml")
		writeRules(t, rulesPath, "")
		d := startDaemon(t, bin, rulesPath, "WATCHDOG_USEC=400000", fmt.Sprintf("WATCHDOG_PID=%d", os.Getpid()))
		from := d.ready(t).at
		time.Sleep(window)
		if n := count(d, from); n != 0 {
			t.Errorf("%d WATCHDOG=1 although WATCHDOG_PID names another process, want none", n)
		}
	})
}

func TestBinaryStop(t *testing.T) {
	bin := needBinary(t)
	t.Run("running action finishes", func(t *testing.T) {
		dir := t.TempDir()
		tag := newTag()
		started, finished := filepath.Join(dir, "started"), filepath.Join(dir, "finished")
		rulesPath := filepath.Join(dir, "rules.yaml")
		writeRules(t, rulesPath, "", rule{
			name: "slow", match: loMatch(tag), timeout: "1m",
			argv: []string{"/bin/sh", "-c", `echo started > "$0"; sleep 1; echo finished > "$1"`, started, finished},
		})
		d := startDaemon(t, bin, rulesPath)
		d.ready(t)
		trigger(t, loUevent, newUUID(), tag)
		waitFile(t, started, waitAction, func(string) bool { return true })
		d.signal(t, syscall.SIGTERM)
		d.notify.expect(t, "STOPPING", waitExit)
		if code := d.wait(t, waitExit); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
		if b, err := os.ReadFile(finished); err != nil || string(b) != "finished\n" {
			t.Errorf("the action did not finish before the daemon exited: %v %q", err, b)
		}
		if n := d.logCount(regexp.MustCompile(`stop deadline passed`)); n != 0 {
			t.Errorf("the stop deadline passed although the action took 1s")
		}
	})
	t.Run("running action is killed at the deadline", func(t *testing.T) {
		// The daemon's stop deadline is 10s (Config.StopTimeout; not a
		// flag or setting), so this takes that long.
		dir := t.TempDir()
		tag, marker := newTag(), fmt.Sprintf("1000.%d", os.Getpid())
		killMarked(t, "sleep "+marker)
		rulesPath := filepath.Join(dir, "rules.yaml")
		writeRules(t, rulesPath, "", rule{name: "sleep", match: loMatch(tag), timeout: "1h", argv: []string{"/usr/bin/sleep", marker}})
		d := startDaemon(t, bin, rulesPath)
		d.ready(t)
		trigger(t, loUevent, newUUID(), tag)
		var action procInfo
		eventually(t, waitAction, func() bool {
			for _, p := range allProcs(t) {
				if p.cmdline == "/usr/bin/sleep "+marker && p.ppid == d.pid() {
					action = p
					return true
				}
			}
			return false
		}, "the action `sleep %s` to start", marker)
		if action.pgid != action.pid {
			t.Errorf("the action runs in process group %d, want one of its own (%d)", action.pgid, action.pid)
		}

		d.signal(t, syscall.SIGTERM)
		m := d.notify.expect(t, "STOPPING", waitExit)
		if m.vars["STOPPING"] != "1" {
			t.Errorf("STOPPING=%q, want 1", m.vars["STOPPING"])
		}
		// Intake stops at once, the action is given its deadline.
		if p, ok := readProc(action.pid); !ok || p.state == 'Z' {
			t.Errorf("the action was gone right after STOPPING=1; it should be let run until the deadline")
		}
		if code := d.wait(t, waitExit); code != 0 {
			t.Errorf("exit code %d, want 0", code)
		}
		d.waitLog(t, regexp.MustCompile(`stop deadline passed: killing running actions`), 0)
		for _, p := range allProcs(t) {
			if p.pgid == action.pgid || p.pid == action.pid {
				t.Errorf("process %d (%s, state %c) of the action's group %d is left after the daemon exited",
					p.pid, p.comm, p.state, action.pgid)
			}
		}
	})
}

func TestBinaryActionTimeoutKillsGroup(t *testing.T) {
	bin := needBinary(t)
	// An init that reaps orphans: this machine's PID 1 may not, and an
	// action's orphaned grandchild is re-parented to the nearest
	// subreaper, which this test then is. Left to a PID 1 that does not
	// reap it would stay a zombie, and a member of its process group,
	// forever.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("PR_SET_CHILD_SUBREAPER: %v", err)
	}
	t.Cleanup(func() {
		_ = unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
		reapAdopted(t)
	})

	for _, tc := range []struct {
		name, script string
	}{
		// The leader dies of SIGTERM; the grandchild ignores it and is
		// killed with the rest of the group when the leader exits.
		{"grandchild ignores SIGTERM", `(trap '' TERM; exec sleep "$0") & echo $! > "$1"; echo $$ > "$2"; wait`},
		// Neither does: SIGKILL after the grace period (5s).
		{"group ignores SIGTERM", `trap '' TERM; sleep "$0" & echo $! > "$1"; echo $$ > "$2"; while :; do wait; done`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tag := newTag()
			marker := fmt.Sprintf("1000.%d%d", os.Getpid(), time.Now().UnixNano()%1e6)
			killMarked(t, marker)
			gcFile, leaderFile := filepath.Join(dir, "grandchild"), filepath.Join(dir, "leader")
			afterTag, afterFile := newTag(), filepath.Join(dir, "after")
			rulesPath := filepath.Join(dir, "rules.yaml")
			writeRules(t, rulesPath, "",
				rule{
					name: "hang", match: loMatch(tag), timeout: "1s",
					argv: []string{"/bin/sh", "-c", tc.script, marker, gcFile, leaderFile},
				},
				rule{name: "after", match: loMatch(afterTag), argv: []string{"/bin/sh", "-c", `echo "$HOTPLUG_SYNTH_UUID" > "$0"`, afterFile}},
			)
			d := startDaemon(t, bin, rulesPath)
			d.ready(t)
			trigger(t, loUevent, newUUID(), tag)
			pidOf := func(path string) int {
				s := waitFile(t, path, waitAction, func(s string) bool { return strings.HasSuffix(s, "\n") })
				pid, err := strconv.Atoi(strings.TrimSpace(s))
				if err != nil {
					t.Fatalf("%s: %q", path, s)
				}
				return pid
			}
			gc, leader := pidOf(gcFile), pidOf(leaderFile)
			// $! is written as soon as the shell forks: wait for the exec.
			eventually(t, waitAction, func() bool {
				p, ok := readProc(gc)
				return !ok || strings.Contains(p.cmdline, marker)
			}, "grandchild %d to exec sleep", gc)
			if p, ok := readProc(gc); !ok || !strings.Contains(p.cmdline, marker) || p.pgid != leader {
				t.Fatalf("grandchild %d: %+v, want `sleep %s` in group %d", gc, p, marker, leader)
			}

			d.waitLog(t, regexp.MustCompile(`msg="run failed" rule=hang .*timed_out=true`), waitAction)
			// Both are dead: the leader reaped by the daemon, the
			// grandchild by us (it was orphaned) or gone already.
			eventually(t, waitAction, func() bool {
				if _, ok := readProc(leader); ok {
					return false
				}
				p, ok := readProc(gc)
				if ok && p.state == 'Z' && p.ppid == os.Getpid() {
					var ws unix.WaitStatus
					_, _ = unix.Wait4(gc, &ws, unix.WNOHANG, nil)
					_, ok = readProc(gc)
				}
				return !ok
			}, "the leader %d and the grandchild %d to be gone", leader, gc)
			for _, p := range allProcs(t) {
				if strings.Contains(p.cmdline, marker) || p.pgid == leader {
					t.Errorf("process %d (%q, state %c) of the timed-out action is left", p.pid, p.cmdline, p.state)
				}
			}
			// No zombie children of the daemon (polled: one may exist for
			// the moment between an exit and its wait).
			eventually(t, waitAction, func() bool { return len(zombieChildren(t, d.pid())) == 0 },
				"no zombie children of the daemon (now %v)", zombieChildren(t, d.pid()))

			// The daemon still handles events, and stops cleanly.
			uuid := newUUID()
			trigger(t, loUevent, uuid, afterTag)
			waitFile(t, afterFile, waitAction, func(s string) bool { return s == uuid+"\n" })
			d.signal(t, syscall.SIGTERM)
			if code := d.wait(t, waitExit); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
		})
	}
}

// reapAdopted reaps the zombies of processes this test process adopted
// as a subreaper: orphans of the daemon's actions. (The daemons are
// reaped by their exec.Cmd, and are gone by the time this runs.)
func reapAdopted(t *testing.T) {
	for _, p := range allProcs(t) {
		if p.ppid == os.Getpid() && p.state == 'Z' {
			_, _ = unix.Wait4(p.pid, nil, unix.WNOHANG, nil)
		}
	}
}

func zombieChildren(t tb, ppid int) []int {
	var zs []int
	for _, p := range allProcs(t) {
		if p.ppid == ppid && p.state == 'Z' {
			zs = append(zs, p.pid)
		}
	}
	return zs
}

func TestBinaryHugeOutputStaysBounded(t *testing.T) {
	bin := needBinary(t)
	dir := t.TempDir()
	bigTag, smallTag, out := newTag(), newTag(), filepath.Join(dir, "out")
	const size = 100_000_000
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeRules(t, rulesPath, "",
		rule{
			// Half of it one endless line, half many short ones.
			name: "flood", match: loMatch(bigTag), timeout: "2m",
			argv: []string{"/bin/sh", "-c", `head -c 50000000 /dev/zero; yes 0123456789abcdef | head -c 50000000`},
		},
		rule{name: "after", match: loMatch(smallTag), argv: []string{"/bin/sh", "-c", `echo "$HOTPLUG_SYNTH_UUID" > "$0"`, out}},
	)
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)
	trigger(t, loUevent, newUUID(), bigTag)
	line := d.waitLog(t, regexp.MustCompile(`msg="run (finished|failed)" rule=flood `), time.Minute)
	if !strings.Contains(line, "run finished") || !strings.Contains(line, fmt.Sprintf("output_bytes=%d ", size)) {
		t.Errorf("the flood ended with %q, want run finished with output_bytes=%d", line, size)
	}
	hwm, err := memStatus(d.pid(), "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("VmHWM %.1f MiB after %d bytes of output", float64(hwm)/(1<<20), size)
	if hwm > 64<<20 {
		t.Errorf("VmHWM %d MiB after an action wrote %d MB, want at most 64 MiB", hwm>>20, size/1_000_000)
	}
	if _, logged := d.log.snapshot(); logged > 1<<20 {
		t.Errorf("the daemon logged %d bytes for an action's output; it is bounded to 64 KiB", logged)
	}

	uuid := newUUID()
	trigger(t, loUevent, uuid, smallTag)
	if got := waitFile(t, out, waitAction, func(s string) bool { return strings.HasSuffix(s, "\n") }); got != uuid+"\n" {
		t.Errorf("the later rule wrote %q, want %q", got, uuid+"\n")
	}
	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, waitExit); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

func TestBinaryOrderWhileAnotherDeviceIsSlow(t *testing.T) {
	bin := needBinary(t)
	// Another device, unrelated to lo, that every machine has.
	const slowDev = "/sys/class/mem/null/uevent"
	need(t, unix.Access(slowDev, unix.W_OK) == nil, "a writable %s", slowDev)
	dir := t.TempDir()
	tag := newTag()
	seqFile := filepath.Join(dir, "seq")
	started, release, finished := filepath.Join(dir, "started"), filepath.Join(dir, "release"), filepath.Join(dir, "finished")
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeRules(t, rulesPath, "workers: 8",
		rule{
			// The slow action runs until the test releases it (at most a
			// minute), so "while it runs" does not depend on how fast this
			// machine is.
			name:    "slow",
			match:   fmt.Sprintf(`action == "change" && devpath == "/devices/virtual/mem/null" && env.SYNTH_ARG_T == %q`, tag),
			timeout: "2m",
			argv: []string{"/bin/sh", "-c", `echo "$HOTPLUG_SEQNUM" > "$0"; i=0
				while [ ! -e "$1" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
				echo done > "$2"`, started, release, finished},
		},
		rule{name: "seq", match: loMatch(tag), argv: []string{"/bin/sh", "-c", `echo "$HOTPLUG_SEQNUM" >> "$0"`, seqFile}},
	)
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)
	killMarked(t, started)

	trigger(t, slowDev, newUUID(), tag)
	s := waitFile(t, started, waitAction, func(s string) bool { return strings.HasSuffix(s, "\n") })
	slowSeq, _ := strconv.ParseUint(strings.TrimSpace(s), 10, 64)

	const n = 1000
	uuid := newUUID()
	begin := time.Now()
	for range n {
		trigger(t, loUevent, uuid, tag)
	}
	got := waitFile(t, seqFile, time.Minute, func(s string) bool { return strings.Count(s, "\n") >= n })
	elapsed := time.Since(begin)
	if _, err := os.Stat(finished); err == nil {
		t.Fatalf("the slow action of null finished before the test released it")
	}
	t.Logf("%d events of lo handled in %v while the action of null (SEQNUM %d) ran", n, elapsed, slowSeq)

	lines := strings.Fields(got)
	if len(lines) != n {
		t.Errorf("%d SEQNUMs, want %d", len(lines), n)
	}
	prev := slowSeq
	for i, l := range lines {
		seq, err := strconv.ParseUint(l, 10, 64)
		if err != nil || seq <= prev {
			t.Fatalf("line %d: SEQNUM %q after %d: not in increasing order\n%s", i, l, prev, trunc(got))
		}
		prev = seq
	}

	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitFile(t, finished, waitAction, func(s string) bool { return s == "done\n" })
	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, waitExit); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

func TestBinaryColdplug(t *testing.T) {
	bin := needBinary(t)
	for _, coldplug := range []bool{true, false} {
		t.Run(fmt.Sprintf("coldplug %v", coldplug), func(t *testing.T) {
			dir := t.TempDir()
			tag, out, sentinel := newTag(), filepath.Join(dir, "out"), filepath.Join(dir, "sentinel")
			rulesPath := filepath.Join(dir, "rules.yaml")
			writeRules(t, rulesPath, fmt.Sprintf("coldplug: %v", coldplug),
				rule{
					name: "net-coldplug", match: `subsystem == "net" && source == "coldplug"`,
					argv: []string{"/bin/sh", "-c", `echo "$HOTPLUG_INTERFACE $HOTPLUG_SOURCE $HOTPLUG_ACTION $HOTPLUG_DEVPATH" >> "$0"`, out},
				},
				rule{name: "sentinel", match: loMatch(tag), argv: []string{"/bin/sh", "-c", `echo "$HOTPLUG_SYNTH_UUID" > "$0"`, sentinel}},
			)
			d := startDaemon(t, bin, rulesPath)
			d.ready(t)
			if coldplug {
				waitFile(t, out, waitAction, func(s string) bool {
					return slices.Contains(strings.Split(s, "\n"), "lo coldplug add /devices/virtual/net/lo")
				})
				d.waitLog(t, regexp.MustCompile(`msg="coldplug: existing devices queued" devices=[1-9]`), waitAction)
			} else {
				// Once a live event of lo has been handled, nothing came
				// from a coldplug.
				uuid := newUUID()
				trigger(t, loUevent, uuid, tag)
				waitFile(t, sentinel, waitAction, func(s string) bool { return s == uuid+"\n" })
				if b, err := os.ReadFile(out); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("coldplug: false, but the coldplug rule wrote %q", b)
				}
			}
			d.signal(t, syscall.SIGTERM)
			if code := d.wait(t, waitExit); code != 0 {
				t.Errorf("exit code %d, want 0", code)
			}
		})
	}
}

// TestBinaryRefusesToStart: a rules file others could change, or one that
// does not compile, stops the daemon before READY=1, with exit status 1
// and a message that says why.
func TestBinaryRefusesToStart(t *testing.T) {
	bin := needBinary(t)
	good := func(t *testing.T, path string) {
		writeRules(t, path, "", rule{name: "x", match: `action == "add"`, argv: []string{"/bin/true"}})
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir, path string)
		want  func(path string) *regexp.Regexp
	}{
		{"group-writable file", func(t *testing.T, _, path string) {
			good(t, path)
			chmod(t, path, 0o620)
		}, func(path string) *regexp.Regexp {
			return regexp.MustCompile(`^hotplugd: refusing ` + regexp.QuoteMeta(path) + `: .*writable by its group`)
		}},
		{"other-writable file", func(t *testing.T, _, path string) {
			good(t, path)
			chmod(t, path, 0o602)
		}, func(path string) *regexp.Regexp {
			return regexp.MustCompile(`^hotplugd: refusing ` + regexp.QuoteMeta(path) + `: .*writable by .*others`)
		}},
		{"other-writable directory", func(t *testing.T, dir, path string) {
			good(t, path)
			chmod(t, dir, 0o707)
		}, func(path string) *regexp.Regexp {
			return regexp.MustCompile(`^hotplugd: refusing ` + regexp.QuoteMeta(path) + `: .*directory ` + regexp.QuoteMeta(filepath.Dir(path)) + ` is writable`)
		}},
		{"broken match", func(t *testing.T, _, path string) {
			writeFile(t, path, "rules:\n  - name: x\n    match: action == \"add\" &&& true\n    actions:\n      - run: {argv: [/bin/true]}\n")
		}, func(path string) *regexp.Regexp {
			return regexp.MustCompile(`^hotplugd: ` + regexp.QuoteMeta(path) + `:3:\d+: rule "x": match: `)
		}},
		{"unknown key", func(t *testing.T, _, path string) {
			writeFile(t, path, "rules:\n  - name: x\n    match: 'true'\n    actions: []\n    bogus: 1\n")
		}, func(path string) *regexp.Regexp {
			return regexp.MustCompile(`^hotplugd: ` + regexp.QuoteMeta(path) + `:5:\d+: .*bogus`)
		}},
		{"missing file", func(*testing.T, string, string) {}, func(path string) *regexp.Regexp {
			return regexp.MustCompile(`^hotplugd: .*` + regexp.QuoteMeta(path))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "etc")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "rules.yaml")
			tc.setup(t, dir, path)
			d := startDaemon(t, bin, path)
			if code := d.wait(t, waitExit); code != 1 {
				t.Errorf("exit code %d, want 1", code)
			}
			lines, _ := d.log.snapshot()
			if re := tc.want(path); !slices.ContainsFunc(lines, re.MatchString) {
				t.Errorf("no line matching %s in:\n%s", re, strings.Join(lines, "\n"))
			}
			for _, m := range d.notify.all() {
				if _, ok := m.vars["READY"]; ok {
					t.Errorf("READY sent by a daemon that refused to start: %q", m.raw)
				}
			}
		})
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRunInProcess runs Run itself (not the binary) to a cancel and
// checks that it returns nil and leaves no goroutine behind; and that a
// start-up failure does not either.
func TestRunInProcess(t *testing.T) {
	need(t, os.Geteuid() == 0, "root (Run binds a kernel uevent socket)")
	t.Run("stop", func(t *testing.T) {
		t.Cleanup(func() { goleak.VerifyNone(t) }) // after the cleanups below
		dir := t.TempDir()
		tag, out := newTag(), filepath.Join(dir, "out")
		rulesPath := filepath.Join(dir, "rules.yaml")
		writeRules(t, rulesPath, "", rule{name: "lo", match: loMatch(tag), argv: []string{"/bin/sh", "-c", `echo "$HOTPLUG_SYNTH_UUID" > "$0"`, out}})
		ns := newNotifySocket(t)
		t.Setenv("NOTIFY_SOCKET", ns.path)
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- Run(ctx, Config{RulesPath: rulesPath, StopTimeout: time.Second}) }()
		ns.expect(t, "READY", waitReady)
		uuid := newUUID()
		trigger(t, loUevent, uuid, tag)
		waitFile(t, out, waitAction, func(s string) bool { return s == uuid+"\n" })
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run = %v after cancel, want nil", err)
			}
		case <-time.After(waitExit):
			t.Fatal("Run did not return after cancel")
		}
		ns.expect(t, "STOPPING", waitReady)
	})
	t.Run("refused", func(t *testing.T) {
		t.Cleanup(func() { goleak.VerifyNone(t) })
		dir := t.TempDir()
		rulesPath := filepath.Join(dir, "rules.yaml")
		writeFile(t, rulesPath, "rules:\n  - name: x\n    match: action ==\n    actions: []\n")
		err := Run(t.Context(), Config{RulesPath: rulesPath})
		if err == nil || !strings.HasPrefix(err.Error(), rulesPath+":3:") {
			t.Errorf("Run = %v, want an error at %s:3:COL", err, rulesPath)
		}
	})
}
