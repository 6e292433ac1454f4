// Command hotplugd turns device hotplug events into automation. See
// README.md and hotplugd(8).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hotplugd/hotplugd/internal/actions/notify"
	"github.com/hotplugd/hotplugd/internal/actions/scope"
)

// exitError carries a process exit status out of a subcommand without a
// message of its own (the subcommand has printed what it had to say).
type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// command is one subcommand: it parses its own flags from args.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// commands is the table of subcommands; each lives in its own file.
func commands() map[string]command {
	return map[string]command{
		"run":     {"run the daemon in the foreground", runRun},
		"trigger": {"make the kernel re-emit events of present devices", runTrigger},
		"version": {"print version and build information", runVersion},
		"monitor": {"print live uevents", runMonitor},
		"check":   {"validate a rules file", runCheck},
		"test":    {"dry-run one event through the rules", runTest},
		"status":  {"show what the running daemon is doing", runStatus},
		"eject":   {"unmount what hotplugd mounted, and power the device off", runEject},
		"reload":  {"reload the rules through the daemon", runReload},
		"settle":  {"wait until the daemon has handled every event", runSettle},
	}
}

func main() {
	scope.RunShim()          // returns unless this process waits to run a helper in its own scope
	notify.RunNotifyHelper() // returns unless this process is a desktop-notification helper
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	var code exitError
	switch {
	case err == nil:
	case errors.As(err, &code):
		os.Exit(int(code))
	default:
		fmt.Fprintln(os.Stderr, "hotplugd:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitError(2)
		}
		return nil
	}
	cmd, ok := commands()[args[0]]
	if !ok {
		usage(stderr)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: hotplugd COMMAND [flags]\n\ncommands:")
	for _, name := range []string{"run", "check", "monitor", "test", "trigger", "status", "eject", "reload", "settle", "version"} {
		if c, ok := commands()[name]; ok {
			fmt.Fprintf(w, "  %-8s %s\n", name, c.summary)
		}
	}
	fmt.Fprintln(w, "\nRun 'hotplugd COMMAND -h' for a command's flags.")
}
