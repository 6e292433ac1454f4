// Package crypt runs cryptsetup(8) for hotplugd: it opens a LUKS device
// with a keyfile and closes the mapping again, and does nothing else.
//
// cryptsetup runs as an argv, never through a shell, with a clean
// environment, in a process group of its own that is killed at the
// action's deadline (run.Runner). The key is read from the keyfile's
// descriptor, checked just before (keyfile.Open), and reaches cryptsetup
// as its standard input ("--key-file -"): it is never on a command line,
// in an environment or in a log, and no path swapped in after the check
// is ever read.
package crypt

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions/run"
	"github.com/hotplugd/hotplugd/internal/keyfile"
)

// DefaultPaths are where cryptsetup is looked for (Debian:
// cryptsetup-bin).
var DefaultPaths = []string{"/usr/sbin/cryptsetup", "/sbin/cryptsetup"}

// Errors of Open and Close, for errors.Is.
var (
	ErrNotFound = errors.New("cryptsetup not found (Debian: cryptsetup-bin)")
	// ErrWrongKey: no key slot of the LUKS header opens with the key.
	ErrWrongKey = errors.New("wrong key: no key slot opens with the keyfile")
	// ErrBusy: the name is taken, or the device (or the mapping, for
	// Close) is in use.
	ErrBusy = errors.New("the device or the mapping is in use, or the name is taken")
	// ErrWrongDevice: cryptsetup refused the device.
	ErrWrongDevice = errors.New("cryptsetup refused the device")
	// ErrFailed: cryptsetup failed otherwise; its output is in the log.
	ErrFailed = errors.New("cryptsetup failed (its output is in the log)")
)

// Cryptsetup runs the cryptsetup program. The zero value finds it in
// DefaultPaths and runs it with a Runner that logs nowhere.
type Cryptsetup struct {
	Path   string      // the program; "" for the first of DefaultPaths
	Runner *run.Runner // runs it: process group, clean environment, bounded output
}

// OpenRequest is one unlock.
type OpenRequest struct {
	Device   string // the LUKS device's node, /dev/sdb1
	Name     string // the mapping's name: its cleartext is /dev/mapper/<Name>
	Keyfile  string // the key's path; what Open reads is the descriptor it checked
	ReadOnly bool
	Rule     string // names the rule in the log
	Timeout  time.Duration
}

// path is the program to run; a missing one is still named, so that the
// plan shows it and Open fails with ErrNotFound.
func (c *Cryptsetup) path() string {
	if c.Path != "" {
		return c.Path
	}
	for _, p := range DefaultPaths {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return DefaultPaths[0]
}

func (c *Cryptsetup) runner() *run.Runner {
	if c.Runner == nil {
		return &run.Runner{}
	}
	return c.Runner
}

// OpenArgv is the command Open runs: the key comes on stdin, and the
// device and the name after "--", so neither is read as an option.
func (c *Cryptsetup) OpenArgv(req OpenRequest) []string {
	argv := []string{c.path(), "open", "--type", "luks", "--key-file", "-"}
	if req.ReadOnly {
		argv = append(argv, "--readonly")
	}
	return append(argv, "--", req.Device, req.Name)
}

// Open runs cryptsetup open for req with the key of req.Keyfile,
// checked on the descriptor it hands to cryptsetup. On failure the
// mapping may exist half made (a kill at the deadline): the caller
// closes it.
func (c *Cryptsetup) Open(ctx context.Context, req OpenRequest) error {
	key, err := keyfile.Open(req.Keyfile)
	if err != nil {
		return err
	}
	defer key.Close()
	err = c.exec(ctx, run.RunRequest{Argv: c.OpenArgv(req), Stdin: key, Rule: req.Rule, Timeout: req.Timeout})
	if err != nil {
		return fmt.Errorf("cryptsetup open %s as %s: %w", req.Device, req.Name, err)
	}
	return nil
}

// CloseRequest is the close of one mapping.
type CloseRequest struct {
	Name string
	// Deferred asks the kernel to remove a mapping still in use once its
	// last user closes it (--deferred); without it, one in use is ErrBusy.
	Deferred bool
	Rule     string // names the rule in the log
	Timeout  time.Duration
}

// CloseArgv is the command Close runs.
func (c *Cryptsetup) CloseArgv(req CloseRequest) []string {
	argv := []string{c.path(), "close"}
	if req.Deferred {
		argv = append(argv, "--deferred")
	}
	return append(argv, "--", req.Name)
}

// Close runs cryptsetup close for req.
func (c *Cryptsetup) Close(ctx context.Context, req CloseRequest) error {
	if err := c.exec(ctx, run.RunRequest{Argv: c.CloseArgv(req), Rule: req.Rule, Timeout: req.Timeout}); err != nil {
		return fmt.Errorf("cryptsetup close %s: %w", req.Name, err)
	}
	return nil
}

// cryptsetup's exit codes (cryptsetup(8), RETURN CODES).
const (
	exitNoPermission = 2 // a wrong passphrase or key
	exitWrongDevice  = 4
	exitBusy         = 5 // the device exists already, or is busy
)

// exec runs cryptsetup and names its failure.
func (c *Cryptsetup) exec(ctx context.Context, req run.RunRequest) error {
	_, err := c.runner().Run(ctx, req)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.Is(err, run.ErrCommandNotFound):
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case !errors.As(err, &exit):
		return err // a timeout, or stopped
	}
	switch exit.ExitCode() {
	case exitNoPermission:
		return fmt.Errorf("%w (%v)", ErrWrongKey, exit)
	case exitWrongDevice:
		return fmt.Errorf("%w (%v)", ErrWrongDevice, exit)
	case exitBusy:
		return fmt.Errorf("%w (%v)", ErrBusy, exit)
	}
	return fmt.Errorf("%w (%v)", ErrFailed, exit)
}
