package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/hotplugd/hotplugd/internal/actions"
	"github.com/hotplugd/hotplugd/internal/device"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// maxEventFile bounds what --event reads: a uevent is at most 8 KiB on
// the wire, its JSON a few times that.
const maxEventFile = 64 << 10

// sysRoot is where --syspath paths must lead.
const sysRoot = "/sys"

// runTest is the dry run: one event through the rules, printing every
// rule's outcome and what each matched action would do. It runs,
// mounts and writes nothing. (--syspath probes the device's filesystem
// with blkid, read-only, as the daemon would.)
func runTest(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", defaultRulesPath, "the rules `FILE`")
	eventFile := fs.String("event", "", "read the event from `FILE`: a raw uevent (NUL- or newline-separated\nKEY=VALUE, optionally after an action@devpath line) or one object as hotplugd monitor --json prints it")
	syspath := fs.String("syspath", "", "build the event from the present device at `PATH` (/sys/...), with its sysfs\nattributes, parents and filesystem")
	action := fs.String("action", "", "the event's `ACTION` (default: add, or as recorded in --event)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: hotplugd test [--config FILE] (--event FILE | --syspath /sys/... [--action A] | KEY=VALUE...)\n\n"+
			"Feed one event through the rules and print, for every rule, whether it\n"+
			"matched and what each action of a matched rule would do. Nothing is run,\n"+
			"mounted or written. KEY=VALUE arguments build the event: DEVPATH and\n"+
			"SUBSYSTEM are required, ACTION defaults to add.\n\nflags:")
		fs.PrintDefaults()
	}
	kv, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return exitError(2)
	}
	sources := 0
	for _, set := range []bool{*eventFile != "", *syspath != "", len(kv) > 0} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		fmt.Fprintln(stderr, "hotplugd test: give exactly one of --event FILE, --syspath PATH or KEY=VALUE arguments")
		fs.Usage()
		return exitError(2)
	}
	rs, err := loadRules(*config, stderr)
	if err != nil {
		return err
	}

	var ev uevent.Event
	var dev rules.Device
	switch {
	case *eventFile != "":
		ev, err = readEventFile(*eventFile, *action)
	case *syspath != "":
		var done func()
		ev, dev, done, err = syspathEvent(*syspath, *action, stderr)
		if done != nil {
			defer done()
		}
	default:
		ev, err = eventFromArgs(kv, *action)
	}
	if err != nil {
		fmt.Fprintf(stderr, "hotplugd test: %v\n", err)
		return exitError(1)
	}
	ev.Source = uevent.SourceTest
	if dev == nil {
		dev = rules.EventOnly{Event: &ev}
	}
	dryRun(stdout, rs, &ev, dev)
	return nil
}

// parseInterleaved parses flags that may come before, between and after
// positional arguments, and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func readEventFile(path, action string) (uevent.Event, error) {
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
	ev, err := parseEvent(data, action)
	if err != nil {
		return uevent.Event{}, fmt.Errorf("%s: %w", path, err)
	}
	return ev, nil
}

// udevadmHeader is the first line of an event printed by `udevadm
// monitor --property` ("KERNEL[123.4] add /devices/... (block)"), which
// parseEvent skips so such output can be pasted into a file.
var udevadmHeader = regexp.MustCompile(`^(KERNEL|UDEV) *\[[0-9.]+\] `)

// parseEvent reads an event in any of the forms --event accepts: a
// `monitor --json` object; a message captured from the udev netlink
// group; or KEY=VALUE properties separated by NULs (a kernel message,
// with its action@devpath header) or by newlines (a hand-written file,
// where '#' starts a comment line). SEQNUM may be left out (it is then 0),
// and action, when not "", replaces ACTION.
func parseEvent(data []byte, action string) (uevent.Event, error) {
	if bytes.HasPrefix(data, []byte("libudev\x00")) {
		ev, err := uevent.Parse(data)
		if err != nil {
			return uevent.Event{}, err
		}
		return withAction(ev.Props, action)
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		var ev uevent.Event
		if err := json.Unmarshal(withSeqnum(t), &ev); err != nil {
			return uevent.Event{}, fmt.Errorf("JSON event: %w", err)
		}
		return withAction(ev.Props, action)
	}
	sep, text := "\n", string(data)
	if bytes.IndexByte(data, 0) >= 0 {
		sep, text = "\x00", strings.TrimSuffix(text, "\x00")
	}
	var props []uevent.Property
	var header string
	for i, line := range strings.Split(text, sep) {
		line = strings.TrimSuffix(line, "\r")
		if sep == "\n" && (strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if len(props) == 0 && header == "" {
			if at := strings.IndexByte(line, '@'); at > 0 && (!ok || at < len(k)) {
				header = line
				continue
			}
			if udevadmHeader.MatchString(line) {
				header = "-"
				continue
			}
		}
		if !ok {
			return uevent.Event{}, fmt.Errorf("line %d: %q is not KEY=VALUE", i+1, line)
		}
		props = append(props, uevent.Property{Key: k, Value: v})
	}
	if h, d, ok := strings.Cut(header, "@"); ok {
		var err error
		if props, err = fromHeader(props, "ACTION", h); err == nil {
			props, err = fromHeader(props, "DEVPATH", d)
		}
		if err != nil {
			return uevent.Event{}, err
		}
	}
	return withAction(props, action)
}

// withSeqnum gives a `monitor --json` object without a sequence number
// SEQNUM 0, since a hand-written event has none. Anything it cannot
// read it leaves to the decoder to reject.
func withSeqnum(obj []byte) []byte {
	var raw map[string]json.RawMessage
	if json.Unmarshal(obj, &raw) != nil {
		return obj
	}
	env := map[string]string{}
	if e, ok := raw["env"]; ok && json.Unmarshal(e, &env) != nil {
		return obj
	}
	var seqnum uint64
	if s, ok := raw["seqnum"]; ok && json.Unmarshal(s, &seqnum) != nil {
		return obj
	}
	if _, ok := env["SEQNUM"]; ok || seqnum != 0 {
		return obj
	}
	env["SEQNUM"] = "0"
	raw["env"], _ = json.Marshal(env)
	out, err := json.Marshal(raw)
	if err != nil {
		return obj
	}
	return out
}

// fromHeader adds key=value from the action@devpath header when the
// properties lack it, and checks they agree when they have it.
func fromHeader(props []uevent.Property, key, value string) ([]uevent.Property, error) {
	for _, p := range props {
		if p.Key == key {
			if p.Value != value {
				return nil, fmt.Errorf("%w: header %s %q, property %q", uevent.ErrHeaderMismatch, key, value, p.Value)
			}
			return props, nil
		}
	}
	return append([]uevent.Property{{Key: key, Value: value}}, props...), nil
}

// eventFromArgs builds an event from KEY=VALUE arguments.
func eventFromArgs(args []string, action string) (uevent.Event, error) {
	var props []uevent.Property
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return uevent.Event{}, fmt.Errorf("argument %q is not KEY=VALUE", a)
		}
		props = append(props, uevent.Property{Key: k, Value: v})
	}
	if action == "" && !hasKey(props, "ACTION") {
		action = "add"
	}
	return withAction(props, action)
}

// withAction checks props as an event, after replacing ACTION with
// action (when not "") and adding SEQNUM=0 when it is missing.
func withAction(props []uevent.Property, action string) (uevent.Event, error) {
	out := make([]uevent.Property, 0, len(props)+2)
	for _, p := range props {
		if p.Key == "ACTION" && action != "" {
			continue
		}
		out = append(out, p)
	}
	if action != "" {
		out = append([]uevent.Property{{Key: "ACTION", Value: action}}, out...)
	}
	if !hasKey(out, "SEQNUM") {
		out = append(out, uevent.Property{Key: "SEQNUM", Value: "0"})
	}
	if len(out) > uevent.MaxUdevProperties {
		return uevent.Event{}, fmt.Errorf("%w: %d, limit %d", uevent.ErrTooManyProperties, len(out), uevent.MaxUdevProperties)
	}
	return uevent.FromProps(out)
}

func hasKey(props []uevent.Property, key string) bool {
	for _, p := range props {
		if p.Key == key {
			return true
		}
	}
	return false
}

// syspathEvent builds the event of the device at syspath from its
// uevent file, as coldplug does, and returns its Device for the rules.
// done releases it.
func syspathEvent(syspath, action string, stderr io.Writer) (uevent.Event, rules.Device, func(), error) {
	real, err := filepath.EvalSymlinks(syspath)
	if err != nil {
		return uevent.Event{}, nil, nil, err
	}
	rel, err := filepath.Rel(sysRoot, real)
	if err != nil || !strings.HasPrefix(rel, "devices/") {
		return uevent.Event{}, nil, nil, fmt.Errorf("%s is not a device under %s/devices", syspath, sysRoot)
	}
	devpath := "/" + rel
	link, err := os.Readlink(filepath.Join(real, "subsystem"))
	if err != nil {
		return uevent.Event{}, nil, nil, fmt.Errorf("%s has no subsystem: the kernel sends no events for it", syspath)
	}
	m, err := device.New(device.Config{
		SysRoot: sysRoot,
		Logger:  slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return uevent.Event{}, nil, nil, err
	}
	// Enumerate builds each event exactly as coldplug feeds it to the
	// daemon; a device it could not read is simply not found below.
	evs, _ := m.Enumerate(filepath.Base(link))
	for _, ev := range evs {
		if ev.DevPath != devpath {
			continue
		}
		out, err := withAction(ev.Props, action)
		if err != nil {
			m.Close()
			return uevent.Event{}, nil, nil, err
		}
		// The device is present, so whatever the action, the rules'
		// questions are answered from sysfs as they were for its add
		// (on a real remove the device database answers the same).
		d := m.For(ev)
		return out, d, func() { d.Done(); m.Close() }, nil
	}
	m.Close()
	return uevent.Event{}, nil, nil, fmt.Errorf("cannot read the uevent file of %s", syspath)
}

// dryRun prints the event, then every rule with its outcome and, for a
// matched rule, what each of its actions would do.
func dryRun(w io.Writer, rs *rules.RuleSet, ev *uevent.Event, dev rules.Device) {
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
	fmt.Fprintf(w, "\nrules: %s (%d)\n", rs.File, len(rs.Rules))

	results := rs.Match(ev, dev)
	matched := 0
	var stoppedBy string
	for i, r := range rs.Rules {
		fmt.Fprintf(w, "\nrule %s (%s): ", r.Name, r.Pos)
		if i >= len(results) {
			fmt.Fprintf(w, "not reached: rule %s matched and has continue: false\n", stoppedBy)
			continue
		}
		res := results[i]
		switch res.Status {
		case rules.NotMatched:
			fmt.Fprintln(w, "not matched")
		case rules.Skipped:
			fmt.Fprintf(w, "not matched (pre-filter: %s)\n", skipReason(r, ev, res.Reason))
		case rules.Failed:
			fmt.Fprintf(w, "not matched (error: %v)\n", res.Err)
		case rules.Matched:
			matched++
			fmt.Fprintln(w, "matched")
			if !r.Continue {
				stoppedBy = r.Name
			}
			describeActions(w, rs, r, ev, dev)
		}
	}
	fmt.Fprintf(w, "\n%d of %d %s matched; nothing was run, mounted or written\n", matched, len(rs.Rules), plural(len(rs.Rules), "rule", "rules"))
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

// mountPointPlaceholder stands for the mount point of an unmount in a
// dry run: which mount hotplugd recorded for the device is known only
// when the event really comes. (A mount's point is planned; see
// describeMount.)
const mountPointPlaceholder = "<mount point>"

// describeActions prints what each action of a matched rule would do.
func describeActions(w io.Writer, rs *rules.RuleSet, r *rules.Rule, ev *uevent.Event, dev rules.Device) {
	if len(r.Actions) == 0 {
		fmt.Fprintln(w, "  (no actions: the match is only logged)")
		return
	}
	env := rules.NewEnv(ev, dev)
	for i, a := range r.Actions {
		ok := true
		switch a := a.(type) {
		case *rules.RunSpec:
			ok = describeRun(w, a, env)
		case *rules.MountSpec:
			path := describeMount(w, rs, r.Name, a, ev, dev)
			env.SetMountPath(path)
			ok = path != ""
		case *rules.UnmountSpec:
			fmt.Fprintf(w, "  unmount %s: what hotplugd mounted for this device, if anything\n", devnodeOrNone(ev))
			env.SetMountPath(filepath.Join(rs.Settings.MountRoot, mountPointPlaceholder))
		case *rules.NotifySpec:
			ok = describeNotify(w, a, env)
		default:
			fmt.Fprintf(w, "  %s\n", a.Kind())
		}
		// As in the daemon, a failed or skipped action ends the rule.
		if !ok && i < len(r.Actions)-1 {
			fmt.Fprintf(w, "  (the rule's %d later %s would not run)\n", len(r.Actions)-1-i, plural(len(r.Actions)-1-i, "action", "actions"))
			return
		}
	}
}

func describeRun(w io.Writer, s *rules.RunSpec, env *rules.Env) bool {
	argv := make([]string, 0, len(s.Argv))
	for i, t := range s.Argv {
		v, err := t.Render(env)
		if err != nil {
			fmt.Fprintf(w, "  run: would fail: argv[%d]: %v\n", i, err)
			return false
		}
		argv = append(argv, quoteArg(v))
	}
	user := "the daemon's user"
	if s.User != nil {
		user = s.User.Name
	}
	fmt.Fprintf(w, "  run %s\n    as %s, timeout %s\n", strings.Join(argv, " "), user, s.Timeout)
	ok := true
	for _, name := range sortedKeys(s.Env) {
		v, err := s.Env[name].Render(env)
		if err != nil {
			fmt.Fprintf(w, "    env %s: would fail: %v\n", name, err)
			ok = false
			continue
		}
		fmt.Fprintf(w, "    env %s=%s\n", name, quoteArg(v))
	}
	return ok
}

// describeMount prints what the mount action would do with the event's
// device on this machine, as the daemon's mounter plans it (the same
// function decides both): the mount point and the whole option string,
// or why the device would be skipped or the mount fail. It creates,
// mounts and writes nothing. It returns the mount point, which the
// actions after it see as {{ mount.path }}: "" when nothing would be
// mounted, as in the daemon.
func describeMount(w io.Writer, rs *rules.RuleSet, rule string, s *rules.MountSpec, ev *uevent.Event, dev rules.Device) string {
	owner := "root"
	if s.Owner != nil {
		owner = s.Owner.Name
	}
	p, err := planMount(rs, rule, s, ev, dev)
	if err == nil {
		how := "mount(2)"
		switch {
		case p.Helper != "":
			how = quoteArg(p.Helper)
		case p.Driver != p.FSType:
			how = "mount(2) as " + p.Driver
		}
		fmt.Fprintf(w, "  mount %s at %s\n    %s through %s, options %s\n    owner %s, timeout %s\n",
			devnodeOrNone(ev), quoteArg(p.MountPoint), p.FSType, how, p.Options, owner, s.Timeout)
		for _, ig := range p.Ignored {
			fmt.Fprintf(w, "    ignored: %s\n", ig)
		}
		return p.MountPoint
	}
	opts := []string{"nosuid", "nodev"}
	if !s.Exec {
		opts = append(opts, "noexec")
	}
	opts = append(opts, s.Options...)
	fmt.Fprintf(w, "  mount %s\n    options %s and the filesystem's defaults, owner %s, timeout %s\n",
		devnodeOrNone(ev), strings.Join(opts, ","), owner, s.Timeout)
	// The mounter's errors name the device node, which is on the line
	// above. They may quote paths of mounts made by others: display
	// escapes what a terminal would interpret.
	msg := display(strings.TrimPrefix(err.Error(), "mount "+ev.DevNode()+": "))
	if ev.Get("MAJOR") == "" || ev.Get("MINOR") == "" {
		msg += " (add MAJOR= and MINOR= to the event: the kernel's events of block devices carry them)"
	}
	if errors.Is(err, actions.ErrSkipped) {
		fmt.Fprintf(w, "    would be skipped: %s\n", strings.TrimPrefix(msg, "skipped: "))
	} else {
		fmt.Fprintf(w, "    would fail: %s\n", msg)
	}
	return ""
}

// planMount asks a plan-only mounter, set up as the daemon sets up its
// own (the rules' mount_root, <state_dir>/mounts.json, the real /proc,
// /etc/fstab and helpers), what the mount action would do.
func planMount(rs *rules.RuleSet, rule string, s *rules.MountSpec, ev *uevent.Event, dev rules.Device) (actions.Plan, error) {
	m, err := actions.NewMounter(actions.MounterConfig{
		MountRoot: rs.Settings.MountRoot,
		StatePath: filepath.Join(rs.Settings.StateDir, "mounts.json"),
		PlanOnly:  true,
	})
	if err != nil {
		return actions.Plan{}, err
	}
	return actions.PlanMount(m, s, rule, ev, dev)
}

// describeNotify shows the rendered message and each target, one a line.
// A webhook shows its URL without the password and its header names
// without their values, which may be secrets.
func describeNotify(w io.Writer, s *rules.NotifySpec, env *rules.Env) bool {
	msg, err := s.Message.Render(env)
	if err != nil {
		fmt.Fprintf(w, "  notify: would fail: %v\n", err)
		return false
	}
	fmt.Fprintf(w, "  notify %s\n    to log\n", strconv.Quote(msg))
	for _, t := range s.Targets {
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
	return true
}

func devnodeOrNone(ev *uevent.Event) string {
	if n := ev.DevNode(); n != "" {
		return quoteArg(n)
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
