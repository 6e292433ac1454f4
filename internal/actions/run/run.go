package run

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hotplugd/hotplugd/internal/account"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// Defaults of a zero Runner.
const (
	// DefaultGrace is how long a process group has between SIGTERM and
	// SIGKILL.
	DefaultGrace = 5 * time.Second
	// DefaultMaxOutput bounds the bytes of stdout and stderr one action
	// may put into the log.
	DefaultMaxOutput = 64 << 10
	// DefaultPath is the PATH of every child and the only place a bare
	// command name is looked up. The daemon's own PATH is never used.
	DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// maxRunLine is the longest output line logged; the rest of a longer
// line is dropped and the record marked truncated.
const maxRunLine = 4 << 10

// Errors of Run, for errors.Is.
var (
	// ErrTimeout: the action outlived RunRequest.Timeout and its process
	// group was killed.
	ErrTimeout = errors.New("timed out")
	// ErrBadRequest: the request cannot be run (empty or malformed argv,
	// malformed environment).
	ErrBadRequest = errors.New("bad run request")
	// ErrUnkillable: the action was stopped, but its process did not die
	// of SIGKILL (it sleeps uninterruptibly, in the kernel); it was left
	// behind so the daemon can go on.
	ErrUnkillable = errors.New("process does not die")
	// ErrCommandNotFound: argv[0] is not an executable file.
	ErrCommandNotFound = errors.New("command not found")
)

// Credential is the user an action runs as.
type Credential struct {
	Uid, Gid uint32
	Groups   []uint32 // supplementary groups; nil means none
	Home     string   // exported as HOME
	Name     string   // exported as USER and LOGNAME
}

// NewCredential is the Credential of a resolved account: its ids, its
// groups and its home ("/" when it has none). The account was resolved
// when the rules loaded, so nothing is looked up per event.
func NewCredential(u *account.User) *Credential {
	c := &Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups, Home: u.Home, Name: u.Name}
	if c.Home == "" {
		c.Home = "/"
	}
	return c
}

// RunRequest is one `run` action for one event.
type RunRequest struct {
	// Argv is executed directly, never through a shell. Argv[0] is an
	// absolute path or a bare name looked up in Runner.Path.
	Argv []string
	// Env holds extra NAME=VALUE pairs from the rule. The rule is trusted
	// (its file is root's), so they come last and win over everything
	// else, PATH and HOTPLUG_* included.
	Env []string
	// Event is exported as HOTPLUG_* variables; nil exports none of them.
	Event *uevent.Event
	// DevNode is the event's device node, exported as HOTPLUG_DEVNODE.
	DevNode string
	// Rule names the rule in the log and in HOTPLUG_RULE.
	Rule string
	// User runs the action with that uid, gid and groups; nil runs it as
	// the daemon's own user.
	User *Credential
	// Timeout bounds the action; zero means only ctx does.
	Timeout time.Duration
	// Stdin is the program's standard input, handed over as the open
	// file it is (a key checked on its descriptor); nil is /dev/null.
	Stdin *os.File
}

// RunResult says how an action ended.
type RunResult struct {
	PID      int    // of the process (and its process group); 0 if it never started
	ExitCode int    // -1 if killed by a signal or never started
	Signal   string // "SIGKILL" when killed by a signal, else ""
	Duration time.Duration
	// TimedOut: Timeout expired and the group was killed.
	TimedOut bool
	// OutputBytes counts what the action wrote to stdout and stderr
	// together; DroppedBytes is the part of it that was not logged (cut
	// lines, everything past Runner.MaxOutput).
	OutputBytes, DroppedBytes int64
}

// Runner executes `run` actions. The zero value is ready to use; a Runner
// may run any number of actions concurrently.
type Runner struct {
	Log *slog.Logger
	// Grace is the time between SIGTERM and SIGKILL when an action is
	// stopped (timeout or ctx), and how long Run keeps reading output
	// pipes held open by processes that escaped the group. Default
	// DefaultGrace.
	Grace time.Duration
	// MaxOutput bounds the output bytes logged per action (default
	// DefaultMaxOutput; negative logs none). Output past it is still read
	// and discarded, so the action never blocks on a full pipe.
	MaxOutput int64
	// Path is the children's PATH and where bare command names are looked
	// up. Default DefaultPath.
	Path string

	leaked atomic.Int64 // processes left behind, not dead yet
}

// Leaked is how many processes of stopped actions did not die of SIGKILL
// and were left behind, and are still there.
func (r *Runner) Leaked() int64 { return r.leaked.Load() }

func (r *Runner) log() *slog.Logger {
	if r.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return r.Log
}

func (r *Runner) grace() time.Duration {
	if r.Grace <= 0 {
		return DefaultGrace
	}
	return r.Grace
}

func (r *Runner) maxOutput() int64 {
	switch {
	case r.MaxOutput == 0:
		return DefaultMaxOutput
	case r.MaxOutput < 0:
		return 0
	}
	return r.MaxOutput
}

func (r *Runner) path() string {
	if r.Path == "" {
		return DefaultPath
	}
	return r.Path
}

// Run executes req and waits for it. The action runs in a process group
// of its own, in "/", with stdin on /dev/null (or RunRequest.Stdin) and
// stdout and stderr going to the log. It ends when its first process does: whatever is left in the
// group is then killed, so when Run returns no process of the group is
// left running (but one that left the group with setsid(2) on purpose)
// and, if the daemon is a child subreaper, none is left a zombie of it.
//
// Run logs the action's output and its outcome itself (info on success,
// error otherwise), so the caller need not log the error again. The error
// is nil only for exit status 0; it wraps ErrTimeout, ctx's cause,
// *exec.ExitError, ErrBadRequest or ErrCommandNotFound.
func (r *Runner) Run(ctx context.Context, req RunRequest) (RunResult, error) {
	log := r.log()
	res := RunResult{ExitCode: -1}
	path, env, err := r.prepare(&req)
	if err != nil {
		log.LogAttrs(ctx, slog.LevelError, "run failed", slog.String("rule", req.Rule),
			slog.Any("argv", req.Argv), slog.Any("err", err))
		return res, err
	}
	out := newRunOutput(ctx, log, req.Rule, r.maxOutput())
	res, err = r.run(ctx, &req, path, env, out)
	res.OutputBytes, res.DroppedBytes = out.finish()
	attrs := []slog.Attr{
		slog.String("rule", req.Rule),
		slog.Any("argv", req.Argv),
		slog.Int("pid", res.PID),
		slog.Int("exit_code", res.ExitCode),
		slog.Duration("duration", res.Duration),
		slog.Int64("output_bytes", res.OutputBytes),
		slog.Int64("dropped_bytes", res.DroppedBytes),
	}
	if err == nil {
		log.LogAttrs(ctx, slog.LevelInfo, "run finished", attrs...)
		return res, nil
	}
	if res.Signal != "" {
		attrs = append(attrs, slog.String("signal", res.Signal))
	}
	attrs = append(attrs, slog.Bool("timed_out", res.TimedOut), slog.Any("err", err))
	log.LogAttrs(ctx, slog.LevelError, "run failed", attrs...)
	return res, err
}

// prepare resolves the command and builds the child's environment.
func (r *Runner) prepare(req *RunRequest) (path string, env []string, err error) {
	if len(req.Argv) == 0 {
		return "", nil, fmt.Errorf("%w: empty argv", ErrBadRequest)
	}
	for i, a := range req.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return "", nil, fmt.Errorf("%w: argv[%d] contains NUL", ErrBadRequest, i)
		}
	}
	path, err = runLookPath(req.Argv[0], r.path())
	if err != nil {
		return "", nil, err
	}
	env, err = runEnviron(req, r.path())
	if err != nil {
		return "", nil, err
	}
	return path, env, nil
}

// runLookPath finds name like execvp(3) would, but only in the given
// PATH, skipping relative entries: the daemon's working directory and its
// own PATH never choose what runs. A name with a slash must be absolute.
func runLookPath(name, path string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: empty argv[0]", ErrBadRequest)
	}
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			return "", fmt.Errorf("%w: argv[0] %q is neither absolute nor a bare name", ErrBadRequest, name)
		}
		if err := runExecutable(name); err != nil {
			return "", fmt.Errorf("%w: %w", ErrCommandNotFound, err)
		}
		return name, nil
	}
	for _, dir := range filepath.SplitList(path) {
		if !filepath.IsAbs(dir) {
			continue
		}
		p := filepath.Join(dir, name)
		if runExecutable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %q in %s", ErrCommandNotFound, name, path)
}

func runExecutable(p string) error {
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return err
	case !fi.Mode().IsRegular():
		return &fs.PathError{Op: "exec", Path: p, Err: errors.New("not a regular file")}
	case fi.Mode()&0o111 == 0:
		return &fs.PathError{Op: "exec", Path: p, Err: fs.ErrPermission}
	}
	return nil
}

// runEnviron builds the child's environment from nothing. Only PATH (the
// safe one) and, for another user, HOME, USER and LOGNAME are set by the
// daemon; the event contributes HOTPLUG_<KEY> for each property whose key
// is upper case, digits and '_' only, then the fixed HOTPLUG_* variables
// (which win over a property of the same name: an event cannot fake
// HOTPLUG_RULE); the rule's Env comes last. No variable is ever named by
// the event without the prefix, so an event carrying PATH, LD_PRELOAD or
// IFS cannot reach the dynamic loader or a shell. The fixed variables are
// set for every event, empty when the event lacks the field (HOTPLUG_DEVNAME
// and HOTPLUG_DEVNODE of a device without a node). Values are copied as
// bytes; a value containing NUL cannot be passed to execve(2) and its
// variable is left out.
func runEnviron(req *RunRequest, path string) ([]string, error) {
	var env runEnv
	env.set("PATH", path)
	if u := req.User; u != nil {
		env.set("HOME", u.Home)
		env.set("USER", u.Name)
		env.set("LOGNAME", u.Name)
	}
	if e := req.Event; e != nil {
		for _, p := range e.Props {
			if runExportable(p.Key) {
				env.set("HOTPLUG_"+p.Key, p.Value)
			}
		}
		env.set("HOTPLUG_ACTION", e.Action)
		env.set("HOTPLUG_DEVPATH", e.DevPath)
		env.set("HOTPLUG_SUBSYSTEM", e.Subsystem)
		env.set("HOTPLUG_DEVTYPE", e.DevType)
		env.set("HOTPLUG_DEVNAME", e.DevName)
		env.set("HOTPLUG_DEVNODE", req.DevNode)
		env.set("HOTPLUG_SEQNUM", strconv.FormatUint(e.Seqnum, 10))
		env.set("HOTPLUG_SOURCE", string(e.Source))
	}
	env.set("HOTPLUG_RULE", req.Rule)
	for _, kv := range req.Env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !runEnvName(k) || strings.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("%w: environment entry %q", ErrBadRequest, kv)
		}
		env.set(k, v)
	}
	return env.kv, nil
}

// runExportable is the allow-list of event keys exported with the prefix:
// [A-Z0-9_]+. uevent.Parse already refuses other bytes; lower case (which
// synthetic events may carry) is refused here too.
func runExportable(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// runEnvName accepts a portable variable name: [A-Za-z_][A-Za-z0-9_]*.
func runEnvName(k string) bool {
	if k == "" || '0' <= k[0] && k[0] <= '9' {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// runEnv is an environment without duplicate names; a later set of a name
// replaces the value in place.
type runEnv struct {
	kv  []string
	idx map[string]int
}

func (e *runEnv) set(k, v string) {
	if strings.IndexByte(v, 0) >= 0 {
		return
	}
	if e.idx == nil {
		e.idx = make(map[string]int)
	}
	if i, ok := e.idx[k]; ok {
		e.kv[i] = k + "=" + v
		return
	}
	e.idx[k] = len(e.kv)
	e.kv = append(e.kv, k+"="+v)
}

// runOutput logs the stdout and stderr of one action, one record per
// line, within a byte budget shared by both streams. Memory is bounded by
// one partial line per stream (maxRunLine); past the budget every byte is
// only counted, so the pipes are drained at full speed and the child never
// blocks on them.
type runOutput struct {
	ctx            context.Context
	log            *slog.Logger
	rule           string
	limit          int64
	stdout, stderr *runStream

	total     atomic.Int64 // bytes read from both pipes
	exhausted atomic.Bool  // budget is 0: only count from now on

	mu        sync.Mutex
	budget    int64 // bytes that may still be logged
	logged    int64 // bytes logged, newlines included
	saidLimit bool
}

func newRunOutput(ctx context.Context, log *slog.Logger, rule string, limit int64) *runOutput {
	o := &runOutput{ctx: ctx, log: log, rule: rule, limit: limit, budget: limit}
	o.exhausted.Store(limit <= 0)
	// stdout is the action's normal talk, stderr its complaints.
	o.stdout = &runStream{o: o, name: "stdout", level: slog.LevelInfo}
	o.stderr = &runStream{o: o, name: "stderr", level: slog.LevelWarn}
	return o
}

// finish logs the unterminated last line of each stream and returns the
// totals. It must be called after the writers' last Write (after
// exec.Cmd.Wait).
func (o *runOutput) finish() (total, dropped int64) {
	o.stdout.flush(false)
	o.stderr.flush(false)
	o.mu.Lock()
	logged := o.logged
	o.mu.Unlock()
	total = o.total.Load()
	return total, total - logged
}

// take reserves up to n bytes of the budget and returns how many it got.
func (o *runOutput) take(n int64) int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	granted := min(n, o.budget)
	o.budget -= granted
	o.logged += granted
	if o.budget == 0 {
		o.exhausted.Store(true)
	}
	return granted
}

// dropping logs, once per action, that output is being discarded because
// of the budget.
func (o *runOutput) dropping() {
	o.mu.Lock()
	said := o.saidLimit
	o.saidLimit = true
	o.mu.Unlock()
	if !said && o.limit > 0 {
		o.log.LogAttrs(o.ctx, slog.LevelWarn, "run output limit reached, discarding the rest",
			slog.String("rule", o.rule), slog.Int64("limit_bytes", o.limit))
	}
}

// runStream is the writer of one stream; exec.Cmd copies the pipe into it
// from one goroutine of its own.
type runStream struct {
	o     *runOutput
	name  string
	level slog.Level
	line  []byte // the current line, at most maxRunLine bytes
	cut   bool   // the current line was longer than maxRunLine
}

// Write never fails and never waits for anything but the log handler.
func (s *runStream) Write(p []byte) (int, error) {
	n := len(p)
	s.o.total.Add(int64(n))
	if s.o.exhausted.Load() {
		if n > 0 {
			s.line, s.cut = s.line[:0], false
			s.o.dropping()
		}
		return n, nil
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := maxRunLine - len(s.line); len(chunk) > room {
			s.line = append(s.line, chunk[:room]...)
			s.cut = true
		} else {
			s.line = append(s.line, chunk...)
		}
		if i < 0 {
			break
		}
		s.flush(true)
		p = p[i+1:]
	}
	return n, nil
}

// flush logs the current line, cut to what is left of the budget. A
// newline costs one byte of the budget, so a flood of empty lines is
// bounded too.
func (s *runStream) flush(newline bool) {
	line, cut := s.line, s.cut
	s.line, s.cut = s.line[:0], false
	if len(line) == 0 && !newline {
		return
	}
	if s.o.exhausted.Load() {
		s.o.dropping()
		return
	}
	cost := int64(len(line))
	if newline {
		cost++
	}
	granted := s.o.take(cost)
	if granted < int64(len(line)) {
		line, cut = line[:granted], true
	}
	if granted > 0 {
		attrs := []slog.Attr{
			slog.String("rule", s.o.rule),
			slog.String("stream", s.name),
			slog.String("line", string(bytes.TrimSuffix(line, []byte("\r")))),
		}
		if cut {
			attrs = append(attrs, slog.Bool("truncated", true))
		}
		s.o.log.LogAttrs(s.o.ctx, s.level, "run output", attrs...)
	}
	if granted < cost {
		s.o.dropping()
	}
}
