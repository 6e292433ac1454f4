//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// The systemd scenarios share one guest with systemd as PID 1 and
// systemd-udevd running, where hotplugd is installed from its .deb and
// runs as the packaged service with the packaged rules.
const (
	unit      = "hotplugd.service"
	rulesPath = "/etc/hotplugd/rules.yaml"
	// serviceTimeout bounds systemctl start, stop and restart: stop may
	// wait 10s for running actions.
	serviceTimeout = 60 * time.Second
)

// sysGuest is the systemd-mode guest with the package installed.
type sysGuest struct {
	g *guest
	// good is the rules file as installed, plus the suite's rules.
	good string
}

// eventRules are added to the packaged rules: rules for events the test
// makes itself by writing to lo's uevent file (the kernel then sends a
// change with SYNTH_ARG_E2E=...).
const eventRules = `
  # The suite's rules.
  - name: e2e-ready
    match: action == "change" && subsystem == "net" && env.SYNTH_ARG_E2E == "ready"
    actions:
      - notify: {message: "seen"}

  - name: e2e-long-action
    match: action == "change" && subsystem == "net" && env.SYNTH_ARG_E2E == "long"
    actions:
      - run:
          argv: ["/bin/sh", "-c", "sleep 1001 & sleep 1002; wait"]
          timeout: 1h
`

// TestSystemd boots one guest with systemd as PID 1, installs the .deb
// and runs the service scenarios on it in order.
func TestSystemd(t *testing.T) {
	g := bootGuest(t, systemdMode)
	s := &sysGuest{g: g}
	s.install(t)
	t.Run("start_after_ready", s.testStartAfterReady)
	t.Run("broken_reload_keeps_rules", s.testBrokenReload)
	t.Run("restart_keeps_mount", s.testRestartKeepsMount)
	t.Run("journal_fields", s.testJournalFields)
	t.Run("watchdog_restarts_stopped_daemon", s.testWatchdog)
	t.Run("stop_ends_action_group", s.testStopEndsActions)
	t.Run("ntfs_survives_restart", s.testNTFSSurvivesRestart)
	t.Run("udev_and_kernel_sources", s.testSources)
	t.Run("no_uevent_dropped", s.testNoDrops)
}

// install waits for the boot to finish and installs the package, whose
// postinst enables and starts the service.
func (s *sysGuest) install(t *testing.T) {
	t.Helper()
	g := s.g
	r := g.tryStdin(t, "systemctl is-system-running --wait", "", 5*time.Minute)
	if state := strings.TrimSpace(r.stdout); state != "running" {
		t.Logf("the guest's boot ended %s:\n%s", state, g.try(t, "systemctl --failed --no-pager").stdout)
	}
	g.sh(t, "dpkg -i "+shq(g.deb)+" >/dev/null")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("journal of %s (end, without debug):\n%s", unit, g.try(t, "journalctl -u "+unit+" -p info --no-pager | tail -n 150").stdout)
		}
	})
	if st := s.show(t, "ActiveState"); st != "active" {
		t.Fatalf("after dpkg -i the service is %s, want active (the postinst starts it):\n%s", st, s.status(t))
	}
	// Debug: every event is logged, and every dropped one with its reason.
	s.good = setSetting(t, strings.TrimRight(g.sh(t, "cat "+rulesPath), "\n")+"\n"+eventRules, "log_level", "debug")
	g.writeGuestFile(t, rulesPath, s.good, 0o644)
	cur := s.cursor(t)
	s.systemctl(t, "reload")
	s.waitJournal(t, cur, 30*time.Second, "the suite's rules loaded", map[string]string{"msg": "rules reloaded"})
}

// systemctl runs systemctl VERB hotplugd.service and fails the test if it
// fails.
func (s *sysGuest) systemctl(t testing.TB, verb string) {
	t.Helper()
	r := s.g.tryStdin(t, "systemctl "+verb+" "+unit, "", serviceTimeout)
	if r.code != 0 {
		t.Fatalf("systemctl %s failed:\n%s\n%s", verb, r, s.status(t))
	}
}

// show returns a property of the unit.
func (s *sysGuest) show(t testing.TB, prop string) string {
	t.Helper()
	return strings.TrimSpace(s.g.sh(t, "systemctl show -p "+prop+" --value "+unit))
}

func (s *sysGuest) status(t testing.TB) string {
	t.Helper()
	return s.g.try(t, "systemctl status --no-pager -l "+unit).stdout
}

// waitStatus waits until the unit's STATUS= text satisfies ok.
func (s *sysGuest) waitStatus(t testing.TB, timeout time.Duration, what string, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := s.show(t, "StatusText")
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; the unit's status text is %q", timeout, what, st)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// journalEntry is one entry of `journalctl -o json`: every field as a
// string (binary fields, which journalctl gives as byte arrays, are
// left out).
type journalEntry map[string]string

// rec is the daemon's logfmt MESSAGE of the entry.
func (e journalEntry) rec() logRecord { return parseLogfmt(e["MESSAGE"]) }

// journal returns the unit's entries (the daemon's, and systemd's about
// the unit) after cursor ("" for all).
func (s *sysGuest) journal(t testing.TB, cursor string) []journalEntry {
	t.Helper()
	cmd := "journalctl -u " + unit + " -o json --no-pager"
	if cursor != "" {
		cmd += " --after-cursor=" + shq(cursor)
	}
	var out []journalEntry
	for line := range strings.SplitSeq(s.g.sh(t, cmd), "\n") {
		var raw map[string]json.RawMessage
		if json.Unmarshal([]byte(line), &raw) != nil {
			continue
		}
		e := journalEntry{}
		for k, v := range raw {
			var str string
			if json.Unmarshal(v, &str) == nil {
				e[k] = str
			}
		}
		out = append(out, e)
	}
	return out
}

// cursor is the position at the end of the journal now.
func (s *sysGuest) cursor(t testing.TB) string {
	t.Helper()
	var e struct {
		Cursor string `json:"__CURSOR"`
	}
	_ = json.Unmarshal([]byte(s.g.sh(t, "journalctl -n 1 -o json --no-pager")), &e)
	return e.Cursor
}

// findJournal returns the daemon's entries after cursor whose MESSAGE
// has every key of want.
func (s *sysGuest) findJournal(t testing.TB, cursor string, want map[string]string) []journalEntry {
	t.Helper()
	var out []journalEntry
	for _, e := range s.journal(t, cursor) {
		if e["SYSLOG_IDENTIFIER"] == "hotplugd" && e.rec().matches(want) {
			out = append(out, e)
		}
	}
	return out
}

// waitJournal waits for one entry of findJournal.
func (s *sysGuest) waitJournal(t testing.TB, cursor string, timeout time.Duration, what string, want map[string]string) journalEntry {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if es := s.findJournal(t, cursor, want); len(es) > 0 {
			return es[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: no journal entry with %v", timeout, what, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// synthScript makes the kernel send a change of lo with
// SYNTH_ARG_E2E=tag.
func synthScript(tag string) string {
	return "echo \"change $(cat /proc/sys/kernel/random/uuid) E2E=" + tag + "\" > /sys/class/net/lo/uevent"
}

// Scenario 7: systemctl start returns, and the unit is active, only
// once the daemon has said READY=1, which it says only when its uevent
// socket is bound and the rules compiled: an event made the moment
// start returns is handled.
func (s *sysGuest) testStartAfterReady(t *testing.T) {
	g := s.g
	s.systemctl(t, "stop")
	cur := s.cursor(t)
	// One script, so that the event follows the return of start at once.
	if r := g.tryStdin(t, "systemctl start "+unit+" && "+synthScript("ready"), "", serviceTimeout); r.code != 0 {
		t.Fatalf("systemctl start, then an event:\n%s\n%s", r, s.status(t))
	}
	if typ := s.show(t, "Type"); typ != "notify" {
		t.Errorf("the unit is Type=%s, want notify", typ)
	}
	if st, sub := s.show(t, "ActiveState"), s.show(t, "SubState"); st != "active" || sub != "running" {
		t.Errorf("after systemctl start the unit is %s (%s), want active (running)", st, sub)
	}
	s.waitJournal(t, cur, 30*time.Second, "the event made as systemctl start returned",
		map[string]string{"msg": "rule matched", "rule": "e2e-ready"})
	pid := s.show(t, "MainPID")
	// The daemon's netlink socket: NETLINK_KOBJECT_UEVENT is protocol
	// 15 in /proc/net/netlink, matched to the daemon's fds by inode.
	script := `for fd in /proc/` + pid + `/fd/*; do readlink "$fd"; done | sed -n 's/^socket:\[\(.*\)\]$/\1/p' > /run/e2e-inodes
awk 'NR > 1 && $2 == 15 { print $NF }' /proc/net/netlink | grep -Fxf /run/e2e-inodes`
	if r := g.try(t, script); r.code != 0 {
		t.Errorf("the running daemon (pid %s) holds no NETLINK_KOBJECT_UEVENT socket:\n%s", pid, r)
	}
	if st := s.show(t, "StatusText"); !strings.Contains(st, "rules") {
		t.Errorf("the unit's status text is %q, want the daemon's summary (STATUS=)", st)
	}
}

// Scenario 7: systemctl reload with a broken rules file keeps the old
// rules in force, and systemctl status says why.
func (s *sysGuest) testBrokenReload(t *testing.T) {
	g := s.g
	pid := s.show(t, "MainPID")
	t.Cleanup(func() {
		g.writeGuestFile(t, rulesPath, s.good, 0o644)
		g.try(t, "systemctl reload "+unit)
	})
	g.writeGuestFile(t, rulesPath, s.good+"\n  - name: broken\n    match: action ==\n    actions: []\n", 0o644)
	s.systemctl(t, "reload")
	st := s.waitStatus(t, 30*time.Second, "the failed reload in the unit's status", func(st string) bool {
		return strings.Contains(st, "reload failed")
	})
	if status := s.status(t); !strings.Contains(status, "reload failed") || !strings.Contains(status, rulesPath) {
		t.Errorf("systemctl status does not say the reload failed and why (status text %q):\n%s", st, status)
	}
	if now := s.show(t, "MainPID"); now != pid || s.show(t, "ActiveState") != "active" {
		t.Fatalf("after the broken reload the daemon is pid %s, %s; want pid %s, active", now, s.show(t, "ActiveState"), pid)
	}
	// The old rules still mount a stick.
	img := makeImage(t, g.dir, "s7reload", stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "vfat", label: "S7-RELOAD"}}})
	sk := g.plug(t, "s7reload", img)
	if _, ok := g.waitMount(t, "/media/S7-RELOAD", plugTimeout); !ok {
		t.Errorf("after the broken reload, the old rules did not mount a stick within %v", plugTimeout)
	}
	g.pullAll(t, []*stick{sk}, "/media/S7-RELOAD")

	g.writeGuestFile(t, rulesPath, s.good, 0o644)
	s.systemctl(t, "reload")
	s.waitStatus(t, 30*time.Second, "the good reload in the unit's status", func(st string) bool {
		return !strings.Contains(st, "error")
	})
}

// Scenario 7: systemctl restart keeps a mounted stick mounted: the new
// daemon adopts the mount from its state file and does not mount the
// device a second time.
func (s *sysGuest) testRestartKeepsMount(t *testing.T) {
	g := s.g
	img := makeImage(t, g.dir, "s7restart", stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "ext4", label: "S7-RESTART",
		files: map[string]string{"hello.txt": "hello\n"}}}})
	st := g.plug(t, "s7restart", img)
	if _, ok := g.waitMount(t, "/media/S7-RESTART", plugTimeout); !ok {
		t.Fatalf("/media/S7-RESTART was not mounted within %v", plugTimeout)
	}
	part := "/dev/" + g.diskOf(t, "s7restart") + "1"
	pid := s.show(t, "MainPID")
	cur := s.cursor(t)
	s.systemctl(t, "restart")
	if now := s.show(t, "MainPID"); now == pid {
		t.Fatalf("systemctl restart left the same daemon (pid %s)", pid)
	}
	// The restarted daemon's coldplug "add" of the partition finds the
	// mount it adopted.
	devpath := strings.TrimPrefix(strings.TrimSpace(g.sh(t, "readlink -f /sys/class/block/"+strings.TrimPrefix(part, "/dev/"))), "/sys")
	skip := s.waitJournal(t, cur, 60*time.Second, "the restarted daemon's coldplug of the stick",
		map[string]string{"msg": "action skipped", "rule": "usb-automount", "devpath": devpath})
	if !strings.Contains(skip.rec()["reason"], "already mounted") {
		t.Errorf("the restarted daemon skipped the mount of %s for another reason: %s", part, skip["MESSAGE"])
	}
	var mounts []string
	for _, m := range g.mounts(t) {
		if m.source == part {
			mounts = append(mounts, m.point)
		}
	}
	if !slices.Equal(mounts, []string{"/media/S7-RESTART"}) {
		t.Errorf("after the restart %s is mounted at %q, want once, at /media/S7-RESTART", part, mounts)
	}
	if got := g.try(t, "cat /media/S7-RESTART/hello.txt"); got.stdout != "hello\n" {
		t.Errorf("after the restart the stick does not read:\n%s", got)
	}
	if es := s.findJournal(t, cur, map[string]string{"msg": "mounted", "devnode": part}); len(es) > 0 {
		t.Errorf("the restarted daemon mounted %s again: %s", part, es[0]["MESSAGE"])
	}
	if es := s.findJournal(t, cur, map[string]string{"msg": "mounts reconciled"}); len(es) == 0 || es[0].rec()["kept"] != "1" {
		t.Errorf("the restarted daemon did not say it kept the one mount (mounts reconciled kept=1): %v", es)
	}
	if r := g.try(t, "grep -F S7-RESTART /run/hotplugd/mounts.json"); r.code != 0 {
		t.Errorf("the mount is no longer in the state file:\n%s", g.try(t, "cat /run/hotplugd/mounts.json").stdout)
	}
	g.pullAll(t, []*stick{st}, "/media/S7-RESTART")
}

// Scenario 7: journalctl -o json shows the log's attributes as fields of
// their own: RULE and DEVPATH of a matched rule.
func (s *sysGuest) testJournalFields(t *testing.T) {
	es := s.findJournal(t, "", map[string]string{"msg": "rule matched", "rule": "usb-automount"})
	if len(es) == 0 {
		t.Fatalf("no \"rule matched\" entry of usb-automount in the journal")
	}
	for _, e := range es {
		rec := e.rec()
		if e["RULE"] != rec["rule"] || e["DEVPATH"] != rec["devpath"] || !strings.HasPrefix(e["DEVPATH"], "/devices/") {
			t.Errorf("journal entry %q has RULE=%q DEVPATH=%q, want the fields of its message", e["MESSAGE"], e["RULE"], e["DEVPATH"])
		}
		if e["PRIORITY"] != "6" {
			t.Errorf("journal entry %q has PRIORITY=%q, want 6 (info)", e["MESSAGE"], e["PRIORITY"])
		}
	}
}

// Scenario 7: a daemon that stops answering (SIGSTOP) misses its
// watchdog pings and systemd restarts it. The unit's WatchdogSec=30s is
// shortened to 10s by a drop-in, to keep the suite short.
func (s *sysGuest) testWatchdog(t *testing.T) {
	g := s.g
	g.sh(t, "mkdir -p /run/systemd/system/"+unit+".d && printf '[Service]\\nWatchdogSec=10s\\n' > /run/systemd/system/"+unit+".d/watchdog.conf && systemctl daemon-reload")
	t.Cleanup(func() {
		g.try(t, "rm -rf /run/systemd/system/"+unit+".d && systemctl daemon-reload")
	})
	s.systemctl(t, "restart")
	pid, restarts := s.show(t, "MainPID"), s.show(t, "NRestarts")
	cur := s.cursor(t)
	g.sh(t, "kill -STOP "+pid)
	deadline := time.Now().Add(90 * time.Second)
	for {
		if now := s.show(t, "MainPID"); now != pid && now != "0" && s.show(t, "ActiveState") == "active" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stopped daemon (pid %s) was not restarted within 90s:\n%s", pid, s.status(t))
		}
		time.Sleep(time.Second)
	}
	if now := s.show(t, "NRestarts"); now == restarts {
		t.Errorf("NRestarts is still %s", now)
	}
	var saw bool
	for _, e := range s.journal(t, cur) {
		saw = saw || strings.Contains(e["MESSAGE"], "Watchdog timeout")
	}
	if !saw {
		t.Errorf("systemd did not log a watchdog timeout for the unit")
	}
}

// Scenario 7: systemctl stop ends a running action's whole process
// group: the daemon kills it once its stop deadline passes, and exits
// 0; systemd finds nothing left to kill.
func (s *sysGuest) testStopEndsActions(t *testing.T) {
	g := s.g
	t.Cleanup(func() {
		g.try(t, "pkill -KILL -f 'sleep 100[12]'")
		g.try(t, "systemctl start "+unit)
	})
	cur := s.cursor(t)
	g.sh(t, synthScript("long"))
	g.eventually(t, 30*time.Second, "the action's two processes", "pgrep -f 'sleep 1001' && pgrep -f 'sleep 1002'")
	pgid := strings.TrimSpace(g.sh(t, "ps -o pgid= -p $(pgrep -f 'sleep 1002')"))
	start := time.Now()
	s.systemctl(t, "stop")
	t.Logf("systemctl stop took %v", time.Since(start).Round(100*time.Millisecond))
	if r := g.try(t, "pgrep -a -f 'sleep 100[12]'"); r.code == 0 {
		t.Errorf("after systemctl stop the action's processes (group %s) remain:\n%s", pgid, r.stdout)
	}
	if res, code := s.show(t, "Result"), s.show(t, "ExecMainStatus"); res != "success" || code != "0" {
		t.Errorf("the service stopped with result %s, status %s; want success, 0", res, code)
	}
	if es := s.findJournal(t, cur, map[string]string{"msg": "stop deadline passed: killing running actions"}); len(es) == 0 {
		t.Errorf("the daemon did not say it killed the running action")
	}
	for _, e := range s.journal(t, cur) {
		if strings.Contains(e["MESSAGE"], "Killing process") {
			t.Errorf("systemd had to kill what the daemon left: %s", e["MESSAGE"])
		}
	}
}

// Scenario 8: an NTFS stick mounted through ntfs-3g (a FUSE daemon)
// survives systemctl restart: the helper must not die with the
// service's processes, or the mount answers ENOTCONN and unwritten data
// is lost.
func (s *sysGuest) testNTFSSurvivesRestart(t *testing.T) {
	g := s.g
	img := makeImage(t, g.dir, "s8ntfs", stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "ntfs", label: "S8-NTFS"}}})
	st := g.plug(t, "s8ntfs", img)
	m, ok := g.waitMount(t, "/media/S8-NTFS", plugTimeout)
	if !ok {
		t.Fatalf("/media/S8-NTFS was not mounted within %v", plugTimeout)
	}
	if m.fstype != "fuseblk" {
		t.Errorf("/media/S8-NTFS is %s, want fuseblk (ntfs-3g)", m.fstype)
	}
	helper := strings.TrimSpace(g.sh(t, "pgrep -o ntfs-3g"))
	cgroup := strings.TrimSpace(g.sh(t, "cat /proc/"+helper+"/cgroup"))
	g.sh(t, "echo before-restart > /media/S8-NTFS/data.txt")
	cur := s.cursor(t)
	s.systemctl(t, "restart")
	s.waitJournal(t, cur, 60*time.Second, "the restarted daemon's coldplug", map[string]string{"msg": "coldplug: existing devices queued"})
	r := g.try(t, "cat /media/S8-NTFS/data.txt")
	if r.code != 0 || r.stdout != "before-restart\n" {
		t.Errorf("after systemctl restart the NTFS stick does not read (ntfs-3g pid %s was in %s; now: %s):\n%s",
			helper, cgroup, strings.TrimSpace(g.try(t, "pgrep -a ntfs-3g || echo no ntfs-3g runs").stdout), r)
	}
	g.pullAll(t, []*stick{st}, "/media/S8-NTFS")
}

// sourceRule matches only events that carry udev's properties.
const sourceRule = `
  - name: udev-properties
    match: action == "add" && subsystem == "block" && env.ID_BUS == "usb" && env.ID_FS_USAGE == "filesystem"
    actions:
      - notify:
          message: '{{ env.ID_BUS }} {{ env.ID_FS_TYPE }} {{ env.ID_FS_LABEL }} {{ env.ID_SERIAL_SHORT }}'
`

// Scenario 9: with the guest's systemd-udevd running, source udev and
// source auto get the stick's events from udevd, with its properties,
// and mount it; source kernel still mounts it, on the kernel's events.
// Each runs as its own daemon, with the service stopped.
func (s *sysGuest) testSources(t *testing.T) {
	g := s.g
	s.systemctl(t, "stop")
	t.Cleanup(func() { g.try(t, "systemctl start "+unit) })
	img := makeImage(t, g.dir, "s9", stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "vfat", label: "S9-STICK"}}})
	for _, c := range []struct{ source, got string }{{"udev", "udev"}, {"auto", "udev"}, {"kernel", "kernel"}} {
		t.Run(c.source, func(t *testing.T) {
			id := "s9" + c.source
			conf := "/run/e2e/" + c.source + ".yaml"
			rules := shippedRules(t, sourceRule)
			rules = setSetting(t, rules, "source", c.source)
			rules = setSetting(t, rules, "coldplug", "false")
			rules = setSetting(t, rules, "state_dir", "/run/e2e/state-"+c.source)
			g.writeGuestFile(t, conf, rules, 0o644)
			log := &logFile{g: g, path: "/run/e2e/" + c.source + ".log"}
			pid := g.startBackground(t, "exec "+shq(g.bin)+" run --config "+conf+" >"+log.path+" 2>&1")
			t.Cleanup(func() { g.try(t, fmt.Sprintf("kill -TERM %d", pid)) })
			log.waitLog(t, 0, 60*time.Second, "the daemon's start", map[string]string{"msg": "hotplugd running", "source": c.got})

			st := g.plug(t, id, img)
			if _, ok := g.waitMount(t, "/media/S9-STICK", plugTimeout); !ok {
				t.Errorf("source %s: the stick was not mounted within %v", c.source, plugTimeout)
			}
			matched := log.findLog(t, 0, map[string]string{"msg": "rule matched", "rule": "usb-automount", "action": "add"})
			if len(matched) != 1 || matched[0]["source"] != c.got {
				t.Errorf("source %s: usb-automount matched %v, want once, on an event of source %s", c.source, matched, c.got)
			}
			notes := log.findLog(t, 0, map[string]string{"msg": "notification", "rule": "udev-properties"})
			switch {
			case c.got == "udev" && (len(notes) != 1 || notes[0]["message"] != "usb vfat S9-STICK "+id):
				t.Errorf("source %s: the rule on udev's properties said %v, want once \"usb vfat S9-STICK %s\"", c.source, notes, id)
			case c.got == "kernel" && len(notes) != 0:
				t.Errorf("source kernel: the rule on udev's properties matched a kernel event: %v", notes)
			}
			g.pullAll(t, []*stick{st}, "/media/S9-STICK")
			g.sh(t, fmt.Sprintf("kill -TERM %d", pid))
			stopped := log.waitLog(t, 0, 30*time.Second, "the daemon's stop", map[string]string{"msg": "stopped"})
			if stopped["dropped"] != "0" {
				t.Errorf("source %s: the daemon dropped %s of %s messages", c.source, stopped["dropped"], stopped["received"])
			}
		})
	}
}

// Scenario 5, under systemd: every stop of the service over the group
// said it dropped nothing.
func (s *sysGuest) testNoDrops(t *testing.T) {
	es := s.findJournal(t, "", map[string]string{"msg": "stopped"})
	if len(es) == 0 {
		t.Fatalf("the journal has no stop line of the daemon")
	}
	var why []string
	for _, e := range s.findJournal(t, "", map[string]string{"msg": "dropped uevent"}) {
		r := e.rec()
		why = append(why, fmt.Sprintf("%s: %s (%s bytes, from port %s): %q", r["reason"], r["error"], r["len"], r["port"], r["head"]))
	}
	for _, e := range es {
		if rec := e.rec(); rec["dropped"] != "0" {
			t.Errorf("a stop of the service: %s; the daemon logged:\n%s", e["MESSAGE"], strings.Join(why, "\n"))
		}
	}
}
