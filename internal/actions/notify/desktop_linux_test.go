package notify

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/actions/run"
	"github.com/hotplugd/hotplugd/internal/logtest"
	"github.com/hotplugd/hotplugd/internal/looptest"
)

// nobody is the unprivileged user the desktop tests deliver to.
const nobody = 65534

// notifyServerEnv switches the test binary into TestDesktopServerProcess.
const notifyServerEnv = "HOTPLUGD_TEST_NOTIFY_SERVER"

// TestDesktopHelperProcess is not a test: it is the desktop helper when
// the Notifier under test re-executes this binary (RunNotifyHelper does
// nothing otherwise).
func TestDesktopHelperProcess(*testing.T) { RunNotifyHelper() }

// notifyCall is one Notify call as the test notification server saw it.
type notifyCall struct {
	AppName    string
	ReplacesID uint32
	Icon       string
	Summary    string
	Body       string
	Actions    []string
	Hints      map[string]string // name to D-Bus signature
	Expire     int32
	SenderUID  uint32 // from the bus: GetConnectionUnixUser
	ServerUID  int    // the server's own uid
}

// notifyServer is a freedesktop notification server for the tests.
type notifyServer struct {
	conn *dbus.Conn
	hang bool
	mu   sync.Mutex
	out  *json.Encoder
}

func (s *notifyServer) Notify(sender dbus.Sender, app string, id uint32, icon, summary, body string,
	actions []string, hints map[string]dbus.Variant, expire int32) (uint32, *dbus.Error) {
	if s.hang {
		select {} // a notification server that never answers
	}
	call := notifyCall{AppName: app, ReplacesID: id, Icon: icon, Summary: summary, Body: body,
		Actions: actions, Hints: map[string]string{}, Expire: expire, ServerUID: os.Getuid()}
	for k, v := range hints {
		call.Hints[k] = v.Signature().String()
	}
	err := s.conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixUser", 0, string(sender)).Store(&call.SenderUID)
	if err != nil {
		return 0, dbus.MakeFailedError(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.out.Encode(call); err != nil {
		return 0, dbus.MakeFailedError(err)
	}
	return 42, nil
}

func (s *notifyServer) GetServerInformation() (name, vendor, version, spec string, err *dbus.Error) {
	return "hotplugd-test", "hotplugd", "1", "1.2", nil
}

func (s *notifyServer) GetCapabilities() ([]string, *dbus.Error) {
	return []string{"body", "body-markup"}, nil
}

// TestDesktopServerProcess is not a test: it is the notification server
// of the tests below, run as another user, selected by notifyServerEnv
// (record: write each call to stdout as JSON; hang: never answer).
func TestDesktopServerProcess(*testing.T) {
	mode := os.Getenv(notifyServerEnv)
	if mode == "" {
		return
	}
	conn, err := dbus.Connect(os.Getenv("DBUS_SESSION_BUS_ADDRESS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := &notifyServer{conn: conn, hang: mode == "hang", out: json.NewEncoder(os.Stdout)}
	if err := conn.Export(s, notificationsPath, notificationsName); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if r, err := conn.RequestName(notificationsName, dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		fmt.Fprintln(os.Stderr, "RequestName:", r, err)
		os.Exit(1)
	}
	fmt.Println(`{"AppName":"ready"}`)
	select {} // killed by the test
}

// desktopNeeds checks the prerequisites of a test with real buses.
func desktopNeeds(t *testing.T) {
	t.Helper()
	looptest.Need(t, os.Geteuid() == 0, "root (to run buses and helpers as another user)")
	looptest.Require(t, "dbus-daemon")
}

// desktopDir makes a directory every user can search, with
// run/user/65534 owned by nobody, as pam_systemd would make it.
func desktopDir(t *testing.T) (base, runUser string) {
	t.Helper()
	base, err := os.MkdirTemp("", "hotplugd-desktop-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	runUser = filepath.Join(base, "run", "user")
	dir := filepath.Join(runUser, fmt.Sprint(nobody))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{base, filepath.Join(base, "run"), runUser} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	return base, runUser
}

// lockedBuffer collects a child's stderr for the failure message.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startChild starts cmd as uid (0: as root) and returns its stdout lines;
// Cleanup kills and reaps it.
func startChild(t *testing.T, cmd *exec.Cmd, uid uint32) <-chan string {
	t.Helper()
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	}
	cmd.Dir = "/"
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", cmd.Path, err)
	}
	lines := make(chan string, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s stderr:\n%s", cmd.Args[0], stderr.String())
		}
	})
	return lines
}

// nextLine returns the child's next stdout line, failing after a while.
func nextLine(t *testing.T, lines <-chan string, what string) string {
	t.Helper()
	select {
	case l, ok := <-lines:
		if !ok {
			t.Fatalf("%s: the process exited", what)
		}
		return l
	case <-time.After(15 * time.Second):
		t.Fatalf("%s: nothing after 15s", what)
	}
	return ""
}

// startBus starts `dbus-daemon --session` as uid listening on sock and
// returns its address.
func startBus(t *testing.T, sock string, uid uint32) string {
	t.Helper()
	cmd := exec.Command("/usr/bin/dbus-daemon", "--session", "--nofork", "--print-address",
		"--address=unix:path="+sock)
	cmd.Env = []string{"PATH=" + run.DefaultPath}
	addr := nextLine(t, startChild(t, cmd, uid), "dbus-daemon address")
	if !strings.HasPrefix(addr, "unix:path="+sock) {
		t.Fatalf("dbus-daemon printed %q", addr)
	}
	return addr
}

// startNotifyServer runs TestDesktopServerProcess in mode as nobody on
// the bus at address and returns its stdout lines once it owns the name.
func startNotifyServer(t *testing.T, address, mode string) <-chan string {
	t.Helper()
	cmd := exec.Command(helperExe, "-test.run=^TestDesktopServerProcess$")
	cmd.Env = []string{notifyServerEnv + "=" + mode, "DBUS_SESSION_BUS_ADDRESS=" + address}
	lines := startChild(t, cmd, nobody)
	if l := nextLine(t, lines, "notification server"); l != `{"AppName":"ready"}` {
		t.Fatalf("notification server said %q", l)
	}
	return lines
}

// desktopNotifier is a Notifier that finds sessions under runUser only:
// its system bus address leads nowhere, so logind cannot be asked.
func desktopNotifier(t *testing.T, base, runUser string, timeout time.Duration) *notifyFixture {
	return newNotifyFixture(t, func(c *NotifierConfig) {
		c.RunUserDir = runUser
		c.SystemBusAddress = "unix:path=" + filepath.Join(base, "no-system-bus")
		c.DesktopTimeout = timeout
		c.helperArgs = []string{"-test.run=^TestDesktopHelperProcess$"}
	})
}

const desktopRule = `
rules:
  - name: usb-stick
    match: action == "add"
    actions:
      - notify:
          message: "{{ fs.label }}"
          targets: [desktop: {}]
`

func TestDesktopNotifyAsSessionUser(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	desktopNeeds(t)
	base, runUser := desktopDir(t)
	addr := startBus(t, filepath.Join(runUser, fmt.Sprint(nobody), "bus"), nobody)
	calls := startNotifyServer(t, addr, "record")
	f := desktopNotifier(t, base, runUser, 20*time.Second)
	a, rule := f.action(t, desktopRule)

	for _, label := range hostileLabels {
		doQuickly(t, a, newTestContext(stickEvent(t, label), rule))
		var got notifyCall
		if err := json.Unmarshal([]byte(nextLine(t, calls, "Notify call")), &got); err != nil {
			t.Fatal(err)
		}
		want := notifyCall{
			AppName:   "hotplugd",
			Icon:      "drive-removable-media",
			Summary:   "usb-stick",
			Body:      escapedLabels[label],
			Actions:   []string{},
			Hints:     map[string]string{},
			Expire:    -1,
			SenderUID: nobody,
			ServerUID: nobody,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("label %q: Notify call (-want +got):\n%s", label, diff)
		}
	}
	f.drain(t)
	if got, want := f.n.Stats(), (NotifyStats{Delivered: uint64(len(hostileLabels))}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	var sent int
	for _, rec := range f.recs() {
		if rec.Msg == "desktop notification sent" && rec.Str("uid") == fmt.Sprint(nobody) && rec.Str("id") == "42" {
			sent++
		}
	}
	if sent != len(hostileLabels) {
		t.Errorf("%d 'sent' records with uid and id, want %d", sent, len(hostileLabels))
	}
}

// hungBus listens on sock as a bus that accepts connections and never
// says a word.
func hungBus(t *testing.T, sock string) {
	t.Helper()
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(sock, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
}

func TestDesktopHungIsSkipped(t *testing.T) {
	for _, hung := range []string{"bus", "notification server"} {
		t.Run(hung, func(t *testing.T) {
			t.Cleanup(func() { goleak.VerifyNone(t) })
			desktopNeeds(t)
			base, runUser := desktopDir(t)
			sock := filepath.Join(runUser, fmt.Sprint(nobody), "bus")
			if hung == "bus" {
				hungBus(t, sock)
			} else {
				startNotifyServer(t, startBus(t, sock, nobody), "hang")
			}
			f := desktopNotifier(t, base, runUser, 2*time.Second)
			a, rule := f.action(t, desktopRule)
			start := time.Now()
			doQuickly(t, a, newTestContext(stickEvent(t, "STICK"), rule))
			f.drain(t)
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("a hung %s held the delivery for %v", hung, d)
			}
			if got, want := f.n.Stats(), (NotifyStats{Failed: 1}); got != want {
				t.Errorf("Stats = %+v, want %+v", got, want)
			}
			var skipped []logtest.Record
			for _, rec := range f.recs() {
				if rec.Msg == "desktop notification skipped" {
					skipped = append(skipped, rec)
				}
			}
			if len(skipped) != 1 || skipped[0].Level != slog.LevelDebug || !strings.Contains(skipped[0].Str("err"), "killed") {
				t.Errorf("skip records %+v, want one at debug saying the helper was killed", skipped)
			}
		})
	}
}

func TestDesktopNoSession(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	looptest.Need(t, os.Geteuid() == 0, "root (to chown)")
	base, runUser := desktopDir(t) // 65534 has a directory but no bus
	f := desktopNotifier(t, base, runUser, 5*time.Second)
	a, rule := f.action(t, desktopRule)
	doQuickly(t, a, newTestContext(stickEvent(t, "STICK"), rule))
	f.drain(t)
	if got := f.n.Stats(); got != (NotifyStats{}) {
		t.Errorf("Stats = %+v, want none", got)
	}
	var found bool
	for _, rec := range f.recs() {
		if rec.Msg == "desktop notification skipped" {
			found = rec.Level == slog.LevelDebug && strings.Contains(rec.Str("reason"), "no active graphical session")
		}
	}
	if !found {
		t.Error("no debug record saying there was no session")
	}
}

// fakeLogind serves the part of org.freedesktop.login1 the Notifier
// reads: ListSessions and each session's properties.
type fakeLogind struct {
	sessions []login1SessionEntry
}

func (l *fakeLogind) ListSessions() ([]login1SessionEntry, *dbus.Error) { return l.sessions, nil }

type fakeSession map[string]dbus.Variant

func (s fakeSession) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	if iface != login1Session {
		return nil, dbus.MakeFailedError(fmt.Errorf("no interface %s", iface))
	}
	return s, nil
}

func TestDesktopSessionsFromLogind(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	desktopNeeds(t)
	base, runUser := desktopDir(t)
	addr := startBus(t, filepath.Join(base, "system_bus_socket"), 0)
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	v := dbus.MakeVariant
	sessions := []struct {
		uid   uint32
		props fakeSession
	}{
		{nobody, fakeSession{"Active": v(true), "Type": v("wayland"), "Class": v("user")}},
		{nobody, fakeSession{"Active": v(false), "Type": v("tty"), "Class": v("user")}},
		{1, fakeSession{"Active": v(true), "Type": v("tty"), "Class": v("user")}},
		{2, fakeSession{"Active": v(false), "Type": v("x11"), "Class": v("user")}},
		{3, fakeSession{"Active": v(true), "Type": v("x11"), "Class": v("greeter")}},
		{4, fakeSession{"Active": v(true), "Type": v("x11"), "Class": v("user")}}, // no bus
	}
	logind := &fakeLogind{}
	for i, s := range sessions {
		path := dbus.ObjectPath(fmt.Sprintf("/org/freedesktop/login1/session/_3%d", i))
		logind.sessions = append(logind.sessions, login1SessionEntry{ID: fmt.Sprint(i), UID: s.uid, Path: path})
		if err := conn.Export(s.props, path, dbusPropertiesIntf); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.Export(logind, login1Path, login1Manager); err != nil {
		t.Fatal(err)
	}
	if r, err := conn.RequestName(login1Name, dbus.NameFlagDoNotQueue); err != nil || r != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName: %v %v", r, err)
	}
	// nobody has a bus; uid 4 has none; uid 1 (a tty session) has a
	// runtime directory.
	hungBus(t, filepath.Join(runUser, fmt.Sprint(nobody), "bus"))
	if err := os.Mkdir(filepath.Join(runUser, "1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(runUser, "1"), 1, 1); err != nil {
		t.Fatal(err)
	}

	f := newNotifyFixture(t, func(c *NotifierConfig) {
		c.RunUserDir = runUser
		c.SystemBusAddress = addr
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	uids, err := logindUsers(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint32{4, nobody}, uids); diff != "" {
		t.Errorf("logind users (-want +got):\n%s", diff)
	}
	users, err := f.n.desktopUsers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []sessionUser{{uid: nobody, bus: filepath.Join(runUser, fmt.Sprint(nobody), "bus")}}
	if diff := cmp.Diff(want, users, cmp.AllowUnexported(sessionUser{})); diff != "" {
		t.Errorf("desktop users (-want +got):\n%s", diff)
	}
}

func TestDesktopRunUserScan(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	looptest.Need(t, os.Geteuid() == 0, "root (to chown)")
	_, runUser := desktopDir(t)
	hungBus(t, filepath.Join(runUser, fmt.Sprint(nobody), "bus"))
	mk := func(name string, uid int, mode os.FileMode) string {
		p := filepath.Join(runUser, name)
		var err error
		if mode.IsDir() {
			err = os.Mkdir(p, 0o700)
		} else {
			err = os.WriteFile(p, nil, 0o600)
		}
		if err == nil {
			err = os.Lchown(p, uid, uid)
		}
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	mk("1000", 0, os.ModeDir)                 // owned by root, not by 1000
	mk("0100", 100, os.ModeDir)               // not a canonical uid
	mk("abc", 0, os.ModeDir)                  // not a uid
	mk("1001", 1001, 0)                       // a file
	mk(filepath.Join("1000", "bus"), 1000, 0) // not a socket
	d := mk("1002", 1002, os.ModeDir)
	if err := os.Symlink(filepath.Join(runUser, fmt.Sprint(nobody), "bus"), filepath.Join(d, "bus")); err != nil {
		t.Fatal(err)
	}

	uids, err := scanRunUserDir(runUser)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint32{1000, 1002, nobody}, uids); diff != "" {
		t.Errorf("scanRunUserDir (-want +got):\n%s", diff)
	}
	for uid, want := range map[uint32]string{
		nobody: "",
		1000:   "not owned by the user",
		1002:   "not a socket",
		1003:   "no such file",
	} {
		_, err := userBus(runUser, uid)
		if want == "" && err != nil || want != "" && (err == nil || !strings.Contains(err.Error(), want)) {
			t.Errorf("userBus(%d) = %v, want %q", uid, err, want)
		}
	}
}

// The helper refuses anything on stdin but one notification.
func TestDesktopHelperInput(t *testing.T) {
	for _, in := range []string{"", "{", `{"body":"x","admin":true}`, strings.Repeat(" ", maxDesktopRequest+1)} {
		err := notifyHelper(strings.NewReader(in), io.Discard, "unix:path=/nonexistent")
		if err == nil || !strings.Contains(err.Error(), errHelperInput.Error()) {
			t.Errorf("input %.20q: err %v, want %v", in, err, errHelperInput)
		}
	}
}

// forkingHelperEnv makes TestDesktopForkingHelperProcess a helper that
// starts a child in its group and hangs, writing the child's pid to the
// file the variable names.
const forkingHelperEnv = "HOTPLUGD_TEST_FORKING_HELPER"

// TestDesktopForkingHelperProcess is not a test: it is a desktop helper
// that hangs after starting a child, when a test's Notifier runs it.
func TestDesktopForkingHelperProcess(*testing.T) {
	pidFile := os.Getenv(forkingHelperEnv)
	if pidFile == "" || len(os.Args) == 0 || os.Args[0] != notifyHelperArgv0 {
		return
	}
	child := exec.Command("/bin/sleep", "300")
	if err := child.Start(); err != nil {
		os.Exit(1)
	}
	os.WriteFile(pidFile, []byte(fmt.Sprint(child.Process.Pid)), 0o644)
	select {}
}

// TestDesktopHelperGroupKilled: a helper that misses the deadline is
// killed with its whole process group, children included.
func TestDesktopHelperGroupKilled(t *testing.T) {
	desktopNeeds(t)
	base, runUser := desktopDir(t)
	startBus(t, filepath.Join(runUser, fmt.Sprint(nobody), "bus"), nobody)
	pidFile := filepath.Join(base, "child.pid")
	if err := os.WriteFile(pidFile, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	os.Chmod(pidFile, 0o666) // the helper runs as nobody
	f := newNotifyFixture(t, func(c *NotifierConfig) {
		c.RunUserDir = runUser
		c.SystemBusAddress = "unix:path=" + filepath.Join(base, "no-system-bus")
		c.DesktopTimeout = 500 * time.Millisecond
		c.helperArgs = []string{"-test.run=^TestDesktopForkingHelperProcess$"}
		c.helperEnv = []string{forkingHelperEnv + "=" + pidFile}
	})
	a, rule := f.action(t, desktopRule)
	doQuickly(t, a, newTestContext(stickEvent(t, "STICK"), rule))
	f.drain(t)
	b, err := os.ReadFile(pidFile)
	if err != nil || len(b) == 0 {
		t.Fatalf("the helper started no child: %v", err)
	}
	var pid int
	fmt.Sscan(string(b), &pid)
	deadline := time.Now().Add(5 * time.Second)
	for unix.Kill(pid, 0) == nil {
		if time.Now().After(deadline) {
			unix.Kill(pid, unix.SIGKILL)
			t.Fatalf("the helper's child %d outlived its killed helper", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNotifyHelperNeedsArgv0: the environment alone does not make the
// binary a helper; `sudo -E hotplugd ...` keeps the caller's.
func TestNotifyHelperNeedsArgv0(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestDesktopHelperProcess$", "-test.v")
	cmd.Env = append(os.Environ(), notifyHelperEnv+"="+notifyHelperMode, "DBUS_SESSION_BUS_ADDRESS=unix:path=/nonexistent")
	cmd.Stdin = strings.NewReader(`{"summary":"x"}`)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PASS") || strings.Contains(string(out), "notify helper") {
		t.Errorf("with only the environment set the binary acted as the helper: %v\n%s", err, out)
	}
}
