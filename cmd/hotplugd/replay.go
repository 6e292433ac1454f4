package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hotplugd/hotplugd/internal/replay"
	"github.com/hotplugd/hotplugd/internal/rules"
)

// replayFlags are the flags of `hotplugd test --replay`.
type replayFlags struct {
	config, events, expect string
	update                 bool
}

// runReplay is `hotplugd test --replay`: the recorded events in order
// through the rules, printed, or compared with --expect (exit 1 when
// they differ), or written to it with --update. Exit status 2 when an
// input cannot be used.
func runReplay(ctx context.Context, f replayFlags, stdout, stderr io.Writer) error {
	rs, err := loadRules(f.config, stderr)
	if err != nil {
		return exitError(2)
	}
	r, err := replay.New(rs)
	if err != nil {
		fmt.Fprintf(stderr, "hotplugd test: %v\n", err)
		return exitError(2)
	}
	defer r.Close()
	file, err := os.Open(f.events)
	if err != nil {
		fmt.Fprintf(stderr, "hotplugd test: %v\n", err)
		return exitError(2)
	}
	defer file.Close()
	var sink outcomeSink
	switch {
	case f.update:
		sink = &updateSink{u: replay.NewUpdater(), path: f.expect}
	case f.expect != "":
		x, err := replay.ReadExpectations(f.expect)
		if err != nil {
			fmt.Fprintf(stderr, "hotplugd test: %v\n", err)
			return exitError(2)
		}
		sink = &expectSink{x: x, path: f.expect}
	default:
		sink = &printSink{rs: rs}
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	rd := replay.NewReader(file, f.events)
	for {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			w.Flush()
			fmt.Fprintf(stderr, "hotplugd test: %v\n", err)
			return exitError(2)
		}
		sink.add(w, r.Replay(ctx, ev))
	}
	return sink.end(w, stderr)
}

// outcomeSink is what the replay does with each outcome.
type outcomeSink interface {
	add(w io.Writer, o replay.Outcome)
	// end reports at the end and returns the exit status.
	end(w *bufio.Writer, stderr io.Writer) error
}

// printSink prints each outcome.
type printSink struct {
	rs              *rules.RuleSet
	events, matched int
}

func (s *printSink) add(w io.Writer, o replay.Outcome) {
	s.events++
	if len(o.Matched) > 0 {
		s.matched++
	}
	printOutcome(w, s.rs, &o)
}

func (s *printSink) end(w *bufio.Writer, _ io.Writer) error {
	fmt.Fprintf(w, "\n%d %s, %d matched a rule; nothing was run, mounted or written\n",
		s.events, plural(s.events, "event", "events"), s.matched)
	return nil
}

// expectSink prints how outcomes differ from their expectations, once
// the file is known to be of the recording.
type expectSink struct {
	x      *replay.Expectations
	path   string
	events int
	diffs  []string
}

func (s *expectSink) add(_ io.Writer, o replay.Outcome) {
	s.events++
	if d := s.x.Check(&o); d != nil {
		s.diffs = append(s.diffs, d.String())
	}
}

func (s *expectSink) end(w *bufio.Writer, stderr io.Writer) error {
	if err := s.x.Finish(); err != nil {
		fmt.Fprintf(stderr, "hotplugd test: %v\n", err)
		return exitError(2)
	}
	if len(s.diffs) > 0 {
		fmt.Fprint(w, strings.Join(s.diffs, ""))
		fmt.Fprintf(w, "%s: %d of %d %s differ\n", s.path, len(s.diffs), s.events, plural(s.events, "event", "events"))
		return exitError(1)
	}
	fmt.Fprintf(w, "%s: all %d %s agree\n", s.path, s.events, plural(s.events, "event", "events"))
	return nil
}

// updateSink writes the expectations of what the rules do now.
type updateSink struct {
	u      *replay.Updater
	path   string
	events int
}

func (s *updateSink) add(_ io.Writer, o replay.Outcome) {
	s.events++
	s.u.Add(o)
}

func (s *updateSink) end(w *bufio.Writer, stderr io.Writer) error {
	if err := s.u.Write(s.path); err != nil {
		fmt.Fprintf(stderr, "hotplugd test: %v\n", err)
		return exitError(2)
	}
	fmt.Fprintf(w, "wrote %s: %d of %d %s match a rule or act\n", s.path, s.u.Events(), s.events, plural(s.events, "event", "events"))
	return nil
}

// printOutcome prints one event: where it is, its filesystem, each
// matched rule with what its actions would do, and the removal.
func printOutcome(w io.Writer, rs *rules.RuleSet, o *replay.Outcome) {
	ev := &o.Rec.Event
	fmt.Fprintf(w, "\nevent %d (line %d): %s %s (%s), seqnum %d\n", o.Index, o.Line, ev.Action, display(ev.DevPath), display(ev.Subsystem), ev.Seqnum)
	switch o.Facts {
	case replay.NotRecorded:
		fmt.Fprintln(w, "  (not recorded with --walk: attr, attrs and has_parent answer \"\" and false, fs.* only from ID_FS_* properties)")
	case replay.Unknown:
		fmt.Fprintln(w, "  (no earlier event of this device: attr, attrs and has_parent answer \"\" and false, fs.* only from ID_FS_* properties)")
	}
	if ev.MediaChange() {
		fmt.Fprintln(w, "  (a medium change: the daemon also unmounts what it mounted from the disk, and runs a new medium through the rules as an add; the replay does not)")
	}
	if ev.Subsystem == "block" {
		fmt.Fprintf(w, "  fs.type=%s fs.usage=%s fs.label=%s fs.uuid=%s fs.version=%s\n",
			quoteArg(o.FS.Type), quoteArg(o.FS.Usage), quoteArg(o.FS.Label), quoteArg(o.FS.UUID), quoteArg(o.FS.Version))
	}
	for _, f := range o.Failed {
		fmt.Fprintf(w, "  rule %s (%s): not matched (error: %v)\n", f.Rule.Name, f.Rule.Pos, f.Err)
	}
	if len(o.Matched) == 0 && len(o.Steps) == 0 {
		fmt.Fprintln(w, "  no rule matched")
	}
	steps := &indentWriter{w: w, prefix: "  "}
	for _, r := range o.Matched {
		fmt.Fprintf(w, "  rule %s (%s): matched\n", r.Name, r.Pos)
		if len(r.Actions) == 0 {
			fmt.Fprintln(w, "    (no actions: the match is only logged)")
		}
		printSteps(steps, o, r)
	}
	if len(o.Steps) > 0 && o.Steps[len(o.Steps)-1].Rule == nil {
		fmt.Fprintln(w, "  removal: what hotplugd mounted or unlocked from a removed block device is always undone")
		printSteps(steps, o, nil)
	}
}

// printSteps prints the steps of rule r (nil: of the removal).
func printSteps(w io.Writer, o *replay.Outcome, r *rules.Rule) {
	for _, st := range o.Steps {
		if st.Rule != r {
			continue
		}
		printStep(w, st.Step, st.Err)
		if st.Left > 0 {
			fmt.Fprintf(w, "  (the rule's %d later %s would not run)\n", st.Left, plural(st.Left, "action", "actions"))
		}
	}
}

// indentWriter writes each line after prefix.
type indentWriter struct {
	w       io.Writer
	prefix  string
	midLine bool
}

func (iw *indentWriter) Write(p []byte) (int, error) {
	var b strings.Builder
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line == "" {
			continue
		}
		if !iw.midLine {
			b.WriteString(iw.prefix)
		}
		b.WriteString(line)
		iw.midLine = !strings.HasSuffix(line, "\n")
	}
	if _, err := io.WriteString(iw.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}
