package daemon

import (
	"crypto/rand"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// TestAutomount runs the flagship use end to end: the hotplugd binary,
// built once, runs as a process on a temporary rules file, mount root and
// state directory; disks are real images with a partition table on loop
// devices, whose partitions come and go with the kernel's own uevents;
// what is mounted, where and how is read from /proc/self/mountinfo and
// the daemon's state file. Each subtest's rule names only its own loop
// devices, so no other block device of the machine is touched.
func TestAutomount(t *testing.T) {
	looptest.Require(t, "go", "mkfs.ext4", "mkntfs", "ntfscp", "mkfs.vfat", "mkfs.btrfs", "mount.ntfs-3g")
	bin := amBuild(t)
	for _, tt := range []struct {
		name string
		test func(*testing.T, string)
	}{
		{"ext4-BACKUP", testAutomountExt4},
		{"ntfs-My-Disk", testAutomountNTFS},
		{"vfat-unsupported", testAutomountVfat},
		{"same-label", testAutomountSameLabel},
		{"hostile-labels", testAutomountHostileLabels},
		{"busy-at-removal", testAutomountBusy},
		{"crash-recovery", testAutomountCrashRecovery},
		{"coldplug", testAutomountColdplug},
		{"dry-run", testAutomountDryRun},
	} {
		t.Run(tt.name, func(t *testing.T) { tt.test(t, bin) })
	}
}

// testAutomountExt4: an ext4 disk labelled BACKUP is mounted at
// <mount_root>/BACKUP with the safe options, its files are readable, the
// mount is recorded; when the disk goes, the mount, its directory and
// its state entry go too.
func testAutomountExt4(t *testing.T, bin string) {
	const content = "written before the disk was plugged in\n"
	disk := amNewDisk(t, "ext4", "BACKUP", map[string]string{"hello.txt": content})
	dm := amStart(t, bin, amConfig{disks: []*amDisk{disk}})
	disk.attach()

	mi := disk.waitMount(dm)
	want := filepath.Join(dm.root, "BACKUP")
	if mi.Mountpoint != want || mi.FSType != "ext4" || mi.Source != disk.part() {
		t.Fatalf("mounted %s %s at %s, want ext4 %s at %s", mi.FSType, mi.Source, mi.Mountpoint, disk.part(), want)
	}
	amCheckOptions(t, mi, "errors=remount-ro")
	if b, err := os.ReadFile(filepath.Join(want, "hello.txt")); err != nil || string(b) != content {
		t.Errorf("hello.txt: %q, %v; want %q", b, err, content)
	}
	dm.waitLog("msg=mounted", "rule="+amRuleName, want) // logged once the state is saved
	entries := amState(t, dm.stateDir)
	e, ok := amEntryAt(entries, want)
	if !ok || len(entries) != 1 {
		t.Fatalf("state: %+v, want one entry at %s", entries, want)
	}
	if e.Device.Devnode != disk.part() || e.Device.Devpath != disk.devpath() || e.Device.DevNum() != disk.devnum ||
		e.FSType != "ext4" || e.Rule != amRuleName || !e.CreatedDir ||
		!strings.Contains(e.Options, "nosuid,nodev,noexec") || !strings.Contains(e.Options, "errors=remount-ro") {
		t.Errorf("state entry: %+v", e)
	}

	disk.yank()
	disk.waitUnmount()
	dm.waitLog("msg=unmounted", want, "dir_removed=true")
	amGone(t, want)
	amEmptyDir(t, dm.root)
	if entries := amState(t, dm.stateDir); len(entries) != 0 {
		t.Errorf("state after removal: %+v", entries)
	}
	disk.detach() // possible only because nothing holds the partition any more
}

// testAutomountNTFS: NTFS labelled "My Disk" goes through the ntfs-3g
// FUSE helper (the kernel has no ntfs3 here); same checks.
func testAutomountNTFS(t *testing.T, bin string) {
	if amHasFilesystem(t, "ntfs3") {
		t.Skip("the kernel has ntfs3, which hotplugd prefers to ntfs-3g")
	}
	const content = "from Windows\n"
	disk := amNewDisk(t, "ntfs", "My Disk", map[string]string{"hello.txt": content})
	dm := amStart(t, bin, amConfig{disks: []*amDisk{disk}})
	disk.attach()

	mi := disk.waitMount(dm)
	want := filepath.Join(dm.root, "My Disk")
	if mi.Mountpoint != want || mi.FSType != "fuseblk" || mi.Source != disk.part() {
		t.Fatalf("mounted %s %s at %q, want fuseblk %s at %q", mi.FSType, mi.Source, mi.Mountpoint, disk.part(), want)
	}
	amCheckOptions(t, mi, "allow_other")
	if b, err := os.ReadFile(filepath.Join(want, "hello.txt")); err != nil || string(b) != content {
		t.Errorf("hello.txt: %q, %v; want %q", b, err, content)
	}
	dm.waitLog("msg=mounted", "type=ntfs")
	entries := amState(t, dm.stateDir)
	e, ok := amEntryAt(entries, want)
	if !ok || len(entries) != 1 {
		t.Fatalf("state: %+v, want one entry at %q", entries, want)
	}
	if e.FSType != "ntfs" || filepath.Base(e.Driver) != "mount.ntfs-3g" && filepath.Base(e.Driver) != "ntfs-3g" ||
		e.Device.Devnode != disk.part() || !strings.Contains(e.Options, "nosuid,nodev,noexec") || !e.CreatedDir {
		t.Errorf("state entry: %+v", e)
	}

	disk.yank()
	disk.waitUnmount()
	dm.waitLog("msg=unmounted", "dir_removed=true")
	amGone(t, want)
	amEmptyDir(t, dm.root)
	if entries := amState(t, dm.stateDir); len(entries) != 0 {
		t.Errorf("state after removal: %+v", entries)
	}
	disk.detach()
}

// testAutomountVfat: this kernel has no vfat and there is no FUSE helper
// for it, so the log says exactly that and nothing is left behind.
func testAutomountVfat(t *testing.T, bin string) {
	if amHasFilesystem(t, "vfat") {
		t.Skip("the kernel has vfat: the unsupported-filesystem error cannot happen here")
	}
	disk := amNewDisk(t, "vfat", "STICK", nil)
	dm := amStart(t, bin, amConfig{disks: []*amDisk{disk}})
	disk.attach()

	line := dm.waitLog("level=ERROR", `msg="action failed"`, "rule="+amRuleName, "action=mount", disk.part(),
		"filesystem vfat is not supported by this kernel", "no mount helper was found")
	t.Logf("the error: %s", line)
	if mi := disk.mount(); mi != nil {
		t.Errorf("mounted at %s", mi.Mountpoint)
	}
	amEmptyDir(t, dm.root)
	if entries := amState(t, dm.stateDir); len(entries) != 0 {
		t.Errorf("state: %+v", entries)
	}
	disk.detach()
}

// testAutomountSameLabel: two disks with one label get two mount points,
// each showing its own disk.
func testAutomountSameLabel(t *testing.T, bin string) {
	one := amNewDisk(t, "ext4", "TWIN", map[string]string{"who": "one"})
	two := amNewDisk(t, "ext4", "TWIN", map[string]string{"who": "two"})
	dm := amStart(t, bin, amConfig{disks: []*amDisk{one, two}})
	one.attach()
	two.attach()

	got := map[string]string{} // mount point -> the disk's "who"
	for _, d := range []*amDisk{one, two} {
		mi := d.waitMount(dm)
		amCheckOptions(t, mi, "errors=remount-ro")
		b, err := os.ReadFile(filepath.Join(mi.Mountpoint, "who"))
		if err != nil {
			t.Fatal(err)
		}
		got[mi.Mountpoint] = string(b)
	}
	want := []string{filepath.Join(dm.root, "TWIN"), filepath.Join(dm.root, "TWIN_1")}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) {
		t.Fatalf("mount points %q, want %q", keys, want)
	}
	if got[want[0]] == got[want[1]] {
		t.Errorf("both mount points show disk %q", got[want[0]])
	}
	dm.waitCount("msg=mounted", 2) // both entries saved
	if entries := amState(t, dm.stateDir); len(entries) != 2 {
		t.Errorf("state: %+v, want two entries", entries)
	}

	one.yank()
	two.yank()
	one.waitUnmount()
	two.waitUnmount()
	for _, p := range want {
		dm.waitLog("msg=unmounted", p+" ", "dir_removed=true")
		amGone(t, p)
	}
	amEmptyDir(t, dm.root)
	if entries := amState(t, dm.stateDir); len(entries) != 0 {
		t.Errorf("state after removal: %+v", entries)
	}
	one.detach()
	two.detach()
}

// testAutomountHostileLabels: labels a disk's maker chose to be shell
// code, paths, hidden names, terminal escapes or mount options become
// exactly one sanitized component directly under the mount root; nothing
// is executed (also not by a run action that gets the label, nor by the
// ntfs-3g helper that gets the mount point); the options stay the safe
// ones.
func testAutomountHostileLabels(t *testing.T, bin string) {
	pwned := filepath.Join(os.TempDir(), "pwned-"+rand.Text()[:10])
	pwnedFiles := []string{pwned + "-1", pwned + "-2", pwned + "-3"}
	t.Cleanup(func() {
		for _, p := range pwnedFiles {
			os.Remove(p)
		}
	})
	under := func(p string) string { return strings.ReplaceAll(p, "/", "_") }
	cases := []struct {
		fs, label string
		want      string // the mount point's name; "" for the filesystem's UUID
	}{
		{"btrfs", "$(touch " + pwnedFiles[0] + ")", "$(touch " + under(pwnedFiles[0]) + ")"},
		{"btrfs", "`touch " + pwnedFiles[1] + "`", "_touch " + under(pwnedFiles[1]) + "_"},
		{"ntfs", "x; touch " + pwnedFiles[2], "x; touch " + under(pwnedFiles[2])},
		{"ext4", "../../etc", "_._.._etc"},
		{"ext4", "..", ""},
		{"ext4", ".hidden", "_hidden"},
		{"btrfs", "tab\there\nnewline\x1b[2J", "tab_here_newline_[2J"},
		{"btrfs", `q"uo'te\back`, "q_uo_te_back"},
		{"ext4", "a,uid=0,exec", "a,uid=0,exec"},
	}
	var disks []*amDisk
	for _, c := range cases {
		disks = append(disks, amNewDisk(t, c.fs, c.label, map[string]string{"label": c.label}))
	}
	dm := amStart(t, bin, amConfig{disks: disks, actions: []string{
		`- run: {argv: ["/bin/echo", "label", "{{ fs.label }}", "mounted at", "{{ mount.path }}"]}`,
	}})
	for _, d := range disks {
		d.attach()
	}

	var names []string
	for i, c := range cases {
		d := disks[i]
		want := c.want
		if want == "" {
			want = d.uuid
		}
		names = append(names, want)
		mi := d.waitMount(dm)
		if mi.Mountpoint != filepath.Join(dm.root, want) || filepath.Dir(mi.Mountpoint) != dm.root {
			t.Errorf("label %q: mounted at %q, want %q", c.label, mi.Mountpoint, filepath.Join(dm.root, want))
		}
		amCheckOptions(t, mi)
		if b, err := os.ReadFile(filepath.Join(mi.Mountpoint, "label")); err != nil || string(b) != c.label {
			t.Errorf("label %q: the disk's own file: %q, %v", c.label, b, err)
		}
	}
	dm.waitCount(`msg="run finished"`, len(cases))
	if line, failed := dm.log.find(`msg="run failed"`); failed {
		t.Errorf("a run action failed: %s", line)
	}
	ents, err := os.ReadDir(dm.root)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if slices.Sort(names); !slices.Equal(got, names) {
		t.Errorf("mount root holds %q, want exactly %q", got, names)
	}
	for _, p := range append(pwnedFiles, filepath.Join(dm.root, "..", "..", "etc")) {
		amGone(t, p)
	}
	if entries := amState(t, dm.stateDir); len(entries) != len(cases) {
		t.Errorf("state has %d entries, want %d", len(entries), len(cases))
	}

	for _, d := range disks {
		d.yank()
	}
	for _, d := range disks {
		d.waitUnmount()
	}
	dm.waitCount("msg=unmounted", len(cases))
	amEmptyDir(t, dm.root)
	for _, d := range disks {
		d.detach()
	}
	for _, p := range pwnedFiles {
		amGone(t, p)
	}
}

// testAutomountBusy: a disk removed while a file on it is open is
// detached lazily, logged as "removed while in use"; the mount leaves
// the namespace and its directory is removed at once, while the open
// file stays readable; the filesystem is released when it is closed.
func testAutomountBusy(t *testing.T, bin string) {
	const content = "still being read\n"
	disk := amNewDisk(t, "ext4", "BUSY", map[string]string{"data": content})
	dm := amStart(t, bin, amConfig{disks: []*amDisk{disk}})
	disk.attach()
	mi := disk.waitMount(dm)
	dm.waitLog("msg=mounted", mi.Mountpoint)

	f, err := os.Open(filepath.Join(mi.Mountpoint, "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() }) // before the disk's cleanup

	disk.yank()
	line := dm.waitLog("level=WARN", `msg="removed while in use: lazily unmounted"`, mi.Mountpoint)
	if !strings.Contains(line, "dir_removed=true") {
		t.Errorf("directory not removed: %s", line)
	}
	if m := disk.mount(); m != nil {
		t.Errorf("still in mountinfo at %s", m.Mountpoint)
	}
	if ms := amMountsUnder(t, dm.root); len(ms) > 0 {
		t.Errorf("mounts left under the mount root: %q", amMountpoints(ms))
	}
	amGone(t, mi.Mountpoint)
	if entries := amState(t, dm.stateDir); len(entries) != 0 {
		t.Errorf("state after removal: %+v", entries)
	}
	if b, err := io.ReadAll(f); err != nil || string(b) != content {
		t.Errorf("the open file after the lazy unmount: %q, %v", b, err)
	}
	// The detached filesystem still holds the partition...
	if _, err := looptest.RunErr("partx", "-d", "--nr", "1", disk.loop); err == nil {
		t.Fatal("partx -d succeeded while a file of the lazily unmounted filesystem was open")
	}
	// ...until its last file is closed.
	f.Close()
	disk.detach()
}

// testAutomountCrashRecovery: the daemon is killed with SIGKILL while
// disks are mounted, the disks go while no one watches, and the daemon
// started again cleans up the stale mounts and their directories from
// its state file, keeping the mount of a disk still present and leaving
// alone a mount it did not make.
//
// How the disks "go": no block device of this machine can vanish while
// mounted. The kernel refuses to delete a partition that is open
// (partx -d: EBUSY), loop devices stay in sysfs when detached, and this
// kernel has no device mapper, SCSI, nbd or ublk driver whose devices
// could be hot-unplugged. So the
// test edits the state file the killed daemon left, as a yank would have
// made it stale, while the real mounts stay:
//   - GONE: the recorded device number now names no device, which is
//     what /sys/dev/block shows after a USB disk is pulled;
//   - REUSED: the number is there but belongs to another devpath, which
//     is what it looks like when the kernel has handed the pulled disk's
//     number to the next disk.
//
// Reconciliation must find both mounts by what it recorded and detach
// them; the proof that they are really gone, not just hidden, is that
// the kernel then lets the partitions be deleted.
func testAutomountCrashRecovery(t *testing.T, bin string) {
	keep := amNewDisk(t, "ext4", "KEEP", nil)
	gone := amNewDisk(t, "ext4", "GONE", nil)
	reused := amNewDisk(t, "ext4", "REUSED", nil)
	disks := []*amDisk{keep, gone, reused}
	dm := amStart(t, bin, amConfig{disks: disks})
	for _, d := range disks {
		d.attach()
	}
	mounts := map[*amDisk]string{}
	for _, d := range disks {
		mounts[d] = d.waitMount(dm).Mountpoint
		dm.waitLog("msg=mounted", mounts[d])
	}

	dm.kill9()
	for _, d := range disks {
		if mi := d.mount(); mi == nil || mi.Mountpoint != mounts[d] {
			t.Fatalf("%s: mount lost with the daemon: %+v", d.label, mi)
		}
	}
	// A mount hotplugd did not make, under its mount root.
	foreign := filepath.Join(dm.root, "FOREIGN")
	if err := os.Mkdir(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", foreign, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(foreign, unix.MNT_DETACH) })

	entries := amState(t, dm.stateDir)
	if len(entries) != 3 {
		t.Fatalf("state left by the killed daemon: %+v", entries)
	}
	for i, e := range entries {
		switch e.MountPoint {
		case mounts[gone]:
			entries[i].Device.Minor = amFreeMinor(t, e.Device.Major)
		case mounts[reused]:
			entries[i].Device.Devpath = "/devices/virtual/block/" + reused.name + "/" + reused.name + "p9"
		}
	}
	amWriteState(t, dm.stateDir, entries)

	dm.start() // same rules, mount root and state; coldplug off: only reconciliation acts
	line := dm.waitLog(`msg="mounts reconciled"`)
	if !strings.Contains(line, "kept=1 cleaned=2 failed=0") {
		t.Errorf("reconciliation: %s", line)
	}
	for _, d := range []*amDisk{gone, reused} {
		dm.waitLog(`msg="cleaned up the mount of a device that is gone"`, mounts[d])
		if mi := d.mount(); mi != nil {
			t.Errorf("%s: stale mount still at %s", d.label, mi.Mountpoint)
		}
		amGone(t, mounts[d])
	}
	if mi := keep.mount(); mi == nil || mi.Mountpoint != mounts[keep] {
		t.Errorf("KEEP: the present disk's mount was not kept: %+v", mi)
	}
	if ms := amMountsUnder(t, foreign); len(ms) != 1 || ms[0].FSType != "tmpfs" {
		t.Errorf("the foreign mount was touched: %+v", ms)
	}
	got := amState(t, dm.stateDir)
	if len(got) != 1 || got[0].MountPoint != mounts[keep] {
		t.Errorf("state after reconciliation: %+v, want only %s", got, mounts[keep])
	}
	// The stale filesystems are released: the kernel deletes the partitions.
	gone.detach()
	reused.detach()

	// The restarted daemon still unmounts the kept disk when it goes.
	keep.yank()
	keep.waitUnmount()
	dm.waitLog("msg=unmounted", mounts[keep], "dir_removed=true")
	amGone(t, mounts[keep])
	if got := amState(t, dm.stateDir); len(got) != 0 {
		t.Errorf("state: %+v", got)
	}
	keep.detach()
}

// amFreeMinor returns a minor number of major that names no block device.
func amFreeMinor(t testing.TB, major uint32) uint32 {
	t.Helper()
	for minor := uint32(1<<20 - 1); minor > 1<<19; minor-- {
		if _, err := os.Lstat(fmt.Sprintf("/sys/dev/block/%d:%d", major, minor)); os.IsNotExist(err) {
			return minor
		}
	}
	t.Fatalf("no free minor of major %d", major)
	return 0
}

// testAutomountColdplug: a disk attached before the daemon starts is
// mounted at start.
func testAutomountColdplug(t *testing.T, bin string) {
	disk := amNewDisk(t, "ext4", "COLD", nil)
	disk.attach()
	dm := amStart(t, bin, amConfig{disks: []*amDisk{disk}, coldplug: true})

	mi := disk.waitMount(dm)
	want := filepath.Join(dm.root, "COLD")
	if mi.Mountpoint != want {
		t.Fatalf("mounted at %s, want %s", mi.Mountpoint, want)
	}
	amCheckOptions(t, mi, "errors=remount-ro")
	dm.waitLog(`msg="rule matched"`, "devpath="+disk.devpath(), "source=coldplug")
	dm.waitLog("msg=mounted", want)

	disk.yank()
	disk.waitUnmount()
	dm.waitLog("msg=unmounted", want, "dir_removed=true")
	amGone(t, want)
	disk.detach()
}

// testAutomountDryRun: `hotplugd test --syspath` on a present disk shows
// the mount point and the whole option string the daemon then uses, and
// mounts, creates and writes nothing; once the disk is mounted it says
// the mount would be skipped.
func testAutomountDryRun(t *testing.T, bin string) {
	disk := amNewDisk(t, "ext4", "PLAN", nil)
	disk.attach()
	dir := t.TempDir()
	cfg := amConfig{disks: []*amDisk{disk}, coldplug: true}
	rulesPath := filepath.Join(dir, "rules.yaml")
	root, stateDir := filepath.Join(dir, "media"), filepath.Join(dir, "state")
	if err := os.WriteFile(rulesPath, []byte(cfg.rules(root, stateDir)), 0o600); err != nil {
		t.Fatal(err)
	}
	dryRun := func() string {
		t.Helper()
		out, err := exec.Command(bin, "test", "--config", rulesPath, "--syspath", "/sys/class/block/"+disk.partName()).CombinedOutput()
		if err != nil {
			t.Fatalf("hotplugd test: %v\n%s", err, out)
		}
		t.Logf("hotplugd test:\n%s", out)
		return string(out)
	}

	out := dryRun()
	wantPath := filepath.Join(root, "PLAN")
	const wantOpts = "nosuid,nodev,noexec,errors=remount-ro"
	for _, want := range []string{
		"rule " + amRuleName + " (" + rulesPath + ":8:5): matched\n",
		"  mount " + disk.part() + " at " + wantPath + "\n",
		"    ext4 through mount(2), options " + wantOpts + "\n",
		"nothing was run, mounted or written\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if mi := disk.mount(); mi != nil {
		t.Errorf("the dry run mounted %s at %s", disk.part(), mi.Mountpoint)
	}
	amGone(t, root)
	amGone(t, stateDir)

	// The daemon does what the dry run said.
	dm := &amDaemon{t: t, bin: bin, rules: rulesPath, root: root, stateDir: stateDir}
	t.Cleanup(func() {
		for _, mi := range amMountsUnder(t, root) {
			unix.Unmount(mi.Mountpoint, unix.MNT_DETACH)
		}
	})
	dm.start()
	mi := disk.waitMount(dm)
	dm.waitLog("msg=mounted", wantPath)
	if mi.Mountpoint != wantPath {
		t.Errorf("mounted at %s, the dry run said %s", mi.Mountpoint, wantPath)
	}
	if e, ok := amEntryAt(amState(t, dm.stateDir), wantPath); !ok || e.Options != wantOpts {
		t.Errorf("state entry %+v, the dry run said options %s", e, wantOpts)
	}

	out = dryRun()
	if want := "would be skipped: already mounted: mounted by hotplugd at " + wantPath + "\n"; !strings.Contains(out, want) {
		t.Errorf("dry run of the mounted disk lacks %q", want)
	}

	disk.yank()
	disk.waitUnmount()
	disk.detach()
}

// amHasFilesystem reports whether the kernel has a filesystem now.
func amHasFilesystem(t testing.TB, name string) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == name {
			return true
		}
	}
	return false
}
