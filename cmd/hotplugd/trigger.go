package main

import (
	"context"
	"fmt"
	"io"

	"github.com/hotplugd/hotplugd/internal/device"
)

// runTrigger asks the kernel to re-emit events for present devices, like
// `udevadm trigger`: parents before children.
func runTrigger(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("trigger", "trigger [--action A] [--subsystem S] [--dry-run]",
		"Make the kernel emit an event for every present device (of a subsystem)\n"+
			"by writing to its sysfs uevent file.", stderr)
	action := fs.String("action", "add", "the `ACTION` to emit: add, remove, change, ...")
	subsystem := fs.String("subsystem", "", "only devices of `SUBSYSTEM` (default all)")
	dryRun := fs.Bool("dry-run", false, "list the devices, trigger nothing")
	if _, exit, ok := parseFlags(fs, args, false); !ok {
		return exit
	}
	m, err := device.New(device.Config{})
	if err != nil {
		return err
	}
	defer m.Close()
	evs, err := m.Enumerate(*subsystem)
	if err != nil {
		fmt.Fprintln(stderr, "hotplugd trigger:", err)
	}
	failed := 0
	for _, ev := range evs {
		if *dryRun {
			fmt.Fprintf(stdout, "%s (%s)\n", display(ev.DevPath), display(ev.Subsystem))
			continue
		}
		if err := m.Trigger(ev.DevPath, *action); err != nil {
			fmt.Fprintln(stderr, "hotplugd trigger:", err)
			failed++
		}
	}
	if !*dryRun {
		fmt.Fprintf(stdout, "triggered %q for %d devices\n", *action, len(evs)-failed)
	}
	if failed > 0 {
		return exitError(1)
	}
	return nil
}
