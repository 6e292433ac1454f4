package daemon

// Helpers for the tests and benchmarks that run the real hotplugd binary
// against the real kernel: the binary is built once per test run, started
// with a NOTIFY_SOCKET the test reads, and fed real uevents by writing to
// sysfs uevent files (`change UUID KEY=VALUE` makes the kernel emit a
// change with SYNTH_UUID and SYNTH_ARG_KEY, which is how a test tags its
// own events among whatever else the machine sends).

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(int) { builds.cleanup() }))
}

// builds holds the binaries built for this test run, each once.
var builds buildCache

type buildCache struct {
	mu   sync.Mutex
	dir  string
	bins map[string]*builtBinary
}

type builtBinary struct {
	once sync.Once
	path string
	err  error
}

func (c *buildCache) cleanup() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dir != "" {
		os.RemoveAll(c.dir)
	}
}

// build runs `go build -o DIR/name ./pkg` from the module root, once per
// test run, and returns the binary's path.
func (c *buildCache) build(pkg, name string) (string, error) {
	c.mu.Lock()
	if c.bins == nil {
		c.bins = make(map[string]*builtBinary)
	}
	b := c.bins[name]
	if b == nil {
		b = new(builtBinary)
		c.bins[name] = b
	}
	c.mu.Unlock()
	b.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			b.err = err
			return
		}
		c.mu.Lock()
		if c.dir == "" {
			c.dir, err = os.MkdirTemp("", "hotplugd-test-bin-")
		}
		dir := c.dir
		c.mu.Unlock()
		if err != nil {
			b.err = err
			return
		}
		out := filepath.Join(dir, name)
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		if msg, err := cmd.CombinedOutput(); err != nil {
			b.err = fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
			return
		}
		b.path = out
	})
	return b.path, b.err
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the hotplugd module")
	}
	return filepath.Dir(mod), nil
}

// tb is what the helpers need of a test or a benchmark.
type tb interface {
	Helper()
	Fatalf(string, ...any)
	Skipf(string, ...any)
	Logf(string, ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}

// need fails the test (in CI) or skips it when a prerequisite is missing.
func need(t tb, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	what := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing: %s", what)
	}
	t.Skipf("prerequisite missing: %s", what)
}

// needBinary checks for root and a writable lo uevent file and returns
// the built hotplugd.
func needBinary(t tb) string {
	t.Helper()
	need(t, os.Geteuid() == 0, "root (the daemon binds a kernel uevent socket; tests write sysfs uevent files)")
	need(t, unix.Access(loUevent, unix.W_OK) == nil, "a writable %s", loUevent)
	bin, err := builds.build("./cmd/hotplugd", "hotplugd")
	need(t, err == nil, "the hotplugd binary: %v", err)
	return bin
}

const loUevent = "/sys/class/net/lo/uevent"

// newUUID returns a random RFC 4122 version 4 UUID, the form the kernel
// accepts in a synthetic uevent.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// newTag returns a random tag of letters and digits, which is what the
// kernel allows in a synthetic uevent's KEY=VALUE arguments.
func newTag() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("t%x", b)
}

// trigger writes a synthetic change to a sysfs uevent file: the kernel
// emits a real "change" event with SYNTH_UUID=uuid and SYNTH_ARG_T=tag.
func trigger(t tb, ueventFile, uuid, tag string) {
	t.Helper()
	msg := "change " + uuid
	if tag != "" {
		msg += " T=" + tag
	}
	if err := os.WriteFile(ueventFile, []byte(msg), 0); err != nil {
		t.Fatalf("write %q to %s: %v", msg, ueventFile, err)
	}
}

// rule is one rule of a generated rules file, with a `run` action when
// argv is set.
type rule struct {
	name, match string
	argv        []string
	timeout     string
}

// writeRules writes a rules file to path (mode 0600). settings are YAML
// lines under `settings:`; coldplug is off unless they say otherwise, and
// state_dir and mount_root point into the test's temp dir.
func writeRules(t tb, path string, settings string, rules ...rule) {
	t.Helper()
	var b strings.Builder
	dir := filepath.Dir(path)
	b.WriteString("settings:\n")
	if !strings.Contains(settings, "coldplug:") {
		b.WriteString("  coldplug: false\n")
	}
	fmt.Fprintf(&b, "  state_dir: %s\n  mount_root: %s\n", jsonString(filepath.Join(dir, "state")), jsonString(filepath.Join(dir, "media")))
	if !strings.Contains(settings, "control:") {
		fmt.Fprintf(&b, "  control: {socket: %s}\n", jsonString(filepath.Join(dir, "control")))
	}
	for line := range strings.SplitSeq(strings.TrimSpace(settings), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			b.WriteString("  " + line + "\n")
		}
	}
	b.WriteString("rules:\n")
	for _, r := range rules {
		fmt.Fprintf(&b, "  - name: %s\n    match: %s\n    actions:\n", jsonString(r.name), jsonString(r.match))
		if r.argv == nil {
			b.WriteString("      - notify: {message: \"matched\"}\n")
			continue
		}
		fmt.Fprintf(&b, "      - run:\n          argv: %s\n", jsonString(r.argv))
		if r.timeout != "" {
			fmt.Fprintf(&b, "          timeout: %s\n", r.timeout)
		}
	}
	if len(rules) == 0 {
		b.WriteString("  []\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatalf("write rules: %v", err)
	}
}

// jsonString is v as JSON, which YAML reads as the same value.
func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// loMatch is a match expression for this test's changes of lo.
func loMatch(tag string) string {
	return fmt.Sprintf(`action == "change" && subsystem == "net" && devpath == "/devices/virtual/net/lo" && env.SYNTH_ARG_T == %q`, tag)
}

// notifyMsg is one sd_notify datagram.
type notifyMsg struct {
	at   time.Time
	vars map[string]string
	raw  string
}

// notifySocket is the NOTIFY_SOCKET of one daemon: a unixgram socket
// whose datagrams are collected in order.
type notifySocket struct {
	path string
	conn *net.UnixConn
	done chan struct{}

	mu     sync.Mutex
	msgs   []notifyMsg
	cursor int // next message expect looks at
}

func newNotifySocket(t tb) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	if len(path) >= 100 { // sun_path is 108 bytes
		dir, err := os.MkdirTemp("", "hpn")
		if err != nil {
			t.Fatalf("%v", err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		path = filepath.Join(dir, "notify")
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatalf("notify socket: %v", err)
	}
	n := &notifySocket{path: path, conn: conn, done: make(chan struct{})}
	go n.read()
	t.Cleanup(func() {
		conn.Close()
		<-n.done
	})
	return n
}

func (n *notifySocket) read() {
	defer close(n.done)
	buf := make([]byte, 64<<10)
	for {
		k, _, err := n.conn.ReadFromUnix(buf)
		if err != nil {
			return
		}
		m := notifyMsg{at: time.Now(), raw: string(buf[:k]), vars: make(map[string]string)}
		for line := range strings.SplitSeq(m.raw, "\n") {
			if k, v, ok := strings.Cut(line, "="); ok {
				m.vars[k] = v
			}
		}
		n.mu.Lock()
		n.msgs = append(n.msgs, m)
		n.mu.Unlock()
	}
}

// all returns every message received so far.
func (n *notifySocket) all() []notifyMsg {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]notifyMsg(nil), n.msgs...)
}

// expect waits for the next message (after the last one expect returned)
// that sets key, skipping the others, and returns it.
func (n *notifySocket) expect(t tb, key string, timeout time.Duration) notifyMsg {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		n.mu.Lock()
		for n.cursor < len(n.msgs) {
			m := n.msgs[n.cursor]
			n.cursor++
			if _, ok := m.vars[key]; ok {
				n.mu.Unlock()
				return m
			}
		}
		n.mu.Unlock()
		if time.Now().After(deadline) {
			var raw []string
			for _, m := range n.all() {
				raw = append(raw, m.raw)
			}
			t.Fatalf("no sd_notify message with %s= within %v; got %q", key, timeout, raw)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// logBuffer collects the daemon's stderr lines.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
	bytes int
}

func (l *logBuffer) add(line string) {
	l.mu.Lock()
	l.lines = append(l.lines, line)
	l.bytes += len(line) + 1
	l.mu.Unlock()
}

func (l *logBuffer) snapshot() ([]string, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.lines...), l.bytes
}

// daemonProc is one running `hotplugd run`.
type daemonProc struct {
	cmd    *exec.Cmd
	notify *notifySocket
	log    *logBuffer
	done   chan struct{} // closed when the process has exited and been reaped
	logEOF chan struct{} // closed when stderr is at EOF
	state  *os.ProcessState
}

// startDaemon runs `hotplugd run --config rules` with a NOTIFY_SOCKET of
// the test's and env added to a minimal environment. The process is
// killed, if still running, when the test ends; its log is shown if the
// test failed.
func startDaemon(t tb, bin, rules string, env ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{
		notify: newNotifySocket(t),
		log:    new(logBuffer),
		done:   make(chan struct{}),
		logEOF: make(chan struct{}),
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatalf("%v", err)
	}
	d.cmd = exec.Command(bin, "run", "--config", rules)
	d.cmd.Env = append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET=" + d.notify.path}, env...)
	d.cmd.Stderr = pw
	d.cmd.Stdout = pw
	if err := d.cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		t.Fatalf("start %s: %v", bin, err)
	}
	pw.Close()
	go func() {
		defer close(d.logEOF)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			d.log.add(sc.Text())
		}
	}()
	go func() {
		_ = d.cmd.Wait()
		d.state = d.cmd.ProcessState
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			d.kill(t)
		}
		<-d.logEOF
		if t.Failed() {
			lines, _ := d.log.snapshot()
			if len(lines) > 400 {
				lines = append(lines[:200:200], append([]string{"..."}, lines[len(lines)-200:]...)...)
			}
			t.Logf("hotplugd (pid %d) log:\n%s", d.cmd.Process.Pid, strings.Join(lines, "\n"))
		}
	})
	return d
}

func (d *daemonProc) pid() int { return d.cmd.Process.Pid }

// kill kills the daemon and what its actions are running: it is stopped
// first, so that it starts nothing more, then its children's process
// groups are killed (a child caught between fork and exec is not in its
// own group yet and is killed by pid), then the daemon.
func (d *daemonProc) kill(t tb) {
	_ = d.cmd.Process.Signal(syscall.SIGSTOP)
	for _, p := range allProcs(t) {
		if p.ppid != d.pid() {
			continue
		}
		if p.pgid == p.pid {
			_ = unix.Kill(-p.pgid, unix.SIGKILL)
		}
		_ = unix.Kill(p.pid, unix.SIGKILL)
	}
	_ = d.cmd.Process.Kill()
	<-d.done
}

// ready waits for READY=1 and returns that message.
func (d *daemonProc) ready(t tb) notifyMsg {
	t.Helper()
	m := d.notify.expect(t, "READY", 15*time.Second)
	if m.vars["READY"] != "1" {
		t.Fatalf("READY=%q, want 1", m.vars["READY"])
	}
	return m
}

// signal sends sig to the daemon.
func (d *daemonProc) signal(t tb, sig syscall.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits for the daemon to exit and returns its exit code.
func (d *daemonProc) wait(t tb, timeout time.Duration) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(timeout):
		t.Fatalf("hotplugd did not exit within %v", timeout)
	}
	<-d.logEOF
	return d.state.ExitCode()
}

// waitLog waits until a log line matches re and returns the first such
// line.
func (d *daemonProc) waitLog(t tb, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	var line string
	eventually(t, timeout, func() bool {
		lines, _ := d.log.snapshot()
		for _, l := range lines {
			if re.MatchString(l) {
				line = l
				return true
			}
		}
		return false
	}, "a log line matching %s", re)
	return line
}

// logCount counts the log lines matching re.
func (d *daemonProc) logCount(re *regexp.Regexp) int {
	lines, _ := d.log.snapshot()
	n := 0
	for _, l := range lines {
		if re.MatchString(l) {
			n++
		}
	}
	return n
}

// eventually polls cond until it is true or timeout passes.
func eventually(t tb, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	delay := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, fmt.Sprintf(format, args...))
		}
		time.Sleep(delay)
		delay = min(2*delay, 20*time.Millisecond)
	}
}

// waitFile waits until path exists with content for which ok is true,
// and returns the content.
func waitFile(t tb, path string, timeout time.Duration, ok func(string) bool) string {
	t.Helper()
	var s string
	eventually(t, timeout, func() bool {
		b, err := os.ReadFile(path)
		s = string(b)
		return err == nil && ok(s)
	}, "%s (content now %q)", path, func() string { b, _ := os.ReadFile(path); return trunc(string(b)) }())
	return s
}

func trunc(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

// procInfo is what /proc says about one process.
type procInfo struct {
	pid, ppid, pgid int
	state           byte
	comm            string
	cmdline         string // NUL separators replaced by spaces; empty for zombies
}

// readProc reads /proc/PID/stat and cmdline; ok is false when the
// process is gone.
func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procInfo{}, false
	}
	s := string(b)
	open, closing := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || closing < open {
		return procInfo{}, false
	}
	f := strings.Fields(s[closing+1:])
	if len(f) < 3 {
		return procInfo{}, false
	}
	p := procInfo{pid: pid, comm: s[open+1 : closing], state: f[0][0]}
	p.ppid, _ = strconv.Atoi(f[1])
	p.pgid, _ = strconv.Atoi(f[2])
	if c, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil {
		p.cmdline = string(bytes.TrimRight(bytes.ReplaceAll(c, []byte{0}, []byte{' '}), " "))
	}
	return p, true
}

// allProcs lists every process.
func allProcs(t tb) []procInfo {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("%v", err)
	}
	var ps []procInfo
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, ok := readProc(pid); ok {
			ps = append(ps, p)
		}
	}
	return ps
}

// killMarked kills, when the test ends, every process whose command line
// contains marker: what an action of a failed test may have left behind.
func killMarked(t tb, marker string) {
	t.Cleanup(func() {
		for _, p := range allProcs(t) {
			if strings.Contains(p.cmdline, marker) {
				_ = unix.Kill(p.pid, unix.SIGKILL)
			}
		}
	})
}

// memStatus reads a "VmRSS"-style field of /proc/PID/status, in bytes.
func memStatus(pid int, field string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// stopLine parses the daemon's last log line, `msg=stopped events=N
// received=N dropped=N overruns=N ...`, into its numbers.
func stopLine(t tb, d *daemonProc) map[string]int64 {
	t.Helper()
	lines, _ := d.log.snapshot()
	for i := len(lines) - 1; i >= 0; i-- {
		if !strings.Contains(lines[i], "msg=stopped ") {
			continue
		}
		out := make(map[string]int64)
		for _, f := range strings.Fields(lines[i]) {
			k, v, ok := strings.Cut(f, "=")
			if n, err := strconv.ParseInt(v, 10, 64); ok && err == nil {
				out[k] = n
			}
		}
		return out
	}
	t.Fatalf("no \"stopped\" line in the daemon's log")
	return nil
}
