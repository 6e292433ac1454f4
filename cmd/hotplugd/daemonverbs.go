package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/hotplugd/hotplugd/internal/control"
)

// socketFlag adds --socket to a verb that asks the daemon.
func socketFlag(fs *flag.FlagSet) *string {
	return fs.String("socket", control.DefaultSocket, "the daemon's control `PATH`")
}

// daemonError says in one line why asking the daemon failed; exit status
// code when none answers, 1 otherwise.
func daemonError(stderr io.Writer, verb string, err error, code int) error {
	fmt.Fprintf(stderr, "hotplugd %s: %v\n", verb, err)
	if errors.Is(err, control.ErrNoDaemon) {
		return exitError(code)
	}
	return exitError(1)
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// runStatus is `hotplugd status`: what the daemon is doing, like
// `systemctl status`; exit 3 when no daemon answers.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "status [--json] [--socket PATH]",
		"Show what the running daemon is doing: its rules file, events and drops,\n"+
			"queue, rules with their counts, and the filesystems it mounted.\n"+
			"Exit status 3 when no daemon answers.", stderr)
	asJSON := fs.Bool("json", false, "print the status as JSON")
	socket := socketFlag(fs)
	if _, exit, ok := parseFlags(fs, args, false); !ok {
		return exit
	}
	s, err := control.NewClient(*socket).Status(ctx)
	if err != nil {
		return daemonError(stderr, "status", err, 3)
	}
	if *asJSON {
		printJSON(stdout, s)
		return nil
	}
	printStatus(stdout, s)
	return nil
}

func printStatus(w io.Writer, s control.Status) {
	up := time.Duration(s.UptimeSeconds * float64(time.Second)).Round(time.Second)
	fmt.Fprintf(w, "hotplugd %s, running for %s\n", s.Version, up)
	c := s.Config
	state := "ok"
	if !c.ReloadOK {
		state = "last reload failed: " + firstLine(c.Error) + " (the rules loaded before stay in force)"
	}
	fmt.Fprintf(w, "  config:  %s, loaded %s; %s\n", display(c.Path), c.LoadedAt.Local().Format(time.DateTime), state)
	dropped := uint64(0)
	for _, n := range s.Events.Dropped {
		dropped += n
	}
	fmt.Fprintf(w, "  events:  %d received%s, %d handled, %d dropped, %d overruns\n",
		s.Events.Received, bySource(s.Events.BySource), s.Events.Handled, dropped, s.Events.Overruns)
	fmt.Fprintf(w, "  queue:   %d of %d, %d running", s.Queue.Depth, s.Queue.Capacity, s.Queue.Running)
	if s.Queue.Stuck > 0 {
		fmt.Fprintf(w, ", %d stuck past their deadline", s.Queue.Stuck)
	}
	fmt.Fprintln(w)
	if s.LeftBehind > 0 {
		fmt.Fprintf(w, "  warning: %d processes left behind, alive after SIGKILL\n", s.LeftBehind)
	}
	printRules(w, s.Rules)
	printMounts(w, s.Mounts)
	if len(s.Mappings) > 0 {
		printMappings(w, s.Mappings)
	}
	if s.Broker != nil {
		printBroker(w, s.Broker)
	}
	if s.LastError != "" {
		fmt.Fprintf(w, "  last error: %s\n", display(s.LastError))
	}
}

func printBroker(w io.Writer, b *control.BrokerStatus) {
	state := "connected"
	if !b.Connected {
		state = "not connected"
	}
	fmt.Fprintf(w, "  broker:  %s, %s; %d queued, %d published, %d dropped\n", display(b.URL), state, b.Queue, b.Published, b.Dropped)
	if !b.Connected && b.LastError != "" {
		fmt.Fprintf(w, "    last error: %s\n", display(b.LastError))
	}
}

func printRules(w io.Writer, rs []control.RuleStatus) {
	fmt.Fprintf(w, "  rules (%d):\n", len(rs))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rs {
		last := "never matched"
		if r.LastMatch != nil {
			last = "last " + r.LastMatch.Local().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "    %s\t%d matches\t%d ok\t%d failed\t%s\n", r.Name, r.Matches, r.ActionsOK, r.ActionsFailed, last)
	}
	tw.Flush()
}

func printMounts(w io.Writer, ms []control.MountStatus) {
	fmt.Fprintf(w, "  mounts (%d):\n", len(ms))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, m := range ms {
		label := m.Label
		if label == "" {
			label = "-"
		}
		fmt.Fprintf(tw, "    %s\t%s\t%s\t%s\tsince %s\trule %s\n", display(m.Devnode), display(label), display(m.FSType),
			display(m.Path), m.Since.Local().Format(time.DateTime), m.Rule)
	}
	tw.Flush()
}

func printMappings(w io.Writer, ms []control.MappingStatus) {
	fmt.Fprintf(w, "  unlocked (%d):\n", len(ms))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, m := range ms {
		path := m.Path
		if path == "" {
			path = "not mounted"
		}
		fmt.Fprintf(tw, "    %s\t%s\tas %s\t%s\tsince %s\trule %s\n", display(m.Backing), display(m.Name), display(m.Device),
			display(path), m.Since.Local().Format(time.DateTime), m.Rule)
	}
	tw.Flush()
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return display(first)
}

// runReload is `hotplugd reload`: through the daemon, synchronously.
func runReload(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload", "reload [--socket PATH]",
		"Reload the rules through the daemon and print the outcome: ok and the\n"+
			"number of rules, or every problem as FILE:LINE:COL: message and exit\n"+
			"status 1, the rules loaded before staying in force.", stderr)
	socket := socketFlag(fs)
	if _, exit, ok := parseFlags(fs, args, false); !ok {
		return exit
	}
	res, err := control.NewClient(*socket).Reload(ctx)
	if err != nil {
		return daemonError(stderr, "reload", err, 1)
	}
	if !res.OK {
		for _, p := range res.Problems {
			fmt.Fprintln(stderr, p)
		}
		fmt.Fprintf(stderr, "hotplugd reload: refused; the %d rules loaded before stay in force\n", res.Rules)
		return exitError(1)
	}
	fmt.Fprintf(stdout, "ok, %d %s\n", res.Rules, plural(res.Rules, "rule", "rules"))
	return nil
}

// runSettle is `hotplugd settle`: like `udevadm settle`, it waits until
// the daemon's queue is empty and no action runs.
func runSettle(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("settle", "settle [--timeout 120s] [--socket PATH]",
		"Wait until the daemon has handled every event it received and no action\n"+
			"runs. Exit status 1 when the timeout passes first.", stderr)
	timeout := fs.Duration("timeout", 120*time.Second, "give up after `D`")
	socket := socketFlag(fs)
	if _, exit, ok := parseFlags(fs, args, false); !ok {
		return exit
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout+30*time.Second)
	defer cancel()
	res, err := control.NewClient(*socket).Settle(ctx, *timeout)
	if err != nil {
		return daemonError(stderr, "settle", err, 1)
	}
	if !res.Settled {
		fmt.Fprintf(stderr, "hotplugd settle: timed out after %s with %d events queued or running\n", *timeout, res.Depth)
		return exitError(1)
	}
	return nil
}

// bySource is " (kernel 10, route 4)" when more than one source counted.
func bySource(m map[string]uint64) string {
	if len(m) < 2 {
		return ""
	}
	parts := make([]string, 0, len(m))
	for _, src := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", src, m[src]))
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
