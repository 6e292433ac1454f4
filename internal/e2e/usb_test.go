//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The USB scenarios share one guest in shell mode: no udevd, no systemd,
// hotplugd alone on the kernel's events, started as its unit starts it
// (umask 0077), with the shipped rules and a few of the test's.
const (
	shellRules   = "/run/e2e/rules.yaml"
	shellLog     = "/run/e2e/hotplugd.log"
	monitorJSON  = "/run/e2e/monitor.jsonl"
	monitorStats = "/run/e2e/monitor.err"
	// plugTimeout bounds a plug until the mount: USB enumeration,
	// usb-storage's settle delay (1s), the SCSI scan, loading the
	// drivers the first time, the probe and the mount, all under TCG.
	plugTimeout = 90 * time.Second
	// pullTimeout bounds a pull until the mount and its directory are
	// gone.
	pullTimeout = 30 * time.Second
	// mediaTimeout bounds the handling of a medium change, once the
	// kernel has reported it.
	mediaTimeout = 20 * time.Second
)

// suiteRules are added to the shipped rules in the USB guest.
//
// load-driver does what udevd or `mdev -d` would do for USB and SCSI
// devices: load their driver (usb-storage, sd_mod) by the event's
// MODALIAS, so the drivers load on the first plug, as on a real machine.
// usb-facts is scenario 6's rule.
const suiteRules = `
  # The suite's rules.
  - name: load-driver
    match: action == "add" && subsystem in ["usb", "scsi"] && "MODALIAS" in env
    actions:
      - run:
          argv: ["/sbin/modprobe", "-b", "-q", "--", "{{ env.MODALIAS }}"]

  - name: usb-facts
    match: >
      action == "add" && subsystem == "block"
      && has_parent("usb") && attrs("idVendor") == "46f4" && attrs("removable") == "1"
    actions:
      - notify:
          message: 'usb {{ attrs("idVendor") }}:{{ attrs("idProduct") }} serial {{ attrs("serial") }} removable {{ attrs("removable") }}'
`

// usbGuest is the shell-mode guest with hotplugd and `hotplugd monitor
// --json` running.
type usbGuest struct {
	g       *guest
	daemon  int // pid
	monitor int // pid
	*logFile
}

// TestUSB boots one guest and runs the USB scenarios on it in order; the
// last one stops the daemon and the monitor and checks what they counted
// over all of them.
func TestUSB(t *testing.T) {
	g := bootGuest(t, shellMode)
	u := startUSB(t, g)
	t.Run("vfat_and_exfat_at_once", u.testVfatExfat)
	t.Run("filesystems", u.testFilesystems)
	t.Run("pulled_while_busy", u.testPulledBusy)
	t.Run("whole_disk_and_three_partitions", u.testWholeDiskAndPartitions)
	t.Run("usb_facts", u.testUSBFacts)
	t.Run("media_change", u.testMediaChange)
	t.Run("eject_power_off", u.testEjectPowerOff)
	t.Run("kernel_events_none_dropped", u.testKernelEvents)
}

// shippedRules is configs/rules.yaml with extra rules appended to its
// rules list (the file ends with its rules and comments).
func shippedRules(t *testing.T, extra string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot(t), "configs", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimRight(string(b), "\n") + "\n" + extra
}

func startUSB(t *testing.T, g *guest) *usbGuest { return startUSBWith(t, g, suiteRules) }

// startUSBWith is startUSB with other rules after the shipped ones.
func startUSBWith(t *testing.T, g *guest, extra string) *usbGuest {
	t.Helper()
	u := &usbGuest{g: g, logFile: &logFile{g: g, path: shellLog}}
	// Debug: every event is logged, and every dropped one with its reason.
	rules := setSetting(t, shippedRules(t, extra), "log_level", "debug")
	g.writeGuestFile(t, shellRules, rules, 0o644)
	g.sh(t, shq(g.bin)+" check --config "+shellRules)
	// The monitor first, so that it sees everything the daemon causes.
	u.monitor = g.startBackground(t, "exec "+shq(g.bin)+" monitor --json >"+monitorJSON+" 2>"+monitorStats)
	u.startDaemon(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("hotplugd log (end, without debug):\n%s", g.try(t, "grep -v level=DEBUG "+shellLog+" | tail -n 150").stdout)
		}
	})
	return u
}

// startDaemon starts hotplugd run in the guest, its log appended to
// shellLog, and waits until it has queued the coldplug.
func (u *usbGuest) startDaemon(t *testing.T) {
	t.Helper()
	mark := u.logMark(t)
	// The unit's UMask=0077: what a mount that does not set its modes
	// would inherit.
	u.daemon = u.g.startBackground(t, "umask 0077; exec "+shq(u.g.bin)+" run --config "+shellRules+" >>"+shellLog+" 2>&1")
	u.waitLog(t, mark, 60*time.Second, "the daemon's start", map[string]string{"msg": "coldplug: existing devices queued"})
}

// startBackground starts script in its own session in the guest, with
// no stdin, and returns its pid.
func (g *guest) startBackground(t testing.TB, script string) int {
	t.Helper()
	out := g.sh(t, "setsid sh -c "+shq(script)+" </dev/null >/dev/null 2>&1 & echo $!")
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("pid of %q: %q", script, out)
	}
	return pid
}

// diskOf waits for the block device of the stick with USB serial id and
// returns its name (sda).
func (g *guest) diskOf(t testing.TB, id string) string {
	t.Helper()
	script := `for b in /sys/block/sd*; do
	[ -e "$b/device" ] || continue
	p=$(readlink -f "$b/device")
	while [ "${#p}" -gt 4 ]; do
		if [ -f "$p/serial" ] && [ "$(cat "$p/serial")" = ` + shq(id) + ` ]; then echo "${b##*/}"; exit 0; fi
		p=${p%/*}
	done
done
exit 1`
	return strings.TrimSpace(g.eventually(t, plugTimeout, "the disk of stick "+id, script))
}

// pullAll pulls the sticks and waits until nothing is mounted at points.
func (g *guest) pullAll(t testing.TB, sticks []*stick, points ...string) {
	t.Helper()
	for _, s := range sticks {
		s.pull(t)
	}
	for _, p := range points {
		if !g.waitUnmounted(t, p, pullTimeout) {
			t.Errorf("%s: still mounted, or its directory still there, %v after the stick was pulled:\n%s",
				p, pullTimeout, g.try(t, "grep -F /media /proc/self/mountinfo; ls -la /media").stdout)
		}
	}
}

// wantOptions reports the options m lacks.
func wantOptions(t *testing.T, m mountInfo, opts ...string) {
	t.Helper()
	var missing []string
	for _, o := range opts {
		if !m.has(o) {
			missing = append(missing, o)
		}
	}
	if len(missing) > 0 {
		t.Errorf("%s (%s): options lack %s; mount options %s, filesystem options %s",
			m.point, m.fstype, strings.Join(missing, ","), strings.Join(m.opts, ","), strings.Join(m.super, ","))
	}
}

// modeOf returns the permission bits of path in the guest, in octal.
func (g *guest) modeOf(t testing.TB, path string) string {
	t.Helper()
	return strings.TrimSpace(g.sh(t, "stat -c %a "+shq(path)))
}

// Scenario 1: a vfat stick whose label has a space and an exfat stick,
// plugged at once. Both are mounted at <mount_root>/<label>, nosuid,
// nodev, noexec, with their filesystems' options, and with explicit
// modes: without an owner, root's files readable by all (dmask=0022,
// fmask=0133), whatever the daemon's umask (0077 here, as under the
// unit).
func (u *usbGuest) testVfatExfat(t *testing.T) {
	g := u.g
	mark := u.logMark(t)
	vfat := makeImage(t, g.dir, "s1vfat", stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "vfat", label: "MY STICK"}}})
	exfat := makeImage(t, g.dir, "s1exfat", stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "exfat", label: "E2E-EXFAT"}}})
	sticks := g.plugAll(t, map[string]string{"s1vfat": vfat, "s1exfat": exfat})
	cases := []struct {
		id, point, fstype string
		opts              []string
	}{
		// uid=0 and gid=0 are passed, but the kernel shows them only
		// when they are not 0: the owner is checked below.
		{"s1vfat", "/media/MY STICK", "vfat", []string{"shortname=mixed", "utf8", "showexec", "flush"}},
		{"s1exfat", "/media/E2E-EXFAT", "exfat", []string{"iocharset=utf8", "errors=remount-ro"}},
	}
	for _, c := range cases {
		m, ok := g.waitMount(t, c.point, plugTimeout)
		if !ok {
			t.Errorf("%s (%s) was not mounted within %v", c.point, c.fstype, plugTimeout)
			continue
		}
		if want := "/dev/" + g.diskOf(t, c.id) + "1"; m.source != want || m.fstype != c.fstype {
			t.Errorf("%s: %s %s mounted, want %s %s", c.point, m.fstype, m.source, c.fstype, want)
		}
		wantOptions(t, m, append([]string{"nosuid", "nodev", "noexec", "noatime"}, c.opts...)...)
		fmask, _ := m.option("fmask")
		dmask, _ := m.option("dmask")
		if fmask != "0133" || dmask != "0022" {
			t.Errorf("%s (%s): fmask=%s dmask=%s, want fmask=0133 dmask=0022 (files of root, readable by all); "+
				"masks that are not set explicitly come from the umask of the process that mounts, 0077 here as under the unit",
				c.point, c.fstype, fmask, dmask)
		}
		file := c.point + "/new-file"
		g.sh(t, "echo data > "+shq(file))
		if dir, f := g.modeOf(t, c.point), g.modeOf(t, file); dir != "755" || f != "644" {
			t.Errorf("%s (%s): the directory is mode %s and a new file %s, want 755 and 644", c.point, c.fstype, dir, f)
		}
		if owner := strings.TrimSpace(g.sh(t, "stat -c %u:%g "+shq(file))); owner != "0:0" {
			t.Errorf("%s (%s): a new file belongs to %s, want 0:0 (root, no owner: in the rule)", c.point, c.fstype, owner)
		}
	}
	for _, c := range cases {
		if recs := u.findLog(t, mark, map[string]string{"msg": "mounted", "path": c.point}); len(recs) != 1 {
			t.Errorf("%d log lines say %s was mounted, want 1", len(recs), c.point)
		}
	}
	g.pullAll(t, []*stick{sticks["s1vfat"], sticks["s1exfat"]}, cases[0].point, cases[1].point)
}

// fsCase is one stick of scenario 2.
type fsCase struct {
	id, fstype, point string
	onDisk            bool // the filesystem is on the whole disk, not on partition 1
	spec              stickSpec
	opts              []string // besides nosuid, nodev, noexec and the rule's noatime
	readOnly          bool
	hello             bool // the filesystem has hello.txt
}

// helloFiles is what the filesystems that can be made with files hold.
var helloFiles = map[string]string{"hello.txt": "hello from the host\n"}

var fsCases = []fsCase{
	{id: "s2iso", fstype: "iso9660", point: "/media/E2E_ISO", onDisk: true, readOnly: true, hello: true,
		spec: stickSpec{whole: &fsSpec{fs: "iso9660", label: "E2E_ISO", files: helloFiles}},
		opts: []string{"ro", "uid=0", "gid=0", "iocharset=utf8"}},
	{id: "s2udf", fstype: "udf", point: "/media/E2E-UDF", onDisk: true,
		spec: stickSpec{size: 64 * mib, whole: &fsSpec{fs: "udf", label: "E2E-UDF"}},
		opts: []string{"uid=0", "gid=0", "iocharset=utf8"}},
	{id: "s2ext4", fstype: "ext4", point: "/media/E2E-EXT4", hello: true,
		spec: stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "ext4", label: "E2E-EXT4", files: helloFiles}}},
		opts: []string{"errors=remount-ro"}},
	{id: "s2btrfs", fstype: "btrfs", point: "/media/E2E-BTRFS", hello: true,
		spec: stickSpec{size: 256 * mib, parts: []fsSpec{{fs: "btrfs", label: "E2E-BTRFS", files: helloFiles}}}},
	{id: "s2xfs", fstype: "xfs", point: "/media/E2E-XFS",
		spec: stickSpec{size: 400 * mib, parts: []fsSpec{{fs: "xfs", label: "E2E-XFS"}}}},
	// This kernel has no ntfs3: ntfs-3g, a FUSE helper, mounts it.
	{id: "s2ntfs", fstype: "fuseblk", point: "/media/E2E-NTFS",
		spec: stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "ntfs", label: "E2E-NTFS"}}},
		opts: []string{"allow_other"}},
}

// Scenario 2: the other filesystems hotplugd mounts, plugged at once:
// iso9660 (read-only), udf, ext4, btrfs, xfs, and NTFS through ntfs-3g.
// Each is mounted nosuid,nodev,noexec with its filesystem's options and
// can be read (and written, but iso9660).
func (u *usbGuest) testFilesystems(t *testing.T) {
	g := u.g
	mark := u.logMark(t)
	imgs := map[string]string{}
	var points []string
	for _, c := range fsCases {
		imgs[c.id] = makeImage(t, g.dir, c.id, c.spec)
		points = append(points, c.point)
	}
	sticks := g.plugAll(t, imgs)
	for _, c := range fsCases {
		t.Run(c.fstype, func(t *testing.T) { u.checkFilesystem(t, mark, c) })
	}
	// Filesystems without Unix permissions get explicit modes, readable
	// by all and writable by root only (ntfs-3g's own default is 0777).
	t.Run("modes", func(t *testing.T) {
		for _, p := range []string{"/media/E2E-NTFS", "/media/E2E-UDF", "/media/E2E_ISO"} {
			m, ok := g.waitMount(t, p, time.Second)
			if !ok {
				continue
			}
			dir := g.modeOf(t, p)
			if d, err := strconv.ParseUint(dir, 8, 32); err != nil || d&0o022 != 0 || d&0o005 != 0o005 {
				t.Errorf("%s: the directory is mode %s, want readable by all and writable by its owner only (755); %s options %s",
					p, dir, m.fstype, strings.Join(append(m.opts, m.super...), ","))
			}
		}
	})
	var all []*stick
	for _, s := range sticks {
		all = append(all, s)
	}
	g.pullAll(t, all, points...)
}

// checkFilesystem checks the mount of one stick of scenario 2.
func (u *usbGuest) checkFilesystem(t *testing.T, mark int, c fsCase) {
	g := u.g
	m, ok := g.waitMount(t, c.point, plugTimeout)
	if !ok {
		t.Fatalf("%s (%s) was not mounted within %v; the daemon said: %v", c.point, c.fstype, plugTimeout,
			u.findLog(t, mark, map[string]string{"rule": "usb-automount"}))
	}
	want := "/dev/" + g.diskOf(t, c.id)
	if !c.onDisk {
		want += "1"
	}
	if m.source != want || m.fstype != c.fstype {
		t.Errorf("%s: %s %s mounted, want %s %s", c.point, m.fstype, m.source, c.fstype, want)
	}
	wantOptions(t, m, append([]string{"nosuid", "nodev", "noexec", "noatime"}, c.opts...)...)
	if c.hello {
		if got := g.sh(t, "cat "+shq(c.point+"/hello.txt")); got != helloFiles["hello.txt"] {
			t.Errorf("%s/hello.txt: %q, want %q", c.point, got, helloFiles["hello.txt"])
		}
	}
	w := g.try(t, "echo data > "+shq(c.point+"/written")+" && cat "+shq(c.point+"/written"))
	switch {
	case c.readOnly && w.code == 0:
		t.Errorf("%s: a file could be written on a read-only %s", c.point, c.fstype)
	case !c.readOnly && (w.code != 0 || w.stdout != "data\n"):
		t.Errorf("%s: writing a file failed:\n%s", c.point, w)
	}
	if c.fstype == "fuseblk" {
		if r := g.try(t, "pgrep -a ntfs-3g"); r.code != 0 {
			t.Errorf("no ntfs-3g process runs for %s", c.point)
		}
	}
}

// Scenario 3: a stick pulled while a process has its working directory
// inside. The busy filesystem is detached lazily, its directory removed,
// the log says it was in use; a second stick is untouched.
func (u *usbGuest) testPulledBusy(t *testing.T) {
	g := u.g
	mark := u.logMark(t)
	busyImg := makeImage(t, g.dir, "s3busy", stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "vfat", label: "BUSY"}}})
	keepImg := makeImage(t, g.dir, "s3keep", stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "ext4", label: "KEEP",
		files: map[string]string{"hello.txt": "still here\n"}}}})
	sticks := g.plugAll(t, map[string]string{"s3busy": busyImg, "s3keep": keepImg})
	for _, p := range []string{"/media/BUSY", "/media/KEEP"} {
		if _, ok := g.waitMount(t, p, plugTimeout); !ok {
			t.Fatalf("%s was not mounted within %v", p, plugTimeout)
		}
	}
	pid := strings.TrimSpace(g.sh(t, "cd /media/BUSY && { setsid sleep 3600 </dev/null >/dev/null 2>&1 & echo $!; }"))
	t.Cleanup(func() { g.try(t, "kill "+pid) })
	if cwd := strings.TrimSpace(g.sh(t, "readlink /proc/"+pid+"/cwd")); cwd != "/media/BUSY" {
		t.Fatalf("the process's cwd is %q, want /media/BUSY", cwd)
	}
	sticks["s3busy"].pull(t)
	if !g.waitUnmounted(t, "/media/BUSY", pullTimeout) {
		t.Errorf("/media/BUSY: still mounted, or its directory still there, %v after the stick was pulled:\n%s",
			pullTimeout, g.try(t, "grep -F /media /proc/self/mountinfo; ls -la /media").stdout)
	}
	recs := u.findLog(t, mark, map[string]string{"msg": "removed while in use: lazily unmounted", "path": "/media/BUSY"})
	if len(recs) != 1 {
		t.Errorf("%d log lines say /media/BUSY was removed while in use, want 1", len(recs))
	} else if recs[0]["dir_removed"] != "true" {
		t.Errorf("the log says dir_removed=%s", recs[0]["dir_removed"])
	}
	t.Logf("the process in the pulled filesystem: cwd %q", strings.TrimSpace(g.try(t, "readlink /proc/"+pid+"/cwd").stdout))
	if r := g.try(t, "kill -0 "+pid); r.code != 0 {
		t.Errorf("the process whose cwd was in the pulled filesystem is gone; it should only have lost its filesystem")
	}
	if got := g.try(t, "cat /media/KEEP/hello.txt"); got.code != 0 || got.stdout != "still here\n" {
		t.Errorf("the other stick is no longer readable:\n%s", got)
	}
	if _, ok := g.waitMount(t, "/media/KEEP", time.Second); !ok {
		t.Errorf("the other stick, /media/KEEP, was unmounted too")
	}
	if recs := u.findLog(t, mark, map[string]string{"path": "/media/KEEP", "msg": "unmounted"}); len(recs) > 0 {
		t.Errorf("the daemon unmounted the other stick: %v", recs)
	}
	g.pullAll(t, []*stick{sticks["s3keep"]}, "/media/KEEP")
}

// Scenario 4: a filesystem on the whole disk, with no partition table
// (the "superfloppy" many sticks come as), and a stick with three
// partitions, two with the same label and one with none: three mounts
// at three names.
func (u *usbGuest) testWholeDiskAndPartitions(t *testing.T) {
	g := u.g
	whole := makeImage(t, g.dir, "s4whole", stickSpec{size: 64 * mib, whole: &fsSpec{fs: "vfat", label: "WHOLE"}})
	three := makeImage(t, g.dir, "s4three", stickSpec{size: 200 * mib, parts: []fsSpec{
		{fs: "vfat", label: "DATA"}, {fs: "ext4", label: "DATA"}, {fs: "exfat"},
	}})
	sticks := g.plugAll(t, map[string]string{"s4whole": whole, "s4three": three})

	m, ok := g.waitMount(t, "/media/WHOLE", plugTimeout)
	disk := g.diskOf(t, "s4whole")
	switch {
	case !ok:
		t.Errorf("/media/WHOLE was not mounted within %v", plugTimeout)
	case m.source != "/dev/"+disk:
		t.Errorf("/media/WHOLE: %s mounted, want the whole disk /dev/%s", m.source, disk)
	}
	if parts := g.try(t, "ls -d /sys/block/"+disk+"/"+disk+"*"); parts.code == 0 {
		t.Errorf("the kernel found partitions on a disk without a partition table: %s", parts.stdout)
	}

	disk3 := g.diskOf(t, "s4three")
	uuid := strings.TrimSpace(g.eventually(t, plugTimeout, "the third partition", "blkid -s UUID -o value /dev/"+disk3+"3"))
	wantPoints := []string{"/media/DATA", "/media/DATA_1", "/media/" + uuid}
	var got []mountInfo
	deadline := time.Now().Add(plugTimeout)
	for {
		got = nil
		for _, m := range g.mounts(t) {
			if strings.HasPrefix(m.source, "/dev/"+disk3) {
				got = append(got, m)
			}
		}
		if len(got) >= 3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	var points, sources []string
	for _, m := range got {
		points = append(points, m.point)
		sources = append(sources, m.source)
	}
	slices.Sort(points)
	slices.Sort(sources)
	slices.Sort(wantPoints)
	if !slices.Equal(points, wantPoints) {
		t.Errorf("the three partitions are mounted at %q, want %q", points, wantPoints)
	}
	if want := []string{"/dev/" + disk3 + "1", "/dev/" + disk3 + "2", "/dev/" + disk3 + "3"}; !slices.Equal(sources, want) {
		t.Errorf("mounted: %q, want each partition once: %q", sources, want)
	}
	g.pullAll(t, []*stick{sticks["s4whole"], sticks["s4three"]}, append(wantPoints, "/media/WHOLE")...)
}

// Scenario 6: what rules read about a USB stick on a real bus:
// has_parent("usb"), attrs("idVendor"), attrs("removable"); and
// `hotplugd test --syspath` in the guest agrees with what the daemon
// did for the same device.
func (u *usbGuest) testUSBFacts(t *testing.T) {
	g := u.g
	mark := u.logMark(t)
	before := len(u.events(t, nil))
	img := makeImage(t, g.dir, "s6facts", stickSpec{size: 64 * mib, parts: []fsSpec{{fs: "vfat", label: "FACTS"}}})
	s := g.plug(t, "s6facts", img)
	if _, ok := g.waitMount(t, "/media/FACTS", plugTimeout); !ok {
		t.Fatalf("/media/FACTS was not mounted within %v", plugTimeout)
	}
	part := g.diskOf(t, "s6facts") + "1"
	devpath := strings.TrimPrefix(strings.TrimSpace(g.sh(t, "readlink -f /sys/class/block/"+part)), "/sys")
	if !strings.Contains(devpath, "/usb") {
		t.Errorf("%s is at %s, not on the USB bus", part, devpath)
	}
	note := u.waitLog(t, mark, 10*time.Second, "the usb-facts notification",
		map[string]string{"msg": "notification", "rule": "usb-facts", "devpath": devpath})
	if want := "usb 46f4:0001 serial s6facts removable 1"; note["message"] != want {
		t.Errorf("usb-facts said %q, want %q", note["message"], want)
	}
	// What the daemon matched for the partition's add.
	var daemonRules []string
	for _, r := range u.findLog(t, mark, map[string]string{"msg": "rule matched", "devpath": devpath, "action": "add"}) {
		daemonRules = append(daemonRules, r["rule"])
	}
	slices.Sort(daemonRules)
	mounted := u.findLog(t, mark, map[string]string{"msg": "mounted", "devnode": "/dev/" + part})

	out := g.sh(t, shq(g.bin)+" test --config "+shellRules+" --syspath /sys/class/block/"+part)
	var testRules []string
	for _, m := range regexp.MustCompile(`(?m)^rule (\S+) \(.*\): matched$`).FindAllStringSubmatch(out, -1) {
		testRules = append(testRules, m[1])
	}
	slices.Sort(testRules)
	if want := []string{"usb-automount", "usb-facts"}; !slices.Equal(daemonRules, want) {
		t.Errorf("the daemon matched %q for %s, want %q", daemonRules, devpath, want)
	}
	if !slices.Equal(testRules, daemonRules) {
		t.Errorf("hotplugd test --syspath matched %q, the daemon %q:\n%s", testRules, daemonRules, out)
	}
	if !strings.Contains(out, `notify "`+note["message"]+`"`) {
		t.Errorf("hotplugd test --syspath does not show the daemon's notification %q:\n%s", note["message"], out)
	}
	if len(mounted) != 1 {
		t.Errorf("%d log lines say /dev/%s was mounted, want 1", len(mounted), part)
	} else if !strings.Contains(out, "mounted by hotplugd at "+mounted[0]["path"]) {
		t.Errorf("hotplugd test --syspath does not say the partition is mounted at %s:\n%s", mounted[0]["path"], out)
	}
	g.pullAll(t, []*stick{s}, "/media/FACTS")
	// What the kernel says around one plug and pull, for the record
	// (go test -v).
	for _, e := range u.events(t, nil)[before:] {
		var props []string
		for _, k := range []string{"DEVTYPE", "DRIVER", "MODALIAS", "DISKSEQ", "PARTN", "DEVNAME"} {
			if v, ok := e.Env[k]; ok {
				props = append(props, k+"="+v)
			}
		}
		t.Logf("%d %s@%s (%s) %s", e.Seqnum, e.Action, e.DevPath, e.Subsystem, strings.Join(props, " "))
	}
}

// Scenario 10: a removable medium taken out of its drive (a card out of
// a reader) is a "change" of the disk, not a "remove": the stale mount
// must go, and the next medium must be mounted.
func (u *usbGuest) testMediaChange(t *testing.T) {
	g := u.g
	before := len(u.events(t, nil))
	cardA := makeImage(t, g.dir, "s10a", stickSpec{size: 32 * mib, whole: &fsSpec{fs: "vfat", label: "CARD_A"}})
	cardB := makeImage(t, g.dir, "s10b", stickSpec{size: 32 * mib, whole: &fsSpec{fs: "vfat", label: "CARD_B"}})
	s := g.plug(t, "s10card", cardA)
	if _, ok := g.waitMount(t, "/media/CARD_A", plugTimeout); !ok {
		t.Fatalf("/media/CARD_A was not mounted within %v", plugTimeout)
	}
	disk := g.diskOf(t, "s10card")
	// The kernel notices a medium change only when something polls the
	// drive; udisks2 does on a desktop, nothing does by default.
	g.sh(t, "echo 1000 > /sys/block/"+disk+"/events_poll_msecs")

	s.takeMedium(t)
	seen := u.waitEvent(t, 30*time.Second, "the kernel's change when the medium was taken out", before,
		func(e monitorEvent) bool {
			return e.Action == "change" && e.DevName == disk && e.Env["DISK_MEDIA_CHANGE"] == "1"
		})
	if !g.waitUnmounted(t, "/media/CARD_A", mediaTimeout) {
		t.Errorf("the medium of /dev/%s was taken out (the kernel sent change with DISK_MEDIA_CHANGE=1, not remove), "+
			"but /media/CARD_A is still mounted, or its directory still there, after %v", disk, mediaTimeout)
	}
	s.insertMedium(t, cardB)
	u.waitEvent(t, 30*time.Second, "the kernel's change when the next medium went in", seen,
		func(e monitorEvent) bool { return e.Action == "change" && e.DevName == disk })
	if _, ok := g.waitMount(t, "/media/CARD_B", mediaTimeout); !ok {
		t.Errorf("a new medium is in /dev/%s (the kernel sent change), but /media/CARD_B was not mounted within %v; mounts:\n%s",
			disk, mediaTimeout, g.try(t, "grep -F /media /proc/self/mountinfo").stdout)
	}
	for _, e := range u.events(t, nil)[before:] {
		if e.Subsystem == "block" {
			t.Logf("event: %s %s %v", e.Action, e.DevPath, e.Env)
		}
	}
	g.pullAll(t, []*stick{s}, "/media/CARD_A", "/media/CARD_B")
}

// Issue 13's power-off on a real bus: `hotplugd eject --power-off` of a
// mounted stick unmounts it, removes its directory and writes 1 to its USB
// device's remove attribute, and the kernel removes the device: its disk
// goes from /sys and the kernel's own remove events follow. A mount
// hotplugd did not make is refused.
func (u *usbGuest) testEjectPowerOff(t *testing.T) {
	g := u.g
	before := len(u.events(t, nil))
	img := makeImage(t, g.dir, "s11eject", stickSpec{size: 32 * mib, parts: []fsSpec{{fs: "vfat", label: "EJECTME"}}})
	s := g.plug(t, "s11eject", img)
	if _, ok := g.waitMount(t, "/media/EJECTME", plugTimeout); !ok {
		t.Fatalf("/media/EJECTME was not mounted within %v", plugTimeout)
	}
	disk := g.diskOf(t, "s11eject")
	if r := g.try(t, shq(g.bin)+" eject /proc"); r.code != 1 || !strings.Contains(r.stderr, "hotplugd mounted nothing there") {
		t.Errorf("eject of a mount hotplugd did not make:\n%s", r)
	}
	r := g.try(t, shq(g.bin)+" eject --power-off /dev/"+disk+"1")
	if r.code != 0 || !strings.Contains(r.stdout, "powered off") {
		t.Fatalf("eject --power-off:\n%s", r)
	}
	if !g.waitUnmounted(t, "/media/EJECTME", pullTimeout) {
		t.Errorf("/media/EJECTME still mounted, or its directory there, after eject --power-off")
	}
	g.eventually(t, pullTimeout, "the kernel to remove /sys/block/"+disk, "! test -e /sys/block/"+disk)
	u.waitEvent(t, pullTimeout, "the kernel's remove of the powered-off disk", before, func(e monitorEvent) bool {
		return e.Action == "remove" && e.Subsystem == "block" && e.DevName == disk
	})
	s.pull(t)
}

// monitorEvent is one line of `hotplugd monitor --json`.
type monitorEvent struct {
	Seqnum    uint64            `json:"seqnum"`
	Action    string            `json:"action"`
	DevPath   string            `json:"devpath"`
	Subsystem string            `json:"subsystem"`
	DevType   string            `json:"devtype"`
	DevName   string            `json:"devname"`
	Env       map[string]string `json:"env"`
	Source    string            `json:"source"`
}

// events returns what the monitor printed so far for which keep is true.
func (u *usbGuest) events(t testing.TB, keep func(monitorEvent) bool) []monitorEvent {
	t.Helper()
	var out []monitorEvent
	for line := range strings.SplitSeq(u.g.sh(t, "cat "+monitorJSON+" 2>/dev/null || true"), "\n") {
		var e monitorEvent
		if line == "" || json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if keep == nil || keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// waitEvent waits until the monitor has printed, after its first from
// events, one for which keep is true, and returns the number of events
// up to and including it.
func (u *usbGuest) waitEvent(t testing.TB, timeout time.Duration, what string, from int, keep func(monitorEvent) bool) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		evs := u.events(t, nil)
		for i := from; i < len(evs); i++ {
			if keep(evs[i]) {
				return i + 1
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// Scenario 5: the kernel's own events around real plugs, pulls and
// module loads (add@/module/..., add@/bus/.../drivers/..., bind) all
// parse: over the whole group nothing was dropped as malformed, by the
// daemon or by the monitor. It stops both, so it runs last.
func (u *usbGuest) testKernelEvents(t *testing.T) {
	g := u.g
	g.sh(t, fmt.Sprintf("kill -TERM %d", u.daemon))
	stopped := u.waitLog(t, 0, 60*time.Second, "the daemon's stop", map[string]string{"msg": "stopped"})
	if stopped["dropped"] != "0" {
		var why []string
		for _, r := range u.findLog(t, 0, map[string]string{"msg": "dropped uevent"}) {
			why = append(why, fmt.Sprintf("%s: %s (%s bytes, from port %s): %q", r["reason"], r["error"], r["len"], r["port"], r["head"]))
		}
		t.Errorf("the daemon dropped %s of %s uevents (its stop line: %v); it logged:\n%s",
			stopped["dropped"], stopped["received"], stopped, strings.Join(why, "\n"))
	}
	g.sh(t, fmt.Sprintf("kill -INT %d", u.monitor))
	line := strings.TrimSpace(g.eventually(t, 30*time.Second, "the monitor's summary", "grep '^hotplugd monitor: received=' "+monitorStats))
	summary := parseLogfmt(strings.TrimPrefix(line, "hotplugd monitor: "))
	for k, v := range summary {
		if strings.HasPrefix(k, "dropped_") && v != "0" {
			t.Errorf("the monitor counted %s=%s: %s", k, v, line)
		}
	}
	if summary["dropped_parse"] == "" {
		t.Errorf("the monitor's summary has no dropped_parse: %s", line)
	}
	evs := u.events(t, nil)
	t.Logf("daemon: %v; monitor: %s; %d events printed", stopped, line, len(evs))
	for who, n := range map[string]string{"daemon": stopped["received"], "monitor": summary["received"]} {
		if v, err := strconv.Atoi(n); err != nil || v == 0 {
			t.Errorf("the %s received %q uevents", who, n)
		}
	}
	want := map[string]func(monitorEvent) bool{
		"add of a block device (a plug)": func(e monitorEvent) bool {
			return e.Action == "add" && e.Subsystem == "block"
		},
		"remove of a block device (a pull)": func(e monitorEvent) bool {
			return e.Action == "remove" && e.Subsystem == "block"
		},
		"add@/module/usb_storage (loaded by a rule on the first plug)": func(e monitorEvent) bool {
			return e.Action == "add" && e.DevPath == "/module/usb_storage"
		},
		"add@/module/vfat (the kernel's own autoload on the first mount)": func(e monitorEvent) bool {
			return e.Action == "add" && e.DevPath == "/module/vfat"
		},
		"add@/bus/usb/drivers/usb-storage": func(e monitorEvent) bool {
			return e.Action == "add" && e.DevPath == "/bus/usb/drivers/usb-storage"
		},
		"bind of a USB interface to usb-storage": func(e monitorEvent) bool {
			return e.Action == "bind" && e.Subsystem == "usb" && e.Env["DRIVER"] == "usb-storage"
		},
	}
	for what, match := range want {
		if !slices.ContainsFunc(evs, match) {
			t.Errorf("the monitor printed no %s", what)
		}
	}
	counts := map[string]int{}
	for _, e := range evs {
		counts[e.Action+" "+e.Subsystem]++
	}
	t.Logf("events by action and subsystem: %v", counts)
	for _, e := range evs {
		if e.Subsystem == "module" || e.Subsystem == "drivers" || strings.Contains(e.DevPath, "s6facts") {
			t.Logf("  %d %s@%s (%s)", e.Seqnum, e.Action, e.DevPath, e.Subsystem)
		}
	}
}
