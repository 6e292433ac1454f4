package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/hotplugd/hotplugd/internal/control"
)

// runEject is `hotplugd eject`: unmount what hotplugd mounted for each
// target, like udisksctl unmount (and power-off). Exit status 3 when a
// filesystem is busy, naming the processes that hold it.
func runEject(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("eject", "eject [--power-off] [--force] [--timeout D] [--json] [--socket PATH] TARGET...",
		"Unmount what hotplugd mounted for each TARGET (/dev/sdb1, the whole disk\n"+
			"/dev/sdb, a mount point, LABEL=... or UUID=...) and remove its directory.\n"+
			"Never touches a mount hotplugd did not make. When a filesystem is busy,\n"+
			"exit status 3 and the processes holding it, unless --force (lazy detach).", stderr)
	powerOff := fs.Bool("power-off", false, "then power the USB device off, as udisks does")
	force := fs.Bool("force", false, "detach a busy filesystem lazily")
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after `D`")
	asJSON := fs.Bool("json", false, "print the outcome as JSON")
	socket := socketFlag(fs)
	targets, exit, ok := parseFlags(fs, args, true)
	if !ok {
		return exit
	}
	if len(targets) == 0 {
		fmt.Fprintln(stderr, "hotplugd eject: no target")
		fs.Usage()
		return exitError(2)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout+30*time.Second)
	defer cancel()
	res, err := control.NewClient(*socket).Eject(ctx, control.EjectRequest{
		Targets: targets, PowerOff: *powerOff, Force: *force, Timeout: control.Duration(*timeout),
	})
	if err != nil {
		return daemonError(stderr, "eject", err, 1)
	}
	if *asJSON {
		printJSON(stdout, res)
	}
	return ejectOutcome(stdout, stderr, res, !*asJSON)
}

// ejectOutcome prints each target's outcome and gives the exit status: 3
// when one was busy, 1 when one failed otherwise.
func ejectOutcome(stdout, stderr io.Writer, res control.EjectResult, human bool) error {
	code := 0
	for _, t := range res.Targets {
		switch {
		case len(t.Busy) > 0:
			code = 3
			if human {
				fmt.Fprintf(stderr, "hotplugd eject: %s is in use by:\n", display(t.Target))
				for _, h := range t.Busy {
					fmt.Fprintf(stderr, "  %d %s\n", h.PID, display(h.Command))
				}
			}
		case t.Error != "":
			code = max(code, 1)
			if human {
				fmt.Fprintf(stderr, "hotplugd eject: %s\n", display(t.Error))
			}
		case human:
			for _, m := range t.Unmounted {
				how := "unmounted"
				if t.Lazy {
					how = "detached (it was in use)"
				}
				fmt.Fprintf(stdout, "%s %s from %s\n", display(m.Devnode), how, display(m.Path))
			}
			for _, name := range t.Closed {
				fmt.Fprintf(stdout, "%s closed\n", display(name))
			}
			for _, name := range t.Deferred {
				fmt.Fprintf(stdout, "%s still in use: the kernel closes it once its last user lets go\n", display(name))
			}
			if t.PoweredOff {
				fmt.Fprintf(stdout, "%s powered off; it can be unplugged\n", display(t.Target))
			}
		}
	}
	if code != 0 {
		return exitError(code)
	}
	return nil
}
