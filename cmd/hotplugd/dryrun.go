package main

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/hotplugd/hotplugd/internal/actions"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// planPrinter prints the dry run as actions.Set.Run reports it: every
// rule in file order with its outcome, the steps of the matched ones, and
// the unmount that follows a removal.
type planPrinter struct {
	w         io.Writer
	rs        *rules.RuleSet
	ev        *uevent.Event
	results   []rules.Result
	next      int // index of the next rule to print
	removal   *actions.Step
	removeErr error
}

// rulesUpTo prints the outcome of the rules before index end that are not
// printed yet.
func (p *planPrinter) rulesUpTo(end int) {
	for ; p.next < end; p.next++ {
		r := p.rs.Rules[p.next]
		fmt.Fprintf(p.w, "\nrule %s (%s): ", r.Name, r.Pos)
		if p.next >= len(p.results) {
			fmt.Fprintf(p.w, "not reached: rule %s matched and has continue: false\n", p.results[len(p.results)-1].Rule.Name)
			continue
		}
		res := p.results[p.next]
		switch res.Status {
		case rules.NotMatched:
			fmt.Fprintln(p.w, "not matched")
		case rules.Skipped:
			fmt.Fprintf(p.w, "not matched (pre-filter: %s)\n", skipReason(r, p.ev, res.Reason))
		case rules.Failed:
			fmt.Fprintf(p.w, "not matched (error: %v)\n", res.Err)
		case rules.Matched:
			fmt.Fprintln(p.w, "matched")
			if len(r.Actions) == 0 {
				fmt.Fprintln(p.w, "  (no actions: the match is only logged)")
			}
		}
	}
}

// Matched prints the rules up to r, and r.
func (p *planPrinter) Matched(r *rules.Rule) {
	for i, x := range p.rs.Rules {
		if x == r {
			p.rulesUpTo(i + 1)
			return
		}
	}
}

// Did prints one step; the removal's is kept for the end.
func (p *planPrinter) Did(r *rules.Rule, st actions.Step, err error) {
	if r == nil {
		p.removal, p.removeErr = &st, err
		return
	}
	printStep(p.w, st, err)
}

// Ended says which actions a failed or skipped one kept from running.
func (p *planPrinter) Ended(_ *rules.Rule, left int) {
	fmt.Fprintf(p.w, "  (the rule's %d later %s would not run)\n", left, plural(left, "action", "actions"))
}

func (p *planPrinter) printRemoval() {
	if p.removal == nil {
		return
	}
	fmt.Fprintln(p.w, "\nremoval: what hotplugd mounted or unlocked from a removed block device is always undone")
	printStep(p.w, *p.removal, p.removeErr)
}

func skipReason(r *rules.Rule, ev *uevent.Event, field string) string {
	actions, subsystems := r.Requires()
	if field == "subsystem" {
		return fmt.Sprintf("subsystem is %s, the rule needs %s", quoteArg(ev.Subsystem), strings.Join(subsystems, " or "))
	}
	if len(actions) == 0 {
		return "the rule can match no action"
	}
	return fmt.Sprintf("action is %s, the rule needs %s", ev.Action, strings.Join(actions, " or "))
}

// printStep shows what one action would do, or why it would not.
func printStep(w io.Writer, st actions.Step, err error) {
	switch st.Kind {
	case "run":
		printRun(w, st, err)
	case "mount":
		printMount(w, st, err)
	case "unmount":
		printUnmount(w, st, err)
	case "notify":
		printNotify(w, st, err)
	case "unlock":
		printUnlock(w, st, err)
	default:
		fmt.Fprintf(w, "  %s\n", st.Kind)
	}
}

// printUnmount shows what an unmount (or a removal) would undo: the
// mount of the device, or of the cleartext of a mapping on it, and the
// cryptsetup command that would close the mapping.
func printUnmount(w io.Writer, st actions.Step, err error) {
	switch {
	case err != nil:
		fmt.Fprintf(w, "  unmount %s\n    would fail: %s\n", nodeOrNone(st.Devnode), display(err.Error()))
	case st.Mapping != "" && st.MountPath != "":
		fmt.Fprintf(w, "  unmount the cleartext of %s from %s, then close its mapping %s (deferred while in use)\n",
			nodeOrNone(st.Devnode), quoteArg(st.MountPath), quoteArg(st.Mapping))
	case st.Mapping != "":
		fmt.Fprintf(w, "  close the mapping %s of %s (deferred while in use)\n", quoteArg(st.Mapping), nodeOrNone(st.Devnode))
	case st.MountPath != "":
		fmt.Fprintf(w, "  unmount %s from %s\n", nodeOrNone(st.Devnode), quoteArg(st.MountPath))
	default:
		fmt.Fprintf(w, "  unmount %s: what hotplugd mounted for this device, if anything\n", nodeOrNone(st.Devnode))
	}
	if err == nil && st.Argv != nil {
		fmt.Fprintf(w, "    run %s\n", argvLine(st.Argv))
	}
}

// argvLine shows an argv as one line, each argument as quoteArg shows it.
func argvLine(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = quoteArg(a)
	}
	return strings.Join(q, " ")
}

func printRun(w io.Writer, st actions.Step, err error) {
	if err != nil {
		fmt.Fprintf(w, "  run: would fail: %v\n", err)
		return
	}
	user := "the daemon's user"
	if st.User != "" {
		user = st.User
	}
	fmt.Fprintf(w, "  run %s\n    as %s, timeout %s\n", argvLine(st.Argv), user, st.Timeout)
	for _, kv := range st.Env {
		k, v, _ := strings.Cut(kv, "=")
		fmt.Fprintf(w, "    env %s=%s\n", k, quoteArg(v))
	}
}

// printMount shows the mount point and the whole option string, as the
// daemon's mounter plans them, or why the device would be skipped or the
// mount fail.
func printMount(w io.Writer, st actions.Step, err error) {
	owner := "root"
	if st.User != "" {
		owner = st.User
	}
	if p := st.Mount; err == nil && p != nil {
		how := "mount(2)"
		switch {
		case p.Helper != "":
			how = quoteArg(p.Helper)
		case p.Driver != p.FSType:
			how = "mount(2) as " + p.Driver
		}
		fmt.Fprintf(w, "  mount %s at %s\n    %s through %s, options %s\n    owner %s, timeout %s\n",
			nodeOrNone(st.Devnode), quoteArg(p.MountPoint), p.FSType, how, p.Options, owner, st.Timeout)
		for _, ig := range p.Ignored {
			fmt.Fprintf(w, "    ignored: %s\n", ig)
		}
		return
	}
	if err == nil {
		fmt.Fprintf(w, "  mount %s at %s\n    what is inside is probed once it is unlocked\n    owner %s, timeout %s\n",
			nodeOrNone(st.Devnode), quoteArg(st.MountPath), owner, st.Timeout)
		return
	}
	fmt.Fprintf(w, "  mount %s\n    owner %s, timeout %s\n", nodeOrNone(st.Devnode), owner, st.Timeout)
	// The mounter's errors name the device node, which is on the line
	// above. They may quote paths of mounts made by others: display
	// escapes what a terminal would interpret.
	msg := display(strings.TrimPrefix(err.Error(), "mount "+st.Devnode+": "))
	if errors.Is(err, actions.ErrSkipped) {
		fmt.Fprintf(w, "    would be skipped: %s\n", strings.TrimPrefix(msg, "skipped: "))
	} else {
		fmt.Fprintf(w, "    would fail: %s\n", msg)
	}
}

// printUnlock shows the cryptsetup command an unlock would run and the
// mapping it would open; the keyfile by its path, which is all a Step
// knows of it.
func printUnlock(w io.Writer, st actions.Step, err error) {
	if err != nil {
		fmt.Fprintf(w, "  unlock %s\n    would fail: %s\n", nodeOrNone(st.Devnode), display(err.Error()))
		return
	}
	fmt.Fprintf(w, "  unlock %s as %s: %s\n    run %s\n    key from %s on stdin, timeout %s\n",
		nodeOrNone(st.Devnode), quoteArg(st.Mapping), quoteArg(st.Cleartext), argvLine(st.Argv),
		quoteArg(st.Keyfile), st.Timeout)
}

// printNotify shows the rendered message and each target, one a line. A
// webhook shows its URL without the password and its header names
// without their values, which may be secrets.
func printNotify(w io.Writer, st actions.Step, err error) {
	if err != nil {
		fmt.Fprintf(w, "  notify: would fail: %v\n", err)
		return
	}
	fmt.Fprintf(w, "  notify %s\n    to log\n", strconv.Quote(st.Message))
	for _, t := range st.Targets {
		switch t := t.(type) {
		case *rules.LogTarget:
		case *rules.WebhookTarget:
			fmt.Fprintf(w, "    to webhook POST %s, timeout %s, up to %d attempts", t.URL.Redacted(), t.Timeout, t.MaxAttempts)
			if len(t.Headers) > 0 {
				fmt.Fprintf(w, ", headers %s (values not shown)", strings.Join(sortedKeys(t.Headers), ", "))
			}
			fmt.Fprintln(w)
		case *rules.DesktopTarget:
			fmt.Fprintln(w, "    to desktop: each active graphical session, as its user")
		default:
			fmt.Fprintf(w, "    to %s\n", t.Kind())
		}
	}
}

func nodeOrNone(devnode string) string {
	if devnode != "" {
		return quoteArg(devnode)
	}
	return "(no device node)"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// quoteArg shows s as one argument: bare when it is made of characters a
// shell would take literally, else Go-quoted (which also escapes control
// characters a device may have put in it).
func quoteArg(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("@%+=:,./_-", r)) {
			return strconv.Quote(s)
		}
	}
	return s
}

// display shows a property value as is unless it holds characters that
// are not printable (a terminal escape, a newline) or space at its ends.
func display(s string) string {
	if strings.TrimSpace(s) != s || strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) {
		return strconv.Quote(s)
	}
	return s
}
