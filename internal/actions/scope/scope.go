// Package scope starts the helper processes hotplugd leaves running or
// runs as another user (a FUSE mount helper and the daemon it forks, the
// desktop notification helper) in transient systemd scope units of their
// own. In the service's cgroup they would be killed with it: a restart
// of hotplugd (KillMode=mixed) would kill ntfs-3g, and the mount would
// answer ENOTCONN with unflushed data lost; and a user's process has no
// place in a root service's cgroup.
//
// A process is moved into a scope by systemd (StartTransientUnit with
// PIDs=) after it started; to leave no window in which it could fork
// into the old cgroup, it starts as a re-execution of hotplugd's own
// binary (argv[0] "hotplugd-scope") that waits on a pipe until the move
// is done, then executes the real program. Without systemd as PID 1, or
// as an ordinary user, processes start where the daemon runs.
package scope

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/hotplugd/hotplugd/internal/host"
)

// shimArgv0 is the argv[0] of the waiting re-execution. The daemon sets
// it; a caller of `sudo hotplugd` cannot.
const shimArgv0 = "hotplugd-scope"

// shimExe is the daemon's own binary, even after an upgrade replaced the
// file.
const shimExe = "/proc/self/exe"

// moveTimeout bounds the wait for systemd to make the scope.
const moveTimeout = 5 * time.Second

// Starter starts processes in scopes of their own when systemd runs.
type Starter struct {
	log *slog.Logger
	// move asks systemd to make a scope holding pid; nil when there is
	// no systemd to ask.
	move func(ctx context.Context, pid int, unit, slice, description string) error
}

// New returns a Starter for this machine: one that makes scopes when
// systemd is PID 1 (roots' /run/systemd/system exists) and the daemon is
// root, else one that starts processes where they are.
func New(roots host.Roots, log *slog.Logger) *Starter {
	s := &Starter{log: log}
	if _, err := os.Stat(roots.RunPath("systemd", "system")); err == nil && os.Geteuid() == 0 {
		s.move = systemdMove
	}
	return s
}

// Start starts cmd, in a new scope unit <prefix>-<pid>.scope in slice
// when it can (see the package doc). A scope that cannot be made is
// logged; cmd then runs in the daemon's cgroup, as it would without
// systemd. cmd must not be started yet; its Path and Args may be
// rewritten.
func (s *Starter) Start(cmd *exec.Cmd, prefix, slice, description string) error {
	if s == nil || s.move == nil {
		return cmd.Start()
	}
	gateR, gateW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer gateW.Close()
	cmd.Args = append([]string{shimArgv0, cmd.Path}, cmd.Args...)
	cmd.Path = shimExe
	cmd.ExtraFiles = append([]*os.File{gateR}, cmd.ExtraFiles...)
	err = cmd.Start()
	gateR.Close()
	if err != nil {
		return err
	}
	pid := cmd.Process.Pid
	unit := prefix + "-" + strconv.Itoa(pid) + ".scope"
	ctx, cancel := context.WithTimeout(context.Background(), moveTimeout)
	defer cancel()
	if err := s.move(ctx, pid, unit, slice, description); err != nil {
		s.log.Warn("no scope of its own: it runs in hotplugd's cgroup", "unit", unit, "pid", pid, "err", err)
	}
	_, err = gateW.Write([]byte{1}) // go on: exec the real program
	return err
}

// systemdMove makes the scope through systemd's private socket, and
// waits for its start job.
func systemdMove(ctx context.Context, pid int, unit, slice, description string) error {
	conn, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("systemd: %w", err)
	}
	defer conn.Close()
	props := []sddbus.Property{
		sddbus.PropDescription(description),
		sddbus.PropPids(uint32(pid)),
		{Name: "CollectMode", Value: dbus.MakeVariant("inactive-or-failed")},
	}
	if slice != "" {
		props = append(props, sddbus.PropSlice(slice))
	}
	done := make(chan string, 1)
	if _, err := conn.StartTransientUnitContext(ctx, unit, "fail", props, done); err != nil {
		return fmt.Errorf("systemd: StartTransientUnit %s: %w", unit, err)
	}
	select {
	case result := <-done:
		if result != "done" {
			return fmt.Errorf("systemd: starting %s: %s", unit, result)
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("systemd: starting %s: %w", unit, ctx.Err())
	}
}

// RunShim turns the process into the waiting re-execution when Start made
// it one, and never returns then; otherwise it returns at once. main calls
// it first thing. It waits for the byte on fd 3, then executes argv[1]
// with the rest of its arguments and its environment.
func RunShim() {
	if len(os.Args) < 3 || os.Args[0] != shimArgv0 {
		return
	}
	gate := os.NewFile(3, "scope-gate")
	var b [1]byte
	_, err := gate.Read(b[:])
	gate.Close()
	if err == nil {
		err = syscall.Exec(os.Args[1], os.Args[2:], os.Environ())
	}
	fmt.Fprintln(os.Stderr, "hotplugd scope:", errors.Join(err, errors.New("not started")))
	os.Exit(127)
}
