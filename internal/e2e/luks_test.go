//go:build e2e

package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// The LUKS scenarios share a shell-mode guest of their own: the USB
// scenarios' daemon with these rules added, and sticks whose partition
// is a LUKS2 volume made on this machine with an ext4 inside.
const (
	luksKeys = "/run/e2e/keys"
	luksSeen = "/run/e2e/luks-seen"                   // what the run after the unlock saw
	luksProc = "/run/e2e/procs.log"                   // the process sampler's
	luksUUID = "0f2d4c6e-1a3b-4c5d-8e9f-a1b2c3d4e5f6" // the sticks of the good key
	swapUUID = "5a4b3c2d-1e0f-4a9b-8c7d-6e5f4a3b2c1d" // the stick whose keyfile becomes a symlink
	lockUUID = "7c6b5a49-3827-4165-9efd-cba987654321" // the stick a rule only unlocks
	luksName = "luks-" + luksUUID
	luksNode = "/dev/mapper/" + luksName
	luksPath = "/media/LUKSDATA"
)

// luksRules unlock the sticks of luksUUID with stick.key, mount what is
// inside and record what a run after them sees; swapped-key's keyfile
// is made a symlink after the rules loaded; unlock-only opens the
// sticks of lockUUID and mounts nothing.
const luksRules = `
  - name: backup-luks
    match: action == "add" && subsystem == "block" && fs.type == "crypto_LUKS" && fs.uuid == "` + luksUUID + `"
    actions:
      - unlock: {keyfile: ` + luksKeys + `/stick.key}
      - mount: {options: [noatime]}
      - run:
          argv: [/bin/sh, -c, 'echo "$0 $1" > ` + luksSeen + `', "{{ unlock.device }}", "{{ mount.path }}"]

  - name: swapped-key
    match: action == "add" && subsystem == "block" && fs.type == "crypto_LUKS" && fs.uuid == "` + swapUUID + `"
    actions:
      - unlock: {keyfile: ` + luksKeys + `/swap.key}
      - mount: {}

  - name: unlock-only
    match: action == "add" && subsystem == "block" && fs.type == "crypto_LUKS" && fs.uuid == "` + lockUUID + `"
    actions:
      - unlock: {keyfile: ` + luksKeys + `/stick.key}
`

// luksPBKDF is the key derivation of the sticks: LUKS2's argon2id, with
// a fixed cost (64 MiB, 4 passes) rather than cryptsetup's benchmark of
// this machine, which would take the guest far longer than 2 seconds.
var luksPBKDF = []string{"--pbkdf", "argon2id", "--pbkdf-memory", "65536", "--pbkdf-force-iterations", "4", "--pbkdf-parallel", "1"}

// luksGuest is the guest of the LUKS scenarios.
type luksGuest struct {
	*usbGuest
	key      string // the key, as text: what must be found nowhere
	keyFile  string // on this machine, for the sticks
	otherKey string // a key no rule has
	timings  []string
}

// TestLUKS boots one guest and runs the LUKS scenarios on it in order.
func TestLUKS(t *testing.T) {
	looptest.Need(t, looptest.ToolPath("cryptsetup") != "", "cryptsetup (Debian: cryptsetup-bin)")
	g := bootGuest(t, shellMode)
	l := startLUKS(t, g)
	t.Run("plug", l.testPlug)
	t.Run("pulled_while_busy", l.testPulledBusy)
	t.Run("refused", l.testRefused)
	t.Run("eject", l.testEject)
	t.Run("eject_unmounted", l.testEjectUnmounted)
	t.Run("media_change", l.testMediaChange)
	t.Run("kill_9_restart", l.testKillRestart)
	t.Run("key_nowhere", l.testKeyNowhere)
	for _, s := range l.timings {
		t.Log(s)
	}
}

func startLUKS(t *testing.T, g *guest) *luksGuest {
	t.Helper()
	l := &luksGuest{key: randomKey(t), keyFile: filepath.Join(g.dir, "stick.key"), otherKey: filepath.Join(g.dir, "other.key")}
	writeFile(t, l.keyFile, l.key, 0o600)
	writeFile(t, l.otherKey, randomKey(t), 0o600)
	g.sh(t, "mkdir -m 0700 -p "+luksKeys)
	g.writeGuestFile(t, luksKeys+"/stick.key", l.key, 0o600)
	g.writeGuestFile(t, luksKeys+"/swap.key", l.key, 0o600)
	l.usbGuest = startUSBWith(t, g, suiteRules+luksRules)
	return l
}

func randomKey(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// luksStick is the image of a stick with one partition, a LUKS2 volume
// of uuid made with key, holding an ext4 labelled label (none when
// label is "").
func (l *luksGuest) luksStick(t *testing.T, name, uuid, key, label string) string {
	t.Helper()
	fs := fsSpec{luks: &luksSpec{key: key, uuid: uuid, pbkdf: luksPBKDF}}
	if label != "" {
		fs.fs, fs.label, fs.files = "ext4", label, map[string]string{"hello.txt": "inside " + name + "\n"}
	}
	return makeImage(t, l.g.dir, name, stickSpec{size: 64 * mib, parts: []fsSpec{fs}})
}

// plugTimed plugs img and returns how long it took until point was
// mounted, as this side sees it (within the 250 ms the polls take).
func (l *luksGuest) plugTimed(t *testing.T, id, img, point string) (*stick, mountInfo, time.Duration) {
	t.Helper()
	start := time.Now()
	s := l.g.plug(t, id, img)
	m, ok := l.g.waitMount(t, point, plugTimeout)
	if !ok {
		t.Fatalf("%s was not mounted within %v; the daemon said:\n%s", point, plugTimeout,
			l.g.try(t, "grep -v level=DEBUG "+shellLog+" | tail -n 30").stdout)
	}
	return s, m, time.Since(start)
}

// daemonTime is how long the daemon took from the rule's match to the
// mount at point, by the times of its log lines after mark.
func (l *luksGuest) daemonTime(t *testing.T, mark int, rule, point string) time.Duration {
	t.Helper()
	matched := l.findLog(t, mark, map[string]string{"msg": "rule matched", "rule": rule})
	mounted := l.findLog(t, mark, map[string]string{"msg": "mounted", "path": point})
	if len(matched) == 0 || len(mounted) == 0 {
		return 0
	}
	a, err1 := time.Parse(time.RFC3339Nano, matched[0]["time"])
	b, err2 := time.Parse(time.RFC3339Nano, mounted[0]["time"])
	if err1 != nil || err2 != nil {
		return 0
	}
	return b.Sub(a)
}

// mappingGone is a script that succeeds when the guest's kernel has no
// mapping name.
func mappingGone(name string) string {
	return "! grep -qx " + shq(name) + " /sys/block/dm-*/dm/name 2>/dev/null"
}

// Scenario L1: a LUKS2 stick is unlocked, the ext4 inside mounted at
// <mount_root>/<label> from /dev/mapper/luks-<uuid>, and the run after
// them sees {{ unlock.device }} and {{ mount.path }}; status lists the
// mapping; a pull closes it. Plain ext4 sticks before it say what the
// unlock costs, plugged cold (the drivers load) and warm.
func (l *luksGuest) testPlug(t *testing.T) {
	g := l.g
	var plain [2]time.Duration
	var plainDaemon time.Duration
	for i := range plain {
		id := []string{"l1plainA", "l1plainB"}[i]
		img := makeImage(t, g.dir, id, stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "ext4", label: "L1-PLAIN"}}})
		mark := l.logMark(t)
		var s *stick
		s, _, plain[i] = l.plugTimed(t, id, img, "/media/L1-PLAIN")
		plainDaemon = l.daemonTime(t, mark, "usb-automount", "/media/L1-PLAIN")
		g.pullAll(t, []*stick{s}, "/media/L1-PLAIN")
	}
	var luks [2]time.Duration
	var luksDaemon [2]time.Duration
	var cryptsetup [2]string
	for i := range luks {
		id := []string{"l1luksA", "l1luksB"}[i]
		img := l.luksStick(t, id, luksUUID, l.keyFile, "LUKSDATA")
		g.sh(t, "rm -f "+luksSeen)
		mark := l.logMark(t)
		s, m, d := l.plugTimed(t, id, img, luksPath)
		luks[i], luksDaemon[i] = d, l.daemonTime(t, mark, "backup-luks", luksPath)
		for _, r := range l.findLog(t, mark, map[string]string{"msg": "run finished", "rule": "backup-luks"}) {
			if strings.Contains(r["argv"], "cryptsetup open") {
				cryptsetup[i] = r["duration"]
			}
		}
		l.checkUnlocked(t, mark, id, m)
		g.pullAll(t, []*stick{s}, luksPath)
		g.eventually(t, pullTimeout, "the mapping to be closed", mappingGone(luksName))
		if recs := l.findLog(t, mark, map[string]string{"msg": "mapping closed", "mapping": luksName}); len(recs) != 1 {
			t.Errorf("%d log lines say %s was closed, want 1", len(recs), luksName)
		}
	}
	l.timings = append(l.timings,
		"plug to mounted, plain ext4 stick: "+round(plain[0])+" the first time (drivers load), "+round(plain[1])+
			" the next; daemon, rule matched to mounted: "+round(plainDaemon),
		"plug to mounted, LUKS2 stick (argon2id 64 MiB x4) with an ext4 inside: "+round(luks[0])+
			" the first time (device-mapper and the ciphers load), "+round(luks[1])+" the next; daemon, rule matched to mounted: "+
			round(luksDaemon[0])+", "+round(luksDaemon[1])+"; of which cryptsetup open: "+cryptsetup[0]+", "+cryptsetup[1])
}

func round(d time.Duration) string { return d.Round(10 * time.Millisecond).String() }

// checkUnlocked checks a mounted LUKS stick: the cleartext mounted with
// the safe options, readable, what the run saw, and status.
func (l *luksGuest) checkUnlocked(t *testing.T, mark int, id string, m mountInfo) {
	t.Helper()
	g := l.g
	if m.source != luksNode || m.fstype != "ext4" {
		t.Errorf("%s: %s %s mounted, want ext4 %s", luksPath, m.fstype, m.source, luksNode)
	}
	wantOptions(t, m, "nosuid", "nodev", "noexec", "noatime", "errors=remount-ro")
	if got := g.try(t, "cat "+luksPath+"/hello.txt"); got.stdout != "inside "+id+"\n" {
		t.Errorf("hello.txt inside: %s", got)
	}
	seen := g.eventually(t, 20*time.Second, "the run after the mount", "cat "+luksSeen)
	if want := luksNode + " " + luksPath + "\n"; seen != want {
		t.Errorf("the run saw %q, want %q", seen, want)
	}
	disk := g.diskOf(t, id)
	unlocked := l.findLog(t, mark, map[string]string{"msg": "unlocked", "mapping": luksName})
	if len(unlocked) != 1 || unlocked[0]["devnode"] != "/dev/"+disk+"1" || unlocked[0]["cleartext"] != luksNode {
		t.Errorf("log of the unlock: %v", unlocked)
	}
	var st struct {
		Mappings []struct{ Name, Device, Backing, Path string }
	}
	if err := json.Unmarshal([]byte(g.sh(t, shq(g.bin)+" status --json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Mappings) != 1 || st.Mappings[0].Name != luksName || st.Mappings[0].Device != luksNode ||
		st.Mappings[0].Backing != "/dev/"+disk+"1" || st.Mappings[0].Path != luksPath {
		t.Errorf("status mappings: %+v", st.Mappings)
	}
}

// Scenario L2: pulled while a process has its working directory inside:
// the cleartext is detached lazily and its directory removed; the
// mapping, still in use, is closed deferred and goes once the process
// exits.
func (l *luksGuest) testPulledBusy(t *testing.T) {
	g := l.g
	img := l.luksStick(t, "l2busy", luksUUID, l.keyFile, "LUKSDATA")
	mark := l.logMark(t)
	s, _, _ := l.plugTimed(t, "l2busy", img, luksPath)
	pid := strings.TrimSpace(g.sh(t, "cd "+luksPath+" && { setsid sleep 3600 </dev/null >/dev/null 2>&1 & echo $!; }"))
	t.Cleanup(func() { g.try(t, "kill "+pid) })
	s.pull(t)
	if !g.waitUnmounted(t, luksPath, pullTimeout) {
		t.Errorf("%s still mounted, or its directory there, after the pull:\n%s", luksPath, g.try(t, "grep -F /media /proc/self/mountinfo").stdout)
	}
	// Logged once the mapping is closed too.
	lazy := l.waitLog(t, mark, pullTimeout, "the lazy unmount", map[string]string{
		"msg": "removed while in use: lazily unmounted", "path": luksPath})
	if lazy["dir_removed"] != "true" {
		t.Errorf("log of the lazy unmount: %v", lazy)
	}
	l.waitLog(t, mark, pullTimeout, "the deferred close", map[string]string{
		"msg": "mapping in use: the kernel removes it once its last user lets go", "mapping": luksName})
	if r := g.try(t, mappingGone(luksName)); r.code == 0 {
		t.Errorf("the mapping is gone while the process still uses the filesystem on it; want it deferred")
	}
	g.sh(t, "kill "+pid)
	g.eventually(t, pullTimeout, "the deferred mapping to go once its last user exited", mappingGone(luksName))
}

// Scenario L3: a wrong key, a keyfile replaced by a symlink after the
// rules loaded, and a keyfile others may read (refused when the rules
// load): nothing mounted, nothing left open, and the daemon goes on.
func (l *luksGuest) testRefused(t *testing.T) {
	g := l.g
	// A stick with the UUID of the rule, but not its key.
	wrong := l.luksStick(t, "l3wrong", luksUUID, l.otherKey, "")
	mark := l.logMark(t)
	s := g.plug(t, "l3wrong", wrong)
	failed := l.waitLog(t, mark, plugTimeout, "the failed unlock", map[string]string{"msg": "action failed", "rule": "backup-luks"})
	if !strings.Contains(failed["err"], "wrong key") {
		t.Errorf("the unlock with the wrong key failed with %q", failed["err"])
	}
	l.nothingOpen(t)
	g.pullAll(t, []*stick{s})

	// The keyfile, checked when the rules loaded, made a symlink to
	// the very key: refused at use.
	g.sh(t, "cd "+luksKeys+" && mv swap.key swap.real && ln -s swap.real swap.key")
	swapped := l.luksStick(t, "l3swap", swapUUID, l.keyFile, "SWAPPED")
	mark = l.logMark(t)
	s = g.plug(t, "l3swap", swapped)
	failed = l.waitLog(t, mark, plugTimeout, "the refused unlock", map[string]string{"msg": "action failed", "rule": "swapped-key"})
	if !strings.Contains(failed["err"], "is a symlink") {
		t.Errorf("the unlock through a symlinked keyfile failed with %q", failed["err"])
	}
	if _, ok := g.waitMount(t, "/media/SWAPPED", 2*time.Second); ok {
		t.Error("the stick of the symlinked keyfile was mounted")
	}
	l.nothingOpen(t)
	g.pullAll(t, []*stick{s})
	g.sh(t, "cd "+luksKeys+" && rm swap.key && mv swap.real swap.key")

	// A keyfile others may read: the rules are refused when they load.
	g.writeGuestFile(t, luksKeys+"/open.key", l.key, 0o644)
	good := g.sh(t, "cat "+shellRules)
	bad := good + "\n  - name: open-key\n    match: fs.type == \"crypto_LUKS\"\n    actions:\n      - unlock: {keyfile: " + luksKeys + "/open.key}\n"
	g.writeGuestFile(t, shellRules, bad, 0o644)
	want := "unsafe keyfile: " + luksKeys + "/open.key is readable by its group or others"
	if r := g.try(t, shq(g.bin)+" check --config "+shellRules); r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Errorf("check of a rule with a keyfile others may read:\n%s", r)
	}
	if r := g.try(t, shq(g.bin)+" reload"); r.code != 1 || !strings.Contains(r.stdout+r.stderr, want) {
		t.Errorf("reload of a rule with a keyfile others may read:\n%s", r)
	}
	g.writeGuestFile(t, shellRules, good, 0o644)
	g.sh(t, "rm "+luksKeys+"/open.key && "+shq(g.bin)+" reload")

	// The daemon goes on: the next stick is mounted.
	img := makeImage(t, g.dir, "l3after", stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "ext4", label: "L3-AFTER"}}})
	after, _, _ := l.plugTimed(t, "l3after", img, "/media/L3-AFTER")
	g.pullAll(t, []*stick{after}, "/media/L3-AFTER")
}

// nothingOpen checks that the guest has no mapping and hotplugd nothing
// mounted or recorded.
func (l *luksGuest) nothingOpen(t *testing.T) {
	t.Helper()
	g := l.g
	if r := g.try(t, "cat /sys/block/dm-*/dm/name 2>/dev/null; grep -F /media/ /proc/self/mountinfo"); r.stdout != "" {
		t.Errorf("left open or mounted:\n%s", r.stdout)
	}
	var st struct {
		Mounts   []json.RawMessage
		Mappings []json.RawMessage
	}
	if err := json.Unmarshal([]byte(g.sh(t, shq(g.bin)+" status --json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Mounts)+len(st.Mappings) != 0 {
		t.Errorf("status: mounts %s, mappings %s", st.Mounts, st.Mappings)
	}
}

// Scenario L4: `hotplugd eject` of the stick's disk unmounts the
// cleartext, removes its directory and closes the mapping, while a
// sampler records every process's command line and environment, for
// key_nowhere.
func (l *luksGuest) testEject(t *testing.T) {
	g := l.g
	img := l.luksStick(t, "l4eject", luksUUID, l.keyFile, "LUKSDATA")
	// Three programs a round, so that it samples often under TCG.
	sampler := g.startBackground(t, `while :; do
	ps -eww -o pid=,args=
	cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ
done >> `+luksProc+` 2>/dev/null`)
	_, _, _ = l.plugTimed(t, "l4eject", img, luksPath)
	g.sh(t, "kill "+strconv.Itoa(sampler))
	disk := g.diskOf(t, "l4eject")
	r := g.try(t, shq(g.bin)+" eject /dev/"+disk)
	if r.code != 0 || !strings.Contains(r.stdout, luksNode+" unmounted from "+luksPath) || !strings.Contains(r.stdout, luksName+" closed") {
		t.Errorf("eject of the disk:\n%s", r)
	}
	if !g.waitUnmounted(t, luksPath, 5*time.Second) {
		t.Errorf("%s still mounted, or its directory there, after the eject", luksPath)
	}
	if r := g.try(t, mappingGone(luksName)); r.code != 0 {
		t.Error("the mapping is still open after the eject")
	}
	if r := g.try(t, "grep -a -c 'cryptsetup open' "+luksProc); r.code != 0 {
		t.Errorf("the sampler never caught cryptsetup running; key_nowhere would check nothing of it")
	}
}

// Scenario L7: a rule that only unlocks leaves the mapping open with
// nothing mounted; `hotplugd eject` of the partition closes it and says
// so, and so does the eject of the whole disk once the partition's add
// has opened it again.
func (l *luksGuest) testEjectUnmounted(t *testing.T) {
	g := l.g
	name := "luks-" + lockUUID
	img := l.luksStick(t, "l7unlock", lockUUID, l.keyFile, "")
	mark := l.logMark(t)
	s := g.plug(t, "l7unlock", img)
	l.waitLog(t, mark, plugTimeout, "the unlock", map[string]string{"msg": "unlocked", "mapping": name})
	disk := g.diskOf(t, "l7unlock")
	for i, target := range []string{"/dev/" + disk + "1", "/dev/" + disk} {
		if i > 0 {
			mark = l.logMark(t)
			g.sh(t, "echo add > /sys/class/block/"+disk+"1/uevent")
			l.waitLog(t, mark, plugTimeout, "the unlock again", map[string]string{"msg": "unlocked", "mapping": name})
		}
		g.sh(t, "test -e /dev/mapper/"+name)
		r := g.try(t, shq(g.bin)+" eject "+target)
		if r.code != 0 || !strings.Contains(r.stdout, name+" closed") {
			t.Errorf("eject of %s, whose mapping is open and not mounted:\n%s", target, r)
		}
		if _, ok := g.waitFor(t, 5*time.Second, mappingGone(name)); !ok {
			t.Errorf("the mapping of %s is still open after the eject", target)
		}
		l.nothingOpen(t)
	}
	g.pullAll(t, []*stick{s})
}

// Scenario L8: the card of a reader taken out while the ext4 inside its
// LUKS volume is mounted. The disk stays, and the kernel says so with a
// change of it with DISK_MEDIA_CHANGE=1, because the daemon has it poll
// the drive. The cleartext is unmounted, its directory removed and the
// mapping closed: left open, it would read and write the next card in
// the reader. That next card is unlocked and mounted, as the same
// mapping, at the same place.
func (l *luksGuest) testMediaChange(t *testing.T) {
	g := l.g
	cardA := l.luksStick(t, "l8cardA", luksUUID, l.keyFile, "LUKSDATA")
	cardB := l.luksStick(t, "l8cardB", luksUUID, l.keyFile, "LUKSDATA")
	before := len(l.events(t, nil))
	s, _, _ := l.plugTimed(t, "l8card", cardA, luksPath)
	disk := g.diskOf(t, "l8card")
	if got := strings.TrimSpace(g.sh(t, "cat /sys/block/"+disk+"/events_poll_msecs")); got != "2000" {
		t.Errorf("events_poll_msecs of %s is %s, want the daemon's 2000", disk, got)
	}
	mark := l.logMark(t)
	s.takeMedium(t)
	seen := l.waitEvent(t, 30*time.Second, "the kernel's change when the card was taken out", before,
		func(e monitorEvent) bool {
			return e.Action == "change" && e.DevName == disk && e.Env["DISK_MEDIA_CHANGE"] == "1"
		})
	if !g.waitUnmounted(t, luksPath, mediaTimeout) {
		t.Errorf("the card was taken out of /dev/%s, but %s is still mounted, or its directory there", disk, luksPath)
	}
	if _, ok := g.waitFor(t, mediaTimeout, mappingGone(luksName)); !ok {
		t.Errorf("the card was taken out of /dev/%s, but its mapping %s is still open %v later", disk, luksName, mediaTimeout)
	}
	if recs := l.findLog(t, mark, map[string]string{"msg": "medium changed: mapping closed", "mapping": luksName}); len(recs) != 1 {
		t.Errorf("%d log lines say %s was closed, want 1", len(recs), luksName)
	}
	l.nothingOpen(t)

	s.insertMedium(t, cardB)
	l.waitEvent(t, 30*time.Second, "the kernel's change when the next card went in", seen,
		func(e monitorEvent) bool { return e.Action == "change" && e.DevName == disk })
	m, ok := g.waitMount(t, luksPath, plugTimeout)
	if !ok {
		t.Fatalf("the next card is in /dev/%s, but %s was not mounted within %v", disk, luksPath, plugTimeout)
	}
	if m.source != luksNode {
		t.Errorf("%s: %s mounted, want %s", luksPath, m.source, luksNode)
	}
	if got := g.try(t, "cat "+luksPath+"/hello.txt"); got.stdout != "inside l8cardB\n" {
		t.Errorf("hello.txt inside the next card: %s", got)
	}
	g.pullAll(t, []*stick{s}, luksPath)
	g.eventually(t, pullTimeout, "the mapping to be closed", mappingGone(luksName))
}

// Scenario L5: the daemon killed with SIGKILL while a LUKS stick is
// mounted, the stick pulled, the daemon started again: it closes the
// stale mapping, detaches the cleartext and removes the directory.
func (l *luksGuest) testKillRestart(t *testing.T) {
	g := l.g
	img := l.luksStick(t, "l5kill", luksUUID, l.keyFile, "LUKSDATA")
	s, _, _ := l.plugTimed(t, "l5kill", img, luksPath)
	disk := g.diskOf(t, "l5kill")
	g.sh(t, "kill -9 "+strconv.Itoa(l.daemon))
	g.eventually(t, 10*time.Second, "the daemon to die", "! kill -0 "+strconv.Itoa(l.daemon))
	s.pull(t)
	g.eventually(t, pullTimeout, "the kernel to remove the stick's disk", "! test -e /sys/block/"+disk)
	if _, ok := g.waitMount(t, luksPath, time.Second); !ok {
		t.Fatalf("%s is not mounted any more with the daemon dead; nothing to reconcile", luksPath)
	}
	if r := g.try(t, mappingGone(luksName)); r.code == 0 {
		t.Fatal("the mapping went with the stick; nothing to reconcile")
	}
	mark := l.logMark(t)
	l.startDaemon(t)
	closed := l.waitLog(t, mark, pullTimeout, "the stale mapping's close", map[string]string{
		"msg": "closed the mapping of a device that is gone", "mapping": luksName})
	if closed["path"] != luksPath {
		t.Errorf("log of the close: %v", closed)
	}
	if !g.waitUnmounted(t, luksPath, pullTimeout) {
		t.Errorf("%s still mounted, or its directory there, after the restart", luksPath)
	}
	g.eventually(t, pullTimeout, "the stale mapping to go", mappingGone(luksName))
	l.nothingOpen(t)
}

// Scenario L6: the key is in no log line of the daemon, no line of the
// monitor, and no command line or environment the sampler saw.
func (l *luksGuest) testKeyNowhere(t *testing.T) {
	g := l.g
	for _, f := range []string{shellLog, monitorJSON, monitorStats, luksProc} {
		if r := g.try(t, "grep -a -c -F "+shq(l.key)+" "+f); strings.TrimSpace(r.stdout) != "0" {
			t.Errorf("the key is in %s (%s lines)", f, strings.TrimSpace(r.stdout))
		}
	}
	if r := g.try(t, "grep -a -c 'cryptsetup open' "+luksProc); r.code == 0 {
		t.Logf("the sampler caught cryptsetup's command line %s times", strings.TrimSpace(r.stdout))
	}
	if n := g.try(t, "wc -l < "+luksProc).stdout; strings.TrimSpace(n) == "0" {
		t.Error("the sampler recorded nothing")
	}
	if b, err := os.ReadFile(l.keyFile); err != nil || string(b) != l.key {
		t.Errorf("the key file changed: %v", err)
	}
}
