package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/control"
	"github.com/hotplugd/hotplugd/internal/looptest"
	"golang.org/x/sys/unix"
)

// ctl runs the hotplugd binary's client verbs against the daemon's
// socket and returns stdout, stderr and the exit status.
func ctl(t *testing.T, bin string, cred *syscall.Credential, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	t.Fatalf("%s %q: %v", bin, args, err)
	return "", "", -1
}

func statusOf(t *testing.T, bin, socket string) control.Status {
	t.Helper()
	out, errOut, code := ctl(t, bin, nil, "status", "--json", "--socket", socket)
	if code != 0 {
		t.Fatalf("status: exit %d: %s", code, errOut)
	}
	var s control.Status
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return s
}

// TestControlStatusAfterMount: a daemon that handled a real uevent and
// mounted a real loop partition says so through status.
func TestControlStatusAfterMount(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	bin := amBuild(t)
	disk := amNewDisk(t, "ext4", "CTLSTATUS", nil)
	dm := amStart(t, bin, amConfig{disks: []*amDisk{disk}})
	disk.attach()
	mi := disk.waitMount(dm)
	// The mount is in mountinfo before its action returns and is counted:
	// settle waits for that.
	if _, err := control.NewClient(dm.socket).Settle(t.Context(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	s := statusOf(t, bin, dm.socket)
	if len(s.Rules) != 1 || s.Rules[0].Name != amRuleName || s.Rules[0].Matches != 1 || s.Rules[0].ActionsOK != 1 || s.Rules[0].LastMatch == nil {
		t.Errorf("rules %+v, want %s with 1 match and 1 action ok", s.Rules, amRuleName)
	}
	if len(s.Mounts) != 1 || s.Mounts[0].Path != mi.Mountpoint || s.Mounts[0].Devnode != disk.part() ||
		s.Mounts[0].Label != "CTLSTATUS" || s.Mounts[0].FSType != "ext4" || s.Mounts[0].Rule != amRuleName {
		t.Errorf("mounts %+v, want %s at %s", s.Mounts, disk.part(), mi.Mountpoint)
	}
	if !s.Config.ReloadOK || s.Config.Path != dm.rules || s.Events.Handled == 0 || s.Queue.Capacity != 4096 {
		t.Errorf("status %+v", s)
	}
	out, _, code := ctl(t, bin, nil, "status", "--socket", dm.socket)
	if code != 0 || !strings.Contains(out, mi.Mountpoint) || !strings.Contains(out, amRuleName) || !strings.Contains(out, "1 matches") {
		t.Errorf("status (human), exit %d:\n%s", code, out)
	}
	dm.stop()
	if _, err := os.Lstat(dm.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket is left after the daemon stopped: %v", err)
	}
	if _, errOut, code := ctl(t, bin, nil, "status", "--socket", dm.socket); code != 3 || strings.Count(errOut, "\n") != 1 {
		t.Errorf("status with no daemon: exit %d, %q; want 3 and one line", code, errOut)
	}
}

var nobody = &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}}

// openUp lets others reach the daemon's socket and run the binary (test
// directories and their parents are 0700).
func openUp(t *testing.T, dm *amDaemon) {
	t.Helper()
	for _, d := range []string{filepath.Dir(dm.rules), filepath.Dir(filepath.Dir(dm.rules)),
		filepath.Dir(dm.bin), filepath.Dir(filepath.Dir(dm.bin))} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestControlPermissions: who may do what comes from the kernel's word
// on the client (SO_PEERCRED): root everything; members of control.group
// read; everyone else nothing.
func TestControlPermissions(t *testing.T) {
	looptest.Require(t)
	bin := amBuild(t)
	for _, group := range []string{"", "nogroup"} {
		t.Run("group "+strconv.Quote(group), func(t *testing.T) {
			dm := amStart(t, bin, amConfig{group: group})
			openUp(t, dm)
			fi, err := os.Stat(dm.socket)
			if err != nil || fi.Mode().Perm() != 0o660 {
				t.Errorf("socket mode %v, %v; want 0660", fi.Mode(), err)
			}
			if st := fi.Sys().(*syscall.Stat_t); group == "nogroup" && st.Gid != 65534 {
				t.Errorf("socket group %d, want nogroup", st.Gid)
			}
			_, errOut, code := ctl(t, bin, nobody, "status", "--socket", dm.socket)
			switch {
			case group == "" && (code != 1 || !strings.Contains(errOut, "permission denied")):
				t.Errorf("status as nobody, no group: exit %d %q; want 1, permission denied", code, errOut)
			case group != "" && code != 0:
				t.Errorf("status as nobody in %s: exit %d %q", group, code, errOut)
			}
			for _, args := range [][]string{{"reload"}, {"eject", "/dev/null"}} {
				_, errOut, code := ctl(t, bin, nobody, append(args, "--socket", dm.socket)...)
				if code != 1 || !strings.Contains(errOut, "permission denied") {
					t.Errorf("%s as nobody: exit %d %q; want refused", args[0], code, errOut)
				}
			}
			if out, errOut, code := ctl(t, bin, nil, "reload", "--socket", dm.socket); code != 0 || out != "ok, 1 rule\n" {
				t.Errorf("reload as root: exit %d %q %q", code, out, errOut)
			}
		})
	}
}

// TestControlEject: eject unmounts what hotplugd mounted and removes the
// directory; busy, it names the holder and exits 3, unless --force; a
// mount hotplugd did not make is refused and left alone.
func TestControlEject(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	bin := amBuild(t)
	one, two := amNewDisk(t, "ext4", "EJECTONE", nil), amNewDisk(t, "ext4", "EJECTTWO", nil)
	dm := amStart(t, bin, amConfig{disks: []*amDisk{one, two}})
	one.attach()
	two.attach()
	mp := one.waitMount(dm).Mountpoint
	busyMP := two.waitMount(dm).Mountpoint

	out, errOut, code := ctl(t, bin, nil, "eject", "--socket", dm.socket, one.part())
	if code != 0 || !strings.Contains(out, one.part()+" unmounted from "+mp) {
		t.Errorf("eject %s: exit %d %q %q", one.part(), code, out, errOut)
	}
	one.waitUnmount()
	amGone(t, mp)
	if _, ok := amEntryAt(amState(t, dm.stateDir), mp); ok {
		t.Error("the ejected mount is still in the state file")
	}

	holder := exec.Command("/bin/sleep", "300")
	holder.Dir = busyMP
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Process.Kill(); holder.Wait() })
	_, errOut, code = ctl(t, bin, nil, "eject", "--socket", dm.socket, "LABEL=EJECTTWO")
	if code != 3 || !strings.Contains(errOut, strconv.Itoa(holder.Process.Pid)+" /bin/sleep 300") {
		t.Errorf("eject of a busy mount: exit %d %q; want 3 naming pid %d", code, errOut, holder.Process.Pid)
	}
	if two.mount() == nil {
		t.Fatal("the busy mount went although eject was refused")
	}
	out, errOut, code = ctl(t, bin, nil, "eject", "--socket", dm.socket, "--force", busyMP)
	if code != 0 || !strings.Contains(out, "detached (it was in use)") {
		t.Errorf("eject --force: exit %d %q %q", code, out, errOut)
	}
	two.waitUnmount()

	foreign := filepath.Join(dm.root, "foreign")
	if err := os.MkdirAll(foreign, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", foreign, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(foreign, unix.MNT_DETACH) })
	for _, target := range []string{foreign, "/", "UUID=" + one.uuid} {
		_, errOut, code = ctl(t, bin, nil, "eject", "--socket", dm.socket, target)
		if code != 1 || !strings.Contains(errOut, "hotplugd mounted nothing there") {
			t.Errorf("eject %s: exit %d %q; want refused", target, code, errOut)
		}
	}
	if mi := amMountsUnder(t, foreign); len(mi) != 1 {
		t.Errorf("the foreign mount was touched: %v", amMountpoints(mi))
	}
}

// TestControlReloadBroken: a broken file's problems come back
// positioned, the exit status is 1, and the old rules still fire.
func TestControlReloadBroken(t *testing.T) {
	bin := needBinary(t)
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	tag, out := newTag(), filepath.Join(dir, "out")
	writeRules(t, rulesPath, "", rule{name: "old", match: loMatch(tag), argv: []string{"/bin/sh", "-c", "echo old >> " + out}})
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)
	if err := os.WriteFile(rulesPath, []byte("rules:\n  - name: a\n    match: nope\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := ctl(t, bin, nil, "reload", "--socket", filepath.Join(dir, "control"))
	if code != 1 || !strings.Contains(errOut, rulesPath+":3:12: rule \"a\": match: unknown name nope\n") ||
		!strings.Contains(errOut, "the 1 rules loaded before stay in force") {
		t.Errorf("reload of a broken file: exit %d\n%s", code, errOut)
	}
	trigger(t, "/sys/class/net/lo/uevent", newUUID(), tag)
	if got := waitFile(t, out, 10*time.Second, func(s string) bool { return s != "" }); got != "old\n" {
		t.Errorf("after the refused reload the event ran %q", got)
	}
}

// TestControlSettle: settle returns only once a long action is done, and
// with a short timeout exits 1.
func TestControlSettle(t *testing.T) {
	bin := needBinary(t)
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	tag := newTag()
	writeRules(t, rulesPath, "", rule{name: "slow", match: loMatch(tag), argv: []string{"/bin/sleep", "2"}})
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)
	socket := filepath.Join(dir, "control")
	trigger(t, "/sys/class/net/lo/uevent", newUUID(), tag)
	if _, errOut, code := ctl(t, bin, nil, "settle", "--socket", socket, "--timeout", "300ms"); code != 1 || !strings.Contains(errOut, "timed out") {
		t.Errorf("settle during a 2s action with a 300ms timeout: exit %d %q", code, errOut)
	}
	start := time.Now()
	if _, errOut, code := ctl(t, bin, nil, "settle", "--socket", socket); code != 0 {
		t.Errorf("settle: exit %d %q", code, errOut)
	}
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Errorf("settle returned after %v, before the 2s action could finish", took)
	}
	s := statusOf(t, bin, socket)
	if s.Queue.Depth != 0 || s.Rules[0].ActionsOK != 1 {
		t.Errorf("after settle: queue %+v, rule %+v", s.Queue, s.Rules[0])
	}
}

// TestControlMetrics: /metrics on the socket, on TCP and in a textfile
// pass promtool, and their counters move with real events.
func TestControlMetrics(t *testing.T) {
	bin := needBinary(t)
	promtool, err := exec.LookPath("promtool")
	need(t, err == nil, "promtool (Debian package prometheus)")
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	textfile := filepath.Join(dir, "hotplugd.prom")
	tag, out := newTag(), filepath.Join(dir, "out")
	writeRules(t, rulesPath, "metrics: {listen: "+jsonString(addr)+", textfile: "+jsonString(textfile)+", interval: 100ms}",
		rule{name: "counted", match: loMatch(tag), argv: []string{"/bin/sh", "-c", "echo x >> " + out}})
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)
	for range 3 {
		trigger(t, "/sys/class/net/lo/uevent", newUUID(), tag)
	}
	waitFile(t, out, 10*time.Second, func(s string) bool { return s == "x\nx\nx\n" })
	c := control.NewClient(filepath.Join(dir, "control"))
	if _, err := c.Settle(t.Context(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	body := socketGet(t, filepath.Join(dir, "control"), "/metrics")
	text := string(body)
	for _, want := range []string{
		`hotplugd_rule_matches_total{rule="counted"} 3`,
		`hotplugd_actions_total{rule="counted",kind="run",result="ok"} 3`,
		`hotplugd_action_duration_seconds_count{kind="run"} 3`,
		`hotplugd_config_last_reload_successful 1`,
		`hotplugd_queue_events 0`,
		`hotplugd_uevents_dropped_total{reason="sender"} 0`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("/metrics lacks %q:\n%s", want, text)
		}
	}
	if n := metricValue(t, text, `hotplugd_events_handled_total{subsystem="net",action="change"}`); n < 3 {
		t.Errorf("events handled for net change: %v, want at least 3", n)
	}
	if n := metricValue(t, text, `hotplugd_uevents_received_total{source="kernel"}`); n < 3 {
		t.Errorf("uevents received: %v, want at least 3", n)
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = bytes.NewReader(body)
	if b, err := check.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, b)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics on TCP: %v", err)
	}
	tcp, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(tcp), `hotplugd_rule_matches_total{rule="counted"} 3`) {
		t.Errorf("metrics on TCP:\n%s", tcp)
	}
	waitFile(t, textfile, 10*time.Second, func(s string) bool { return strings.Contains(s, `hotplugd_rule_matches_total{rule="counted"} 3`) })
}

// metricValue is the value of one series in an exposition.
func metricValue(t *testing.T, text, series string) float64 {
	t.Helper()
	for line := range strings.Lines(text) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no series %s in:\n%s", series, text)
	return 0
}

// TestControlHostileClients: a client that connects and says nothing, and
// one that sends 100 MB, delay no event: a uevent's action still runs at
// once, and both are cut off.
func TestControlHostileClients(t *testing.T) {
	bin := needBinary(t)
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	tag, out := newTag(), filepath.Join(dir, "out")
	writeRules(t, rulesPath, "", rule{name: "fast", match: loMatch(tag), argv: []string{"/bin/sh", "-c", "echo x >> " + out}})
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)
	socket := filepath.Join(dir, "control")
	var silent []net.Conn
	for range 100 {
		c, err := net.Dial("unix", socket)
		if err != nil {
			break // the daemon stops accepting past its bound; that is fine
		}
		silent = append(silent, c)
	}
	t.Cleanup(func() {
		for _, c := range silent {
			c.Close()
		}
	})
	flood := make(chan error, 1)
	go func() {
		c, err := net.Dial("unix", socket)
		if err != nil {
			flood <- err
			return
		}
		defer c.Close()
		c.Write([]byte("POST /v1/eject HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n"))
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		for range 100 {
			if _, err := c.Write(chunk); err != nil {
				flood <- nil // cut off: what we wanted
				return
			}
		}
		flood <- errors.New("the daemon read 100 MB of a request body")
	}()
	start := time.Now()
	trigger(t, "/sys/class/net/lo/uevent", newUUID(), tag)
	waitFile(t, out, 10*time.Second, func(s string) bool { return s == "x\n" })
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the uevent's action ran after %v with hostile clients", took)
	}
	select {
	case err := <-flood:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(30 * time.Second):
		t.Error("the 100 MB client was never cut off")
	}
}

// socketGet is GET path on the control socket, the body of a 200.
func socketGet(t *testing.T, socket, path string) []byte {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	resp, err := hc.Get("http://hotplugd" + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", path, resp.Status, err)
	}
	return b
}
