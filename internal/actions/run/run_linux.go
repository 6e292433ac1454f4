package run

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errRunTimeout is the cause of the per-action deadline, telling a timeout
// apart from the caller's own cancellation or deadline.
var errRunTimeout = errors.New("action timeout")

// run starts the action in a process group of its own and waits for it.
//
// Stopping (timeout or ctx done): exec.Cmd calls Cancel, which sends
// SIGTERM to the whole group; if the leader is still alive after Grace,
// exec.Cmd's WaitDelay kills it, and the leader's exit brings SIGKILL to
// the rest of the group (below).
//
// After the leader exits, for any reason, whatever is left in its process
// group is killed with SIGKILL, as systemd-udevd kills what an event's
// RUN{program} left behind: an action is over when its leader is, and a
// helper wanting to outlive it must leave the group (setsid) on purpose.
// The kill is sent while the leader is an unreaped zombie, so the group id
// cannot have been reused. Output pipes still held open by a process that
// escaped the group stop being read WaitDelay after the leader's exit, so
// nothing outside the group can hang Run.
func (r *Runner) run(ctx context.Context, req *RunRequest, path string, env []string, out *runOutput) (RunResult, error) {
	res := RunResult{ExitCode: -1}
	runCtx := ctx
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeoutCause(ctx, req.Timeout, errRunTimeout)
		defer cancel()
	}
	cmd, g := r.command(runCtx, req, path, env, out)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		res.Duration = time.Since(start)
		if errors.Is(context.Cause(runCtx), errRunTimeout) {
			res.TimedOut = true
			return res, fmt.Errorf("run %s: %w after %v", path, ErrTimeout, req.Timeout)
		}
		return res, fmt.Errorf("run %s: %w", path, err)
	}
	res.PID = cmd.Process.Pid
	g.pid = res.PID
	werr, abandoned := r.waitLeader(runCtx, req, cmd, g)
	res.Duration = time.Since(start)
	if abandoned {
		res.TimedOut = errors.Is(context.Cause(runCtx), errRunTimeout)
		return res, fmt.Errorf("run %s: %w: pid %d still there %v after it was stopped, left behind", path, ErrUnkillable, res.PID, r.abandonAfter())
	}
	if runReapGroup(res.PID, time.Now().Add(r.grace())) {
		r.log().WarnContext(ctx, "run: processes of the action's group still alive after SIGKILL",
			"rule", req.Rule, "pid", res.PID)
	}
	if st := cmd.ProcessState; st != nil {
		res.ExitCode = st.ExitCode()
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Signal = unix.SignalName(ws.Signal())
		}
	}
	return r.outcome(ctx, runCtx, req, path, cmd, g, res, werr)
}

// command makes the action's exec.Cmd: its own process group, in "/",
// stdin on /dev/null or req.Stdin, the request's user, SIGTERM to the
// group to stop it.
func (r *Runner) command(ctx context.Context, req *RunRequest, path string, env []string, out *runOutput) (*exec.Cmd, *runGroup) {
	cmd := exec.CommandContext(ctx, path)
	cmd.Args = req.Argv
	cmd.Env = env
	cmd.Dir = "/"
	cmd.Stdout = out.stdout
	cmd.Stderr = out.stderr
	if req.Stdin != nil {
		cmd.Stdin = req.Stdin
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if u := req.User; u != nil {
		// setgroups(2) is always called: with no Groups the child gets
		// none, never the daemon's.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: u.Uid, Gid: u.Gid, Groups: u.Groups}
	}
	g := &runGroup{}
	cmd.Cancel = func() error {
		// Start sets cmd.Process before it starts the goroutine that
		// calls Cancel.
		return g.stop(cmd.Process)
	}
	cmd.WaitDelay = r.grace()
	return cmd, g
}

// waitLeader waits for the leader as reapLeader does, but once the action
// was stopped (ctx done: SIGTERM, then after Grace SIGKILL) no longer than
// abandonAfter: a process in uninterruptible sleep (sync on a stalled
// stick) does not die of SIGKILL, and must not hold the worker and its
// device's queue, the remove that would clean up included. It is then
// left behind, counted (Leaked) and still reaped when it finally exits.
func (r *Runner) waitLeader(ctx context.Context, req *RunRequest, cmd *exec.Cmd, g *runGroup) (err error, abandoned bool) {
	done := make(chan error, 1)
	go func() { done <- reapLeader(cmd, g) }()
	select {
	case err := <-done:
		return err, false
	case <-ctx.Done():
	}
	select {
	case err := <-done:
		return err, false
	case <-time.After(r.abandonAfter()):
	}
	r.leaked.Add(1)
	r.log().Error("run: the action's process did not die of SIGKILL (uninterruptible sleep); left behind",
		"rule", req.Rule, "pid", g.pid, "leaked", r.leaked.Load())
	go func() {
		<-done
		r.leaked.Add(-1)
		r.log().Warn("run: a process left behind has exited", "rule", req.Rule, "pid", g.pid)
	}()
	return nil, true
}

// abandonAfter is how long a stopped action's leader may take to die:
// SIGTERM's grace, then as long again after SIGKILL, and a second.
func (r *Runner) abandonAfter() time.Duration { return 2*r.grace() + time.Second }

// reapLeader waits for the leader to exit without reaping it (WNOWAIT),
// so its pid, and with it the group id, stays ours while the group is
// killed; then it reaps it and waits for the output (up to WaitDelay).
func reapLeader(cmd *exec.Cmd, g *runGroup) error {
	var werr error
	for {
		var info unix.Siginfo
		werr = unix.Waitid(unix.P_PID, g.pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if werr != unix.EINTR {
			break
		}
	}
	// Without a zombie leader (an error here means it was reaped behind
	// our back) the group id is no longer safe to signal.
	g.exited(werr == nil)
	return cmd.Wait()
}

// outcome is the error of a finished action: nil for exit status 0.
func (r *Runner) outcome(ctx, runCtx context.Context, req *RunRequest, path string, cmd *exec.Cmd, g *runGroup, res RunResult, werr error) (RunResult, error) {
	stopped := g.wasStopped()
	var exitErr *exec.ExitError
	switch {
	case stopped && errors.Is(context.Cause(runCtx), errRunTimeout):
		res.TimedOut = true
		return res, fmt.Errorf("run %s: %w after %v (%s)", path, ErrTimeout, req.Timeout, runHow(res))
	case stopped:
		return res, fmt.Errorf("run %s: stopped (%s): %w", path, runHow(res), context.Cause(runCtx))
	case errors.As(werr, &exitErr):
		return res, fmt.Errorf("run %s: %w", path, werr)
	case errors.Is(werr, exec.ErrWaitDelay):
		// Exit status 0, but something outside the group kept the
		// output pipes open; reading stopped after WaitDelay.
		r.log().WarnContext(ctx, "run: output still held open by a process outside the action's group; stopped reading",
			"rule", req.Rule, "pid", res.PID, "wait_delay", cmd.WaitDelay)
		return res, nil
	case werr != nil:
		return res, fmt.Errorf("run %s: %w", path, werr)
	}
	return res, nil
}

// runHow describes how the process ended, for error messages.
func runHow(res RunResult) string {
	if res.Signal != "" {
		return "killed by " + res.Signal
	}
	return fmt.Sprintf("exit status %d", res.ExitCode)
}

// runGroup is the process group of one action, signalled by exec.Cmd's
// Cancel on one goroutine and by Run on another.
type runGroup struct {
	pid int // the leader; also the group id (Setpgid)

	mu      sync.Mutex
	done    bool // the leader has exited; the group was SIGKILLed
	stopped bool // Cancel signalled a live group
}

// stop is exec.Cmd's Cancel: SIGTERM to the group.
func (g *runGroup) stop(p *os.Process) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.done {
		return os.ErrProcessDone
	}
	g.stopped = true
	if err := unix.Kill(-p.Pid, unix.SIGTERM); err != nil {
		// The leader left its group (setpgid): signal it alone.
		return p.Signal(unix.SIGTERM)
	}
	return nil
}

// exited is called once the leader has exited: no further Cancel, and
// SIGKILL to what is left of the group if the leader is still an unreaped
// zombie (zombie), which keeps the group id from being reused.
func (g *runGroup) exited(zombie bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done = true
	if zombie {
		_ = unix.Kill(-g.pid, unix.SIGKILL) // ESRCH: nothing left
	}
}

func (g *runGroup) wasStopped() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.stopped
}

// runReapGroup reaps the group's processes that became our children. They
// do when the daemon is a child subreaper (prctl PR_SET_CHILD_SUBREAPER,
// for when PID 1 does not reap orphans): the leader's orphans are then
// re-parented to us, not to init. They were all SIGKILLed, so this polls
// only until they are gone, or until deadline for a process stuck in an
// uninterruptible sleep; it reports whether any member of the group was
// still there then. Waiting by group id (wait4(-pgid)) cannot take a child
// of another action or of exec.Cmd: each action is a group of its own.
func runReapGroup(pgid int, deadline time.Time) (left bool) {
	delay := time.Millisecond
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-pgid, &ws, unix.WNOHANG, nil)
		switch {
		case err == unix.EINTR || err == nil && wpid > 0:
			continue
		case err != nil: // ECHILD: none of our children is in the group
			return false
		case time.Now().After(deadline):
			return unix.Kill(-pgid, 0) == nil
		}
		time.Sleep(delay)
		delay = min(2*delay, 50*time.Millisecond)
	}
}
