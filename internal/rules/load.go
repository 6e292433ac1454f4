package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/hotplugd/hotplugd/internal/account"
	"github.com/hotplugd/hotplugd/internal/ratelimit"
)

// MaxFileSize is the largest rules file accepted, in bytes.
const MaxFileSize = 1 << 20

// Load reads and compiles the rules file at path. When the file is not
// valid the error is an Errors listing every problem.
func Load(path string) (*RuleSet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// A FIFO or a device would block or never end.
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	// Read one byte past the limit so Parse sees an oversized file as
	// such without the whole of it being read.
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return Parse(path, data)
}

// Parse compiles a rules file read from name. When data is not valid the
// error is an Errors listing every problem.
func Parse(name string, data []byte) (*RuleSet, error) {
	return parse(name, data, lookupUser)
}

// userLookup resolves a user name (or numeric id); tests replace it.
type userLookup func(name string) (*User, error)

// lookupUser resolves a user, groups and home included, when the rules
// load: nothing is looked up per event, and check reports what the
// daemon would meet.
func lookupUser(name string) (*User, error) { return account.Lookup(name) }

func parse(name string, data []byte, lookup userLookup) (*RuleSet, error) {
	l := &loader{file: name, lookup: lookup, users: map[string]userResult{}}
	rs := l.load(data)
	if len(l.errs) > 0 {
		l.errs.sort()
		return nil, l.errs
	}
	return rs, nil
}

type userResult struct {
	u   *User
	err error
}

// loader walks the YAML tree of one file and collects every problem.
type loader struct {
	file     string
	lines    []string // of the source, for positions inside scalars
	lookup   userLookup
	users    map[string]userResult
	errs     Errors
	rule     string   // name of the rule being loaded, for errors
	settings Settings // of the file, for defaults of actions

	// mountReads are the places where the templates of the action being
	// loaded read mount.path.
	mountReads []Pos
	// unlockReads are those where they read unlock.device.
	unlockReads []Pos
}

func (l *loader) errPos(p Pos, format string, args ...any) {
	l.errs = append(l.errs, &Error{File: l.file, Line: p.Line, Col: p.Col, Rule: l.rule, Msg: oneLine(fmt.Sprintf(format, args...))})
}

// oneLine escapes control characters so that every problem is one line
// of `hotplugd check` output whatever the file contains.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if isControl(r) {
			fmt.Fprintf(&b, "\\x%02x", r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func isControl(r rune) bool { return r < ' ' || r == 0x7f }

func (l *loader) errAt(n *yaml.Node, format string, args ...any) {
	l.errPos(l.pos(n), format, args...)
}

func (l *loader) pos(n *yaml.Node) Pos { return Pos{File: l.file, Line: n.Line, Col: n.Column} }

var yamlErrLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// decode parses the one YAML document of data. yaml.v3 reports syntax
// errors with a line only; they get column 1.
func (l *loader) decode(data []byte) (doc *yaml.Node, err error) {
	defer func() {
		// yaml.v3 is not known to panic on any input since 3.0.1, but a
		// bad rules file must never take the daemon down with it.
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: internal error: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var first yaml.Node
	if err := dec.Decode(&first); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var second yaml.Node
	switch err := dec.Decode(&second); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, err
	default:
		l.errAt(&second, "more than one YAML document (remove the \"---\")")
	}
	return &first, nil
}

func (l *loader) yamlError(err error) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 1
	if m := yamlErrLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	l.errPos(Pos{l.file, line, 1}, "YAML: %s", msg)
}

func (l *loader) load(data []byte) *RuleSet {
	rs := &RuleSet{File: l.file, Settings: DefaultSettings()}
	if len(data) > MaxFileSize {
		l.errPos(Pos{l.file, 1, 1}, "file is larger than %d bytes", MaxFileSize)
		return nil
	}
	l.lines = strings.Split(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n")
	doc, err := l.decode(data)
	if err != nil {
		l.yamlError(err)
		return nil
	}
	if doc == nil || len(doc.Content) == 0 {
		return rs // an empty file: default settings, no rules
	}
	if !l.plain(doc) {
		return nil
	}
	root := doc.Content[0]
	if isNull(root) {
		return rs
	}
	if root.Kind != yaml.MappingNode {
		l.errAt(root, "a rules file is a mapping with the keys settings and rules")
		return nil
	}
	f := l.fields(root, "the file", "settings", "rules")
	rs.Settings = l.loadSettings(f["settings"].val)
	l.settings = rs.Settings
	rs.Rules = l.loadRules(f["rules"].val)
	rs.index()
	return rs
}

// plain rejects anchors, aliases and custom tags anywhere in the tree.
// Without aliases there is nothing to expand, so no "billion laughs":
// the tree is never larger than the file.
func (l *loader) plain(n *yaml.Node) bool {
	ok := true
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		switch {
		case n.Kind == yaml.AliasNode:
			l.errAt(n, "YAML aliases (*%s) are not supported", n.Value)
			ok = false
			return
		case n.Anchor != "":
			l.errAt(n, "YAML anchors (&%s) are not supported", n.Anchor)
			ok = false
		case n.Tag != "" && !strings.HasPrefix(n.ShortTag(), "!!"):
			l.errAt(n, "YAML tag %s is not supported", n.Tag)
			ok = false
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
	return ok
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

type field struct {
	key, val *yaml.Node
}

// fields checks that n is a mapping (or empty) whose keys are all
// allowed and given once, and returns them by name.
func (l *loader) fields(n *yaml.Node, what string, allowed ...string) map[string]field {
	m := map[string]field{}
	if isNull(n) {
		return m
	}
	if n.Kind != yaml.MappingNode {
		l.errAt(n, "%s must be a mapping with the keys %s", what, strings.Join(allowed, ", "))
		return m
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			l.errAt(k, "%s: a key must be a plain word", what)
			continue
		}
		if !slices.Contains(allowed, k.Value) {
			if len(allowed) == 0 {
				l.errAt(k, "unknown key %q in %s (it takes no keys)", k.Value, what)
			} else {
				l.errAt(k, "unknown key %q in %s (want %s)", k.Value, what, strings.Join(allowed, ", "))
			}
			continue
		}
		if prev, dup := m[k.Value]; dup {
			l.errAt(k, "key %q given twice in %s (first at line %d)", k.Value, what, prev.key.Line)
			continue
		}
		m[k.Value] = field{k, v}
	}
	return m
}

func (l *loader) str(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || isNull(n) || n.ShortTag() == "!!binary" {
		l.errAt(n, "%s must be a string", what)
		return "", false
	}
	return n.Value, true
}

func (l *loader) boolean(n *yaml.Node, what string) (bool, bool) {
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		l.errAt(n, "%s must be true or false", what)
		return false, false
	}
	return b, true
}

func (l *loader) integer(n *yaml.Node, what string, lo, hi int) (int, bool) {
	var i int
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil || i < lo || i > hi {
		l.errAt(n, "%s must be a whole number from %d to %d", what, lo, hi)
		return 0, false
	}
	return i, true
}

func (l *loader) duration(n *yaml.Node, what string) (time.Duration, bool) {
	s, ok := l.str(n, what)
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		l.errAt(n, "%s: bad duration %q (want a number and a unit, like 30s, 5m or 2h)", what, s)
		return 0, false
	case d <= 0:
		l.errAt(n, "%s: duration %q must be positive", what, s)
		return 0, false
	}
	return d, true
}

func (l *loader) seq(n *yaml.Node, what string) []*yaml.Node {
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		l.errAt(n, "%s must be a list", what)
		return nil
	}
	return n.Content
}

func (l *loader) user(n *yaml.Node, what string) *User {
	name, ok := l.str(n, what)
	if !ok {
		return nil
	}
	r, ok := l.users[name]
	if !ok {
		r.u, r.err = l.lookup(name)
		l.users[name] = r
	}
	var unknown user.UnknownUserError
	var unknownID user.UnknownUserIdError
	switch {
	case errors.As(r.err, &unknown) || errors.As(r.err, &unknownID):
		l.errAt(n, "%s: unknown user %q: not in %s", what, name, account.Database)
	case r.err != nil:
		l.errAt(n, "%s: looking up user %q: %v", what, name, r.err)
	}
	return r.u
}

var settingKeys = []string{"source", "coldplug", "workers", "action_timeout", "mount_root", "state_dir", "log_level",
	"control", "metrics", "network", "mqtt"}

func (l *loader) loadSettings(n *yaml.Node) Settings {
	s := DefaultSettings()
	f := l.fields(n, "settings", settingKeys...)
	if v, ok := f["source"]; ok {
		if src, ok := l.str(v.val, "source"); ok {
			switch src {
			case "kernel", "udev", "auto":
				s.Source = src
			default:
				l.errAt(v.val, "source must be kernel, udev or auto, not %q", src)
			}
		}
	}
	if v, ok := f["coldplug"]; ok {
		if b, ok := l.boolean(v.val, "coldplug"); ok {
			s.Coldplug = b
		}
	}
	if v, ok := f["workers"]; ok {
		if i, ok := l.integer(v.val, "workers", 1, 1024); ok {
			s.Workers = i
		}
	}
	if v, ok := f["action_timeout"]; ok {
		if d, ok := l.duration(v.val, "action_timeout"); ok {
			s.ActionTimeout = d
		}
	}
	if v, ok := f["mount_root"]; ok {
		if p, ok := l.dir(v.val, "mount_root"); ok {
			s.MountRoot = p
		}
	}
	if v, ok := f["state_dir"]; ok {
		if p, ok := l.dir(v.val, "state_dir"); ok {
			s.StateDir = p
		}
	}
	if v, ok := f["log_level"]; ok {
		if lv, ok := l.str(v.val, "log_level"); ok {
			switch lv {
			case "debug":
				s.LogLevel = slog.LevelDebug
			case "info":
				s.LogLevel = slog.LevelInfo
			case "warn":
				s.LogLevel = slog.LevelWarn
			case "error":
				s.LogLevel = slog.LevelError
			default:
				l.errAt(v.val, "log_level must be debug, info, warn or error, not %q", lv)
			}
		}
	}
	if v, ok := f["control"]; ok {
		s.Control = l.loadControl(v.val, s.Control)
	}
	if v, ok := f["metrics"]; ok {
		s.Metrics = l.loadMetrics(v.val, s.Metrics)
	}
	if v, ok := f["network"]; ok {
		if b, ok := l.boolean(v.val, "network"); ok {
			s.Network = b
		}
	}
	if v, ok := f["mqtt"]; ok {
		s.MQTT = l.loadMQTT(v.val)
	}
	return s
}

// loadControl reads settings.control: the socket's path and the group
// that may read the daemon's state through it.
func (l *loader) loadControl(n *yaml.Node, c ControlSettings) ControlSettings {
	f := l.fields(n, "control", "socket", "group")
	if v, ok := f["socket"]; ok {
		if p, ok := l.dir(v.val, "control.socket"); ok {
			c.Socket = p
		}
	}
	if v, ok := f["group"]; ok {
		if name, ok := l.str(v.val, "control.group"); ok && name != "" {
			g, err := lookupGroup(name)
			if err != nil {
				l.errAt(v.val, "control.group: %v", err)
			} else {
				c.Group, c.GID = name, g
			}
		}
	}
	return c
}

// loadMetrics reads settings.metrics: a TCP address to serve /metrics on
// and a textfile for node_exporter, written every interval.
func (l *loader) loadMetrics(n *yaml.Node, m MetricsSettings) MetricsSettings {
	f := l.fields(n, "metrics", "listen", "textfile", "interval")
	if v, ok := f["listen"]; ok {
		if a, ok := l.str(v.val, "metrics.listen"); ok && a != "" {
			if _, _, err := net.SplitHostPort(a); err != nil {
				l.errAt(v.val, "metrics.listen %q: want host:port, like 127.0.0.1:9661 (%v)", a, err)
			} else {
				m.Listen = a
			}
		}
	}
	if v, ok := f["textfile"]; ok {
		if p, ok := l.str(v.val, "metrics.textfile"); ok && p != "" {
			if p, ok := l.dir(v.val, "metrics.textfile"); ok {
				m.Textfile = p
			}
		}
	}
	if v, ok := f["interval"]; ok {
		if d, ok := l.duration(v.val, "metrics.interval"); ok {
			m.Interval = d
		}
	}
	return m
}

// lookupGroup resolves a group name (or a number) to its gid.
func lookupGroup(name string) (int, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		if n, nerr := strconv.Atoi(name); nerr == nil && n >= 0 {
			return n, nil
		}
		var unknown user.UnknownGroupError
		if errors.As(err, &unknown) {
			return 0, fmt.Errorf("unknown group %q", name)
		}
		return 0, fmt.Errorf("looking up group %q: %w", name, err)
	}
	return strconv.Atoi(g.Gid)
}

// dir checks a directory setting: absolute, clean and not "/".
func (l *loader) dir(n *yaml.Node, what string) (string, bool) {
	p, ok := l.str(n, what)
	if !ok {
		return "", false
	}
	switch {
	case !filepath.IsAbs(p):
		l.errAt(n, "%s must be an absolute path, not %q", what, p)
	case filepath.Clean(p) != p:
		l.errAt(n, "%s %q is not a clean path (did you mean %q?)", what, p, filepath.Clean(p))
	case p == "/":
		l.errAt(n, "%s must not be /", what)
	case strings.ContainsAny(p, "\x00\n\t"):
		l.errAt(n, "%s %q contains a control character", what, p)
	default:
		return p, true
	}
	return "", false
}

// validName is what a rule name may look like: it appears in logs,
// STATUS= and `hotplugd test` output.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func (l *loader) loadRules(n *yaml.Node) []*Rule {
	var rules []*Rule
	seen := map[string]int{} // rule name → line
	for _, item := range l.seq(n, "rules") {
		if r := l.loadRule(item, seen); r != nil {
			rules = append(rules, r)
		}
	}
	return rules
}

func (l *loader) loadRule(n *yaml.Node, seen map[string]int) *Rule {
	l.rule = ""
	defer func() { l.rule = "" }()
	before := len(l.errs)
	if n.Kind != yaml.MappingNode {
		l.errAt(n, "a rule must be a mapping with the keys name, match, actions, continue")
		return nil
	}
	// The name first, so every other error can name the rule.
	f := map[string]field{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Value == "name" {
			f["name"] = field{k, n.Content[i+1]}
			break
		}
	}
	r := &Rule{Continue: true, Pos: l.pos(n), errLog: ratelimit.Limiter{Period: evalErrorInterval, Burst: 1}}
	if v, ok := f["name"]; !ok {
		l.errAt(n, "rule has no name")
	} else if name, ok := l.str(v.val, "name"); ok {
		l.rule = name
		r.Name = name
		if !validName.MatchString(name) {
			l.errAt(v.val, "name: use letters, digits, '.', '_' and '-' (at most 64, starting with a letter or digit)")
		}
		if line, dup := seen[name]; dup {
			l.errAt(v.val, "duplicate rule name (first at line %d)", line)
		} else {
			seen[name] = v.val.Line
		}
	}
	f = l.fields(n, "rule", "name", "match", "actions", "continue")
	if v, ok := f["match"]; !ok {
		l.errAt(n, "rule has no match")
	} else {
		l.loadMatch(r, v.val)
	}
	if v, ok := f["continue"]; ok {
		if b, ok := l.boolean(v.val, "continue"); ok {
			r.Continue = b
		}
	}
	if v, ok := f["actions"]; ok {
		r.Actions = l.loadActions(v.val)
	}
	if len(l.errs) > before {
		return nil
	}
	return r
}

// loadMatch compiles a rule's match into r, with the problems positioned.
func (l *loader) loadMatch(r *Rule, v *yaml.Node) {
	src, ok := l.str(v, "match")
	if !ok {
		return
	}
	r.Match = src
	c, probs := compile(src, modeMatch)
	for _, p := range probs {
		l.errPos(l.scalarPos(v, runeToByte(src, p.off)), "match: %s", p.msg)
	}
	if len(probs) > 0 {
		return
	}
	r.prog, r.needs, r.filter = c.prog, c.needs, c.filter
	for _, f := range []struct {
		name string
		set  []string
	}{{"action", c.filter.actions}, {"subsystem", c.filter.subsystems}} {
		if f.set != nil && len(f.set) == 0 {
			l.errAt(v, "match: can never be true: its conditions on %s exclude each other", f.name)
		}
	}
	for _, a := range c.filter.unknownActions() {
		l.errAt(v, "match: no event has action %q (want %s)", a, actionNames())
	}
	if c.readMount >= 0 {
		l.errPos(l.scalarPos(v, runeToByte(src, c.readMount)), "match: mount.path is only known in actions, after a mount")
	}
	if c.readUnlock >= 0 {
		l.errPos(l.scalarPos(v, runeToByte(src, c.readUnlock)), "match: unlock.device is only known in actions, after an unlock")
	}
}

// loadActions reads a rule's action list; a template may read mount.path
// only after a mount or unmount, and unlock.device only after an unlock.
func (l *loader) loadActions(v *yaml.Node) []Action {
	var out []Action
	mounted := false // an earlier action sets mount.path
	var unlocked *UnlockSpec
	for i, item := range l.seq(v, "actions") {
		l.mountReads, l.unlockReads = l.mountReads[:0], l.unlockReads[:0]
		a := l.loadAction(item, i)
		if !mounted {
			for _, p := range l.mountReads {
				l.errPos(p, "mount.path is empty here: only a mount or unmount action earlier in the rule sets it")
			}
		}
		if unlocked == nil {
			for _, p := range l.unlockReads {
				l.errPos(p, "unlock.device is empty here: only an unlock action earlier in the rule sets it")
			}
		}
		if a == nil {
			continue
		}
		out = append(out, a)
		switch k := a.Kind(); k {
		case "mount", "unmount":
			mounted = true
		case "unlock":
			if unlocked != nil {
				l.errPos(a.Position(), "a rule unlocks its device once (the first unlock is at line %d)", unlocked.Pos.Line)
			}
			unlocked = a.(*UnlockSpec)
		}
	}
	return out
}

var actionKinds = "run, mount, unmount, notify or unlock"

func (l *loader) loadAction(n *yaml.Node, i int) Action {
	if n.Kind != yaml.MappingNode || len(n.Content) == 0 {
		l.errAt(n, "actions[%d] must be a mapping with one key: %s", i, actionKinds)
		return nil
	}
	if len(n.Content) > 2 {
		l.errAt(n.Content[2], "actions[%d] has more than one key (%s and %s); write each action as its own list item", i, n.Content[0].Value, n.Content[2].Value)
		return nil
	}
	k, v := n.Content[0], n.Content[1]
	pos := l.pos(k)
	switch k.Value {
	case "run":
		return l.loadRun(v, pos)
	case "mount":
		return l.loadMount(v, pos)
	case "unmount":
		l.fields(v, "unmount")
		return &UnmountSpec{Pos: pos}
	case "notify":
		return l.loadNotify(v, pos)
	case "unlock":
		return l.loadUnlock(v, pos)
	}
	l.errAt(k, "unknown action %q (want %s)", k.Value, actionKinds)
	return nil
}

// template compiles the string n as a template; what names it in errors.
func (l *loader) template(n *yaml.Node, what string) *Template {
	s, ok := l.str(n, what)
	if !ok {
		return nil
	}
	t, info, probs := compileTemplate(s)
	for _, p := range probs {
		l.errPos(l.scalarPos(n, p.off), "%s: %s", what, p.msg)
	}
	if info.readMount >= 0 {
		l.mountReads = append(l.mountReads, l.scalarPos(n, info.readMount))
	}
	if info.readUnlock >= 0 {
		l.unlockReads = append(l.unlockReads, l.scalarPos(n, info.readUnlock))
	}
	if len(probs) > 0 {
		return nil
	}
	return t
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// forbiddenEnv reports names that change how the program is loaded or
// how a shell it starts reads its input: with a device string in them
// they would turn data into code.
func forbiddenEnv(name string) bool {
	switch name {
	case "IFS", "BASH_ENV", "ENV", "SHELLOPTS", "PS4", "GCONV_PATH":
		return true
	}
	return strings.HasPrefix(name, "LD_") || strings.HasPrefix(name, "BASH_FUNC_")
}

func (l *loader) loadRun(n *yaml.Node, pos Pos) *RunSpec {
	s := &RunSpec{Pos: pos, Timeout: l.settings.ActionTimeout}
	f := l.fields(n, "run", "argv", "timeout", "user", "env")
	if v, ok := f["argv"]; !ok {
		l.errPos(pos, "run needs argv (the program and its arguments)")
	} else {
		items := l.seq(v.val, "argv")
		if len(items) == 0 && !isNull(v.val) && v.val.Kind == yaml.SequenceNode || isNull(v.val) {
			l.errAt(v.val, "argv must not be empty")
		}
		for i, item := range items {
			t := l.template(item, fmt.Sprintf("argv[%d]", i))
			if t == nil {
				continue
			}
			if i == 0 {
				switch {
				case !t.IsLiteral():
					l.errAt(item, "argv[0] must not contain {{ }}: the program is chosen when the rules load, never by a device")
				case !filepath.IsAbs(t.String()):
					l.errAt(item, "argv[0] %q must be an absolute path", t.String())
				}
			}
			s.Argv = append(s.Argv, t)
		}
	}
	if v, ok := f["timeout"]; ok {
		if d, ok := l.duration(v.val, "timeout"); ok {
			s.Timeout = d
		}
	}
	if v, ok := f["user"]; ok {
		s.User = l.user(v.val, "user")
	}
	if v, ok := f["env"]; ok {
		if !isNull(v.val) && v.val.Kind != yaml.MappingNode {
			l.errAt(v.val, "env must be a mapping of variable names to strings")
		} else if !isNull(v.val) {
			s.Env = map[string]*Template{}
			for i := 0; i+1 < len(v.val.Content); i += 2 {
				k, val := v.val.Content[i], v.val.Content[i+1]
				name := k.Value
				switch {
				case k.Kind != yaml.ScalarNode || !envName.MatchString(name):
					l.errAt(k, "env: %q is not a variable name", name)
					continue
				case forbiddenEnv(name):
					l.errAt(k, "env: %s is not allowed (it changes how programs are loaded or shells parse)", name)
					continue
				}
				if _, dup := s.Env[name]; dup {
					l.errAt(k, "env: %s given twice", name)
					continue
				}
				if t := l.template(val, "env."+name); t != nil {
					s.Env[name] = t
				}
			}
		}
	}
	return s
}

func (l *loader) loadMount(n *yaml.Node, pos Pos) *MountSpec {
	s := &MountSpec{Pos: pos, Timeout: l.settings.ActionTimeout}
	f := l.fields(n, "mount", "options", "owner", "exec", "timeout")
	if v, ok := f["exec"]; ok {
		if b, ok := l.boolean(v.val, "exec"); ok {
			s.Exec = b
		}
	}
	if v, ok := f["options"]; ok {
		for i, item := range l.seq(v.val, "options") {
			o, ok := l.str(item, fmt.Sprintf("options[%d]", i))
			if !ok {
				continue
			}
			if err := CheckMountOption(o); err != nil {
				l.errAt(item, "%s", err)
				continue
			}
			if !slices.Contains(s.Options, o) {
				s.Options = append(s.Options, o)
			}
		}
		for _, err := range checkMountOptionSet(s.Options) {
			l.errAt(v.val, "%s", err)
		}
	}
	if v, ok := f["owner"]; ok {
		s.Owner = l.user(v.val, "owner")
	}
	if v, ok := f["timeout"]; ok {
		if d, ok := l.duration(v.val, "timeout"); ok {
			s.Timeout = d
		}
	}
	return s
}

// mountOptions are the options a rule may add to a mount, each true when
// it is a mount(2) flag and false when it is a filesystem data option
// (passed only to the drivers that take it). They are words without
// values: the option string is built by hotplugd alone, and owner sets
// uid and gid. It is the one list: the loader checks rules with it and
// the mounter checks again with it before it builds an option string.
var mountOptions = []mountOption{
	{"ro", true}, {"rw", true}, {"noatime", true}, {"nodiratime", true}, {"relatime", true},
	{"strictatime", true}, {"lazytime", true}, {"sync", true}, {"dirsync", true},
	{"flush", false}, {"discard", false},
}

type mountOption struct {
	name string
	flag bool
}

// lookupMountOption finds o in mountOptions.
func lookupMountOption(o string) (mountOption, bool) {
	i := slices.IndexFunc(mountOptions, func(m mountOption) bool { return m.name == o })
	if i < 0 {
		return mountOption{}, false
	}
	return mountOptions[i], true
}

// MountFlag reports whether o, an option CheckMountOption accepts, is a
// mount(2) flag rather than a filesystem data option.
func MountFlag(o string) bool {
	m, _ := lookupMountOption(o)
	return m.flag
}

// atimeOptions exclude each other.
var atimeOptions = []string{"noatime", "relatime", "strictatime"}

// refusedMountOptions explains the options a user is most likely to try.
var refusedMountOptions = map[string]string{
	"exec":     "is not allowed; write exec: true",
	"noexec":   "is always set unless exec: true",
	"nosuid":   "is always set",
	"nodev":    "is always set",
	"suid":     "is not allowed: removable media are always mounted nosuid,nodev",
	"dev":      "is not allowed: removable media are always mounted nosuid,nodev",
	"uid":      "is not allowed; set owner: instead",
	"gid":      "is not allowed; set owner: instead",
	"user":     "is an fstab option, not a mount option",
	"users":    "is an fstab option, not a mount option",
	"owner":    "is an fstab option; set owner: on the mount action",
	"remount":  "is not allowed",
	"bind":     "is not allowed",
	"defaults": "is implied: list only what to add",
}

// CheckMountOption returns why a rule may not add o to a mount, or nil.
// Options never come from a device; the allow-list keeps rules from
// undoing nosuid/nodev or smuggling a second option in with ",". The
// mounter applies the same check.
func CheckMountOption(o string) error {
	switch {
	case o == "":
		return errors.New("mount option is empty")
	case strings.Contains(o, ","):
		return fmt.Errorf("mount option %q contains \",\"; give each option as its own list item", o)
	case strings.ContainsFunc(o, func(r rune) bool { return r <= ' ' || r == 0x7f }):
		return fmt.Errorf("mount option %q contains a space or control character", o)
	}
	key, _, hasVal := strings.Cut(o, "=")
	if why, ok := refusedMountOptions[key]; ok {
		return fmt.Errorf("mount option %q %s", key, why)
	}
	if hasVal {
		return fmt.Errorf("mount option %q: options with values are not allowed", o)
	}
	if _, ok := lookupMountOption(o); ok {
		return nil
	}
	names := make([]string, len(mountOptions))
	for i, m := range mountOptions {
		names[i] = m.name
	}
	return fmt.Errorf("mount option %q is not on the allow-list (%s)", o, strings.Join(names, ", "))
}

// CheckMountOptions checks each option, then the list as a whole, and
// returns every problem joined.
func CheckMountOptions(opts []string) error {
	var errs []error
	for _, o := range opts {
		errs = append(errs, CheckMountOption(o))
	}
	return errors.Join(append(errs, checkMountOptionSet(opts)...)...)
}

// checkMountOptionSet returns why options may not go together.
func checkMountOptionSet(opts []string) []error {
	var errs []error
	if slices.Contains(opts, "ro") && slices.Contains(opts, "rw") {
		errs = append(errs, errors.New(`mount options "ro" and "rw" contradict each other`))
	}
	var atime []string
	for _, a := range atimeOptions {
		if slices.Contains(opts, a) {
			atime = append(atime, a)
		}
	}
	if len(atime) > 1 {
		errs = append(errs, fmt.Errorf("mount options %s contradict each other (pick one)", strings.Join(atime, " and ")))
	}
	return errs
}

func (l *loader) loadNotify(n *yaml.Node, pos Pos) *NotifySpec {
	s := &NotifySpec{Pos: pos}
	f := l.fields(n, "notify", "message", "targets")
	if v, ok := f["message"]; !ok {
		l.errPos(pos, "notify needs a message")
	} else {
		s.Message = l.template(v.val, "message")
	}
	if v, ok := f["targets"]; ok {
		for i, item := range l.seq(v.val, "targets") {
			if t := l.loadTarget(item, i); t != nil {
				s.Targets = append(s.Targets, t)
			}
		}
	}
	return s
}

func (l *loader) loadTarget(n *yaml.Node, i int) Target {
	if n.Kind != yaml.MappingNode || len(n.Content) != 2 {
		l.errAt(n, "targets[%d] must be a mapping with one key: log, webhook, desktop or mqtt", i)
		return nil
	}
	k, v := n.Content[0], n.Content[1]
	switch k.Value {
	case "log":
		l.fields(v, "log")
		return &LogTarget{}
	case "desktop":
		l.fields(v, "desktop")
		return &DesktopTarget{}
	case "webhook":
		return l.loadWebhook(v, k)
	case "mqtt":
		return l.loadMQTTTarget(v, k)
	}
	l.errAt(k, "unknown target %q (want log, webhook, desktop or mqtt)", k.Value)
	return nil
}

// Webhook defaults.
const (
	defaultWebhookTimeout  = 10 * time.Second
	defaultWebhookAttempts = 3
	maxWebhookAttempts     = 20
)

// headerName is an HTTP token (RFC 9110, section 5.6.2).
var headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")

func (l *loader) loadWebhook(n, key *yaml.Node) *WebhookTarget {
	w := &WebhookTarget{Timeout: defaultWebhookTimeout, MaxAttempts: defaultWebhookAttempts}
	f := l.fields(n, "webhook", "url", "headers", "timeout", "max_attempts")
	if v, ok := f["url"]; !ok {
		l.errAt(key, "webhook needs a url")
	} else if s, ok := l.str(v.val, "url"); ok {
		u, err := url.Parse(s)
		switch {
		case err != nil:
			l.errAt(v.val, "url: %v", errors.Unwrap(err))
		case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
			l.errAt(v.val, "url %q must start with http:// or https:// and name a host", s)
		default:
			w.URL = u
		}
	}
	if v, ok := f["headers"]; ok {
		if !isNull(v.val) && v.val.Kind != yaml.MappingNode {
			l.errAt(v.val, "headers must be a mapping of header names to strings")
		} else if !isNull(v.val) {
			w.Headers = map[string]string{}
			for i := 0; i+1 < len(v.val.Content); i += 2 {
				k, val := v.val.Content[i], v.val.Content[i+1]
				if k.Kind != yaml.ScalarNode || !headerName.MatchString(k.Value) {
					l.errAt(k, "headers: %q is not a header name", k.Value)
					continue
				}
				s, ok := l.str(val, "headers."+k.Value)
				if !ok {
					continue
				}
				if strings.ContainsAny(s, "\r\n\x00") {
					l.errAt(val, "headers.%s: value contains a line break or NUL", k.Value)
					continue
				}
				w.Headers[k.Value] = s
			}
		}
	}
	if v, ok := f["timeout"]; ok {
		if d, ok := l.duration(v.val, "timeout"); ok {
			w.Timeout = d
		}
	}
	if v, ok := f["max_attempts"]; ok {
		if i, ok := l.integer(v.val, "max_attempts", 1, maxWebhookAttempts); ok {
			w.MaxAttempts = i
		}
	}
	return w
}

// scalarPos maps byte offset off of the value of scalar n to its place
// in the file, following the value through quoting, folding and block
// indentation line by line. Where the value cannot be traced back to the
// source text (escape sequences), it returns the scalar's own position.
func (l *loader) scalarPos(n *yaml.Node, off int) Pos {
	fallback := l.pos(n)
	v := n.Value
	if off < 0 || off > len(v) || n.Line < 1 || n.Line > len(l.lines) {
		return fallback
	}
	line, col := n.Line, n.Column // where the text of v starts; col 0: after the indentation
	switch {
	case n.Style&(yaml.LiteralStyle|yaml.FoldedStyle) != 0:
		line, col = n.Line+1, 0
	case n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0:
		col = n.Column + 1
	}
	cur := 0     // bytes of v matched to the source so far
	end := Pos{} // just after the last matched character
	for ; line <= len(l.lines); line, col = line+1, 0 {
		text := l.lines[line-1]
		start := 1
		if col > 0 {
			if col-1 > utf8.RuneCountInString(text) {
				return fallback
			}
			text = text[runeToByte(text, col-1):]
			start = col
		}
		trimmed := strings.TrimLeft(text, " \t")
		start += utf8.RuneCountInString(text) - utf8.RuneCountInString(trimmed)
		if trimmed == "" {
			continue
		}
		// Line breaks and indentation become separators in v.
		for cur < len(v) && (v[cur] == ' ' || v[cur] == '\n' || v[cur] == '\t') {
			cur++
		}
		if off < cur {
			return Pos{l.file, line, start}
		}
		k := commonPrefix(trimmed, v[cur:])
		if k == 0 {
			return fallback
		}
		if off < cur+k {
			return Pos{l.file, line, start + utf8.RuneCountInString(v[cur:off])}
		}
		cur += k
		end = Pos{l.file, line, start + utf8.RuneCountInString(trimmed[:k])}
		if cur >= len(v) {
			break
		}
		if k < len(trimmed) {
			return fallback // an escape sequence: the text no longer lines up
		}
	}
	if off >= len(v) && end.Line > 0 {
		return end
	}
	return fallback
}

func commonPrefix(a, b string) int {
	n := min(len(a), len(b))
	i := 0
	for i < n && a[i] == b[i] {
		i++
	}
	// Do not split a UTF-8 sequence.
	for i > 0 && i < len(a) && !utf8.RuneStart(a[i]) {
		i--
	}
	return i
}
