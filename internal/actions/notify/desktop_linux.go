package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions/run"
	"golang.org/x/sys/unix"
)

// helperExe is the daemon's own binary as the kernel knows it: the
// running file even if its path was replaced or removed since. Being a
// magic link, it also resolves for a user who could not search the
// directories of the binary's path.
const helperExe = "/proc/self/exe"

// helperWaitDelay is how long the helper's output is read after it was
// killed or exited.
const helperWaitDelay = time.Second

// errNotUsers is a runtime directory or bus socket that does not belong
// to the user whose uid names it.
var errNotUsers = errors.New("not owned by the user")

// runDesktopHelper runs the desktop helper with cred's ids and groups,
// the bus address and req on stdin, and returns its stdout. ctx bounds
// it: when ctx is done the helper is killed.
func (n *Notifier) runDesktopHelper(ctx context.Context, cred *run.Credential, address string, req []byte) (string, error) {
	cmd := exec.CommandContext(ctx, helperExe, n.cfg.helperArgs...)
	cmd.Args[0] = notifyHelperArgv0
	cmd.Env = []string{
		notifyHelperEnv + "=" + notifyHelperMode,
		"DBUS_SESSION_BUS_ADDRESS=" + address,
		"PATH=" + run.DefaultPath,
		"HOME=" + cred.Home,
		"USER=" + cred.Name,
		"LOGNAME=" + cred.Name,
	}
	cmd.Env = append(cmd.Env, n.cfg.helperEnv...)
	cmd.Dir = "/"
	cmd.Stdin = bytes.NewReader(req)
	var stdout, stderr capBuffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // not the daemon's terminal signals
	// A timeout kills the whole group: what the helper started goes too.
	cmd.Cancel = func() error { return unix.Kill(-cmd.Process.Pid, unix.SIGKILL) }
	switch euid := os.Geteuid(); {
	case euid == 0:
		// setgroups(2) is always called: with no Groups the helper gets
		// none, never the daemon's.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: cred.Uid, Gid: cred.Gid, Groups: cred.Groups}
	case uint32(euid) != cred.Uid:
		return "", fmt.Errorf("a daemon running as uid %d cannot notify uid %d: %w", euid, cred.Uid, os.ErrPermission)
	default:
		// A daemon that is not root notifies its own user's sessions
		// as itself.
	}
	cmd.WaitDelay = helperWaitDelay
	// A scope in the user's slice: the user's process has no place in the
	// root service's cgroup.
	slice := "user-" + strconv.FormatUint(uint64(cred.Uid), 10) + ".slice"
	err := n.cfg.Scopes.Start(cmd, "hotplugd-notify", slice, "hotplugd: desktop notification for uid "+strconv.FormatUint(uint64(cred.Uid), 10))
	if err == nil {
		err = cmd.Wait()
	}
	switch {
	case ctx.Err() != nil:
		return "", fmt.Errorf("notification helper killed: %w", context.Cause(ctx))
	case err != nil:
		return "", fmt.Errorf("notification helper: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// scanRunUserDir lists the uids that have a runtime directory in dir.
func scanRunUserDir(dir string) ([]uint32, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var uids []uint32
	for _, e := range ents {
		uid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil || !e.IsDir() || strconv.FormatUint(uid, 10) != e.Name() {
			continue
		}
		uids = append(uids, uint32(uid))
	}
	slices.Sort(uids)
	return uids, nil
}

// userBus returns RUNUSERDIR/UID/bus once it has checked that it is a
// socket owned by uid in a directory (not a symlink) owned by uid, as
// pam_systemd creates them. The helper connects as the user anyway; the
// check keeps the daemon from starting one for a uid that has no bus.
func userBus(runUserDir string, uid uint32) (string, error) {
	dir := userRuntimeDir(runUserDir, uid)
	if err := ownedBy(dir, uid, os.ModeDir); err != nil {
		return "", err
	}
	bus := filepath.Join(dir, "bus")
	if err := ownedBy(bus, uid, os.ModeSocket); err != nil {
		return "", err
	}
	return bus, nil
}

// ownedBy checks that path is of type typ (not following a symlink) and
// owned by uid.
func ownedBy(path string, uid uint32, typ os.FileMode) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	if fi.Mode().Type() != typ {
		return fmt.Errorf("%s: not a %s", path, map[os.FileMode]string{os.ModeDir: "directory", os.ModeSocket: "socket"}[typ])
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid != uid {
		return fmt.Errorf("%s: %w %d", path, errNotUsers, uid)
	}
	return nil
}

// capBuffer keeps the first maxHelperOutput bytes written to it and
// discards the rest, so a helper cannot grow the daemon's memory.
type capBuffer struct{ b bytes.Buffer }

func (c *capBuffer) Write(p []byte) (int, error) {
	if room := maxHelperOutput - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capBuffer) String() string { return c.b.String() }
