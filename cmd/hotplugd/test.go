package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hotplugd/hotplugd/internal/actions"
	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/device"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// maxEventFile bounds what --event reads: a uevent is at most 8 KiB on
// the wire, its JSON a few times that.
const maxEventFile = 64 << 10

// runTest is the dry run: one event through the rules, printing every
// rule's outcome and what each matched action would do. It runs,
// mounts and writes nothing. (--syspath probes the device's filesystem
// with blkid, read-only, as the daemon would.)
func runTest(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("test", "test [--config FILE] (--event FILE | --syspath /sys/... [--action A] | KEY=VALUE...\n"+
		"                     | --replay EVENTS.jsonl [--expect EXPECT.yaml [--update]])",
		"Feed one event through the rules and print, for every rule, whether it\n"+
			"matched and what each action of a matched rule would do. Nothing is run,\n"+
			"mounted or written. KEY=VALUE arguments build the event: DEVPATH and\n"+
			"SUBSYSTEM are required, ACTION defaults to add.\n\n"+
			"--replay feeds a recording (hotplugd monitor --json --walk) through the\n"+
			"rules in order, as the daemon would; --expect compares what they do with\n"+
			"a file (exit status 1 when they differ), --update rewrites it. Exit status\n"+
			"2 when an input cannot be used.", stderr)
	config := fs.String("config", defaultRulesPath, "the rules `FILE`")
	eventFile := fs.String("event", "", "read the event from `FILE`: a raw uevent (NUL- or newline-separated\nKEY=VALUE, optionally after an action@devpath line) or one object as hotplugd monitor --json prints it")
	syspath := fs.String("syspath", "", "build the event from the present device at `PATH` (/sys/...), with its sysfs\nattributes, parents and filesystem")
	action := fs.String("action", "", "the event's `ACTION` (default: add, or as recorded in --event)")
	var rf replayFlags
	fs.StringVar(&rf.events, "replay", "", "replay the recorded events of `EVENTS.jsonl` in order (hotplugd monitor --json --walk)")
	fs.StringVar(&rf.expect, "expect", "", "with --replay, compare what the rules do with `EXPECT.yaml`")
	fs.BoolVar(&rf.update, "update", false, "with --expect, rewrite the file from what the rules do now")
	kv, exit, ok := parseFlags(fs, args, true)
	if !ok {
		return exit
	}
	if rf.events != "" || rf.expect != "" || rf.update {
		if err := replayUsage(rf, *eventFile != "" || *syspath != "" || len(kv) > 0 || *action != ""); err != "" {
			fmt.Fprintln(stderr, "hotplugd test:", err)
			fs.Usage()
			return exitError(2)
		}
		rf.config = *config
		return runReplay(ctx, rf, stdout, stderr)
	}
	if n := countSet(*eventFile != "", *syspath != "", len(kv) > 0); n != 1 {
		fmt.Fprintln(stderr, "hotplugd test: give exactly one of --event FILE, --syspath PATH, KEY=VALUE arguments or --replay EVENTS")
		fs.Usage()
		return exitError(2)
	}
	rs, err := loadRules(*config, stderr)
	if err != nil {
		return err
	}
	ev, dev, done, err := testEvent(ctx, *eventFile, *syspath, kv, *action, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "hotplugd test: %v\n", err)
		return exitError(1)
	}
	defer done()
	set, deps, err := planSet(rs)
	if err != nil {
		fmt.Fprintf(stderr, "hotplugd test: %v\n", err)
		return exitError(1)
	}
	dryRun(ctx, stdout, rs, set, deps, ev, dev)
	return nil
}

// replayUsage says what is wrong with the flags of a replay, or "".
func replayUsage(f replayFlags, oneEvent bool) string {
	switch {
	case f.events == "":
		return "--expect and --update need --replay EVENTS"
	case oneEvent:
		return "--replay takes no --event, --syspath, --action or KEY=VALUE arguments"
	case f.update && f.expect == "":
		return "--update needs --expect FILE"
	}
	return ""
}

func countSet(set ...bool) int {
	n := 0
	for _, s := range set {
		if s {
			n++
		}
	}
	return n
}

// testEvent builds the event of the dry run from the one source given,
// with its Device for the rules; done releases it.
func testEvent(ctx context.Context, eventFile, syspath string, kv []string, action string, stderr io.Writer) (*uevent.Event, rules.Device, func(), error) {
	var ev uevent.Event
	var err error
	switch {
	case eventFile != "":
		ev, err = readEventFile(eventFile)
	case syspath != "":
		return syspathEvent(ctx, syspath, action, stderr)
	default:
		ev, err = uevent.FromArgs(kv)
	}
	if err == nil && action != "" {
		if ev, err = ev.WithAction(action); err != nil && eventFile != "" {
			err = fmt.Errorf("%s: %w", eventFile, err)
		}
	}
	if err != nil {
		return nil, nil, nil, err
	}
	ev.Source = uevent.SourceTest
	return &ev, rules.EventOnly{Event: &ev}, func() {}, nil
}

func readEventFile(path string) (uevent.Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return uevent.Event{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxEventFile+1))
	if err != nil {
		return uevent.Event{}, err
	}
	if len(data) > maxEventFile {
		return uevent.Event{}, fmt.Errorf("%s: larger than %d bytes", path, maxEventFile)
	}
	ev, err := uevent.ParseText(data)
	if err != nil {
		return uevent.Event{}, fmt.Errorf("%s: %w", path, err)
	}
	return ev, nil
}

// syspathEvent builds the event of the device at syspath as coldplug
// does. The device is present, so whatever the action, the rules'
// questions are answered from sysfs as they were for its add (on a real
// remove the device database answers the same).
func syspathEvent(ctx context.Context, syspath, action string, stderr io.Writer) (*uevent.Event, rules.Device, func(), error) {
	m, err := device.New(device.Config{
		Logger: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return nil, nil, nil, err
	}
	ev, err := m.EventAt(syspath)
	if err == nil && action != "" {
		ev, err = ev.WithAction(action)
	}
	if err != nil {
		m.Close()
		return nil, nil, nil, err
	}
	ev.Source = uevent.SourceTest
	d := m.For(ctx, ev)
	return &ev, d, func() { d.Done(); m.Close() }, nil
}

// dryRun prints the event, then every rule with its outcome and, for a
// matched rule, what each of its actions would do: the daemon's own
// rule-execution path with a plan-only executor.
func dryRun(ctx context.Context, w io.Writer, rs *rules.RuleSet, set *actions.Set, deps *actions.Deps, ev *uevent.Event, dev rules.Device) {
	printEvent(w, ev, dev)
	fmt.Fprintf(w, "\nrules: %s (%d)\n", rs.File, len(rs.Rules))
	p := &planPrinter{w: w, rs: rs, ev: ev, results: rs.Match(ev, dev)}
	var matched []*rules.Rule
	for _, res := range p.results {
		if res.Status == rules.Matched {
			matched = append(matched, res.Rule)
		}
	}
	set.Run(ctx, ev, dev, matched, p)
	p.rulesUpTo(len(rs.Rules))
	p.printRemoval()
	if deps.MountErr != nil {
		fmt.Fprintf(w, "\n(mounts not planned: %v)\n", deps.MountErr)
	}
	fmt.Fprintf(w, "\n%d of %d %s matched; nothing was run, mounted or written\n", len(matched), len(rs.Rules), plural(len(rs.Rules), "rule", "rules"))
}

func printEvent(w io.Writer, ev *uevent.Event, dev rules.Device) {
	fmt.Fprintf(w, "event: %s %s (%s)\n", ev.Action, display(ev.DevPath), display(ev.Subsystem))
	for _, p := range ev.Props {
		fmt.Fprintf(w, "  %s=%s\n", p.Key, display(p.Value))
	}
	fmt.Fprintf(w, "  source=%s\n", ev.Source)
	if ev.Subsystem == "block" {
		fs := dev.FS()
		fmt.Fprintf(w, "  fs.type=%s fs.usage=%s fs.label=%s fs.uuid=%s fs.version=%s\n",
			quoteArg(fs.Type), quoteArg(fs.Usage), quoteArg(fs.Label), quoteArg(fs.UUID), quoteArg(fs.Version))
	}
}

// planSet builds the rules' actions with a plan-only executor, its mounter
// set up as the daemon sets up its own (the rules' mount_root,
// <state_dir>/mounts.json, the real /proc, /etc/fstab and helpers).
func planSet(rs *rules.RuleSet) (*actions.Set, *actions.Deps, error) {
	deps := &actions.Deps{PlanOnly: true}
	deps.Mounter, deps.MountErr = mount.NewMounter(mount.Config{
		MountRoot: rs.Settings.MountRoot,
		StatePath: filepath.Join(rs.Settings.StateDir, "mounts.json"),
		PlanOnly:  true,
	})
	set, err := actions.Build(rs, deps)
	return set, deps, err
}
