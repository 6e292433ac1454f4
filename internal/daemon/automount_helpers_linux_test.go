package daemon

// Helpers of the end-to-end automount tests: real images with a partition
// table on loop devices, the real hotplugd binary as a process, and
// /proc/self/mountinfo as the only judge of what is mounted. Every name is
// prefixed "am" so the package's other integration tests can keep their
// own helpers.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/looptest"
)

// amBuild builds cmd/hotplugd into a temporary directory and returns the
// binary's path: the tests run the daemon exactly as a user would.
func amBuild(t testing.TB) string {
	t.Helper()
	gomod := strings.TrimSpace(looptest.Run(t, "go", "env", "GOMOD"))
	if gomod == "" || gomod == os.DevNull {
		t.Fatalf("go env GOMOD: not in a module (%q)", gomod)
	}
	bin := filepath.Join(t.TempDir(), "hotplugd")
	cmd := exec.Command(looptest.ToolPath("go"), "build", "-o", bin, "./cmd/hotplugd")
	cmd.Dir = filepath.Dir(gomod)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/hotplugd: %v\n%s", err, out)
	}
	return bin
}

// amDisk is a disk image with a DOS partition table holding one
// partition with a filesystem, attached to a loop device. The partition's
// block device, loopNp1, exists between attach (partx -a: the kernel's
// real "add" uevent) and detach (partx -d: its "remove"). The cleanup of
// looptest.Attach leaves nothing mounted or attached.
type amDisk struct {
	t     testing.TB
	loop  string // /dev/loopN
	name  string // loopN
	fs    string // the filesystem type made on the partition
	label string
	uuid  string // the filesystem's UUID, as blkid reports it

	devnum string // MAJOR:MINOR of the partition while attached
}

// Partition size and offset: 1 MiB, as sfdisk aligns the first
// partition, up to the end of the image.
const (
	amPartStart = 1 << 20
	amDiskSize  = 48 << 20
)

// amNewDisk makes the filesystem in an image of its own (mkfs on a
// regular file, so no block device exists before the test says so),
// puts files on it, copies it into a disk image behind a partition table
// and attaches that image to a free loop device. The partition itself is
// not added yet. The cleanup, registered at once, detaches (lazily)
// whatever is still mounted from the partition, deletes it and detaches
// the loop device, even when the test fails.
func amNewDisk(t testing.TB, fsType, label string, files map[string]string) *amDisk {
	t.Helper()
	partImg := looptest.Image(t, amDiskSize-amPartStart, "")
	content := filepath.Join(t.TempDir(), "content")
	if err := os.Mkdir(content, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(content, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	partType := "83"
	switch fsType {
	case "ext4":
		looptest.Mkfs(t, "ext4", label, partImg, "-d", content)
	case "btrfs":
		// Mixed block groups: a btrfs this small needs them.
		looptest.Mkfs(t, "btrfs", label, partImg, "-M", "--rootdir", content)
	case "ntfs":
		partType = "7"
		looptest.Mkfs(t, "ntfs", label, partImg)
		for name := range files {
			looptest.Run(t, "ntfscp", "-q", partImg, filepath.Join(content, name), name)
		}
	case "vfat":
		partType = "c"
		if len(files) > 0 {
			t.Fatal("amNewDisk: no files on vfat")
		}
		looptest.Mkfs(t, "vfat", label, partImg)
	default:
		t.Fatalf("amNewDisk: no mkfs for %s", fsType)
	}
	uuid := strings.TrimSpace(looptest.Run(t, "blkid", "-p", "-o", "value", "-s", "UUID", partImg))

	diskImg := looptest.Image(t, amDiskSize, "label: dos\nstart=2048, type="+partType+"\n")
	amCopyAt(t, partImg, diskImg, amPartStart)

	loop := looptest.Attach(t, diskImg)
	return &amDisk{t: t, loop: loop.Dev, name: loop.Name, fs: fsType, label: label, uuid: uuid}
}

// amCopyAt writes the image src into dst at offset, skipping blocks of
// zeros (both files are sparse).
func amCopyAt(t testing.TB, src, dst string, offset int64) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	buf := make([]byte, 64<<10)
	for pos := int64(0); ; pos += int64(len(buf)) {
		n, err := io.ReadFull(in, buf)
		if n > 0 && slices.ContainsFunc(buf[:n], func(b byte) bool { return b != 0 }) {
			if _, werr := out.WriteAt(buf[:n], offset+pos); werr != nil {
				t.Fatal(werr)
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Sync(); err != nil {
		t.Fatal(err)
	}
}

// part is the partition's device node, /dev/loopNp1.
func (d *amDisk) part() string { return d.loop + "p1" }

// partName is the partition's kernel name, loopNp1.
func (d *amDisk) partName() string { return d.name + "p1" }

// devpath is the partition's DEVPATH.
func (d *amDisk) devpath() string { return "/devices/virtual/block/" + d.name + "/" + d.partName() }

// attach adds the partition (partx -a): the kernel creates loopNp1 and
// sends its "add" uevent.
func (d *amDisk) attach() {
	d.t.Helper()
	looptest.Run(d.t, "partx", "-a", "--nr", "1", d.loop)
	d.waitNode()
}

// waitNode waits for the partition's device node and records its number.
func (d *amDisk) waitNode() {
	d.t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		var st unix.Stat_t
		b, err := os.ReadFile("/sys/class/block/" + d.partName() + "/dev")
		if err == nil && unix.Stat(d.part(), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			d.devnum = strings.TrimSpace(string(b))
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("%s did not appear", d.part())
		}
	}
}

// yank makes the kernel announce the partition's removal, as when a USB
// disk is pulled, while the device stays: a real "remove" uevent (with
// SYNTH_UUID), written to its sysfs uevent file. partx -d cannot stand in
// here, since the kernel refuses to delete a mounted partition (EBUSY).
func (d *amDisk) yank() {
	d.t.Helper()
	if err := os.WriteFile("/sys/class/block/"+d.partName()+"/uevent", []byte("remove"), 0); err != nil {
		d.t.Fatal(err)
	}
}

// detach deletes the partition (partx -d). It fails while anything
// still holds the partition open, a mount included, so its success
// proves the filesystem is gone, not just detached from view. A lazily
// detached filesystem is released a moment after its last user, hence
// the short retry.
func (d *amDisk) detach() {
	d.t.Helper()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err = looptest.RunErr("partx", "-d", "--nr", "1", d.loop); err == nil {
			return
		}
	}
	d.t.Fatalf("partition of %s still busy: %v", d.loop, err)
}

// isMount reports whether mi is the mount of the partition: by device
// number, or by source for btrfs, whose mounts carry an anonymous one.
func (d *amDisk) isMount(mi *mountinfo.Info) bool {
	return mi.Source == d.part() || d.devnum != "" && fmt.Sprintf("%d:%d", mi.Major, mi.Minor) == d.devnum
}

// mount returns the partition's mount, or nil.
func (d *amDisk) mount() *mountinfo.Info {
	d.t.Helper()
	infos, err := mountinfo.GetMounts(func(mi *mountinfo.Info) (bool, bool) { return !d.isMount(mi), false })
	if err != nil {
		d.t.Fatal(err)
	}
	switch len(infos) {
	case 0:
		return nil
	case 1:
		return infos[0]
	}
	d.t.Fatalf("%s is mounted %d times: %v", d.part(), len(infos), amMountpoints(infos))
	return nil
}

// waitMount waits for the partition to be mounted and returns the mount.
func (d *amDisk) waitMount(dm *amDaemon) *mountinfo.Info {
	d.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if mi := d.mount(); mi != nil {
			return mi
		}
		if time.Now().After(deadline) || dm.exited() {
			d.t.Fatalf("%s (%s %q) was not mounted", d.part(), d.fs, d.label)
		}
	}
}

// waitUnmount waits for the partition's mount to go from mountinfo.
func (d *amDisk) waitUnmount() {
	d.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); d.mount() != nil; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			d.t.Fatalf("%s is still mounted at %s", d.part(), d.mount().Mountpoint)
		}
	}
}

func amMountpoints(infos []*mountinfo.Info) []string {
	var out []string
	for _, mi := range infos {
		out = append(out, mi.Mountpoint)
	}
	return out
}

// amMountsUnder returns the mounts at or below dir.
func amMountsUnder(t testing.TB, dir string) []*mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	return infos
}

// amCheckOptions checks the invariant options of a hotplugd mount in
// mountinfo: nosuid, nodev and noexec per mount, nothing that undoes
// them, no uid= (none of the filesystems tested shows one, so one would
// have been smuggled in), and the filesystem options in want.
func amCheckOptions(t testing.TB, mi *mountinfo.Info, want ...string) {
	t.Helper()
	opts := strings.Split(mi.Options, ",")
	vfs := strings.Split(mi.VFSOptions, ",")
	for _, o := range []string{"nosuid", "nodev", "noexec"} {
		if !slices.Contains(opts, o) {
			t.Errorf("%s: mount options %q lack %s", mi.Mountpoint, mi.Options, o)
		}
	}
	for _, o := range slices.Concat(opts, vfs) {
		if o == "exec" || o == "suid" || o == "dev" || strings.HasPrefix(o, "uid=") {
			t.Errorf("%s: option %q in %q / %q", mi.Mountpoint, o, mi.Options, mi.VFSOptions)
		}
	}
	for _, o := range want {
		if !slices.Contains(vfs, o) {
			t.Errorf("%s: filesystem options %q lack %s", mi.Mountpoint, mi.VFSOptions, o)
		}
	}
}

// amState reads the daemon's mount state file.
func amState(t testing.TB, stateDir string) []mount.Entry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(stateDir, "mounts.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Version int           `json:"version"`
		Mounts  []mount.Entry `json:"mounts"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("mounts.json: %v\n%s", err, b)
	}
	return st.Mounts
}

// amWriteState replaces the daemon's mount state file, as the daemon
// would have written it.
func amWriteState(t testing.TB, stateDir string, entries []mount.Entry) {
	t.Helper()
	b, err := json.MarshalIndent(struct {
		Version int           `json:"version"`
		Mounts  []mount.Entry `json:"mounts"`
	}{1, entries}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stateDir, "mounts.json"), append(b, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
}

// amEntryAt returns the state entry of a mount point.
func amEntryAt(entries []mount.Entry, mountPoint string) (mount.Entry, bool) {
	i := slices.IndexFunc(entries, func(e mount.Entry) bool { return e.MountPoint == mountPoint })
	if i < 0 {
		return mount.Entry{}, false
	}
	return entries[i], true
}

// amGone fails the test unless nothing is at path.
func amGone(t testing.TB, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s: still there (%v)", path, err)
	}
}

// amEmptyDir fails the test unless dir is empty or absent.
func amEmptyDir(t testing.TB, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("%s: left in the mount root", filepath.Join(dir, e.Name()))
	}
}

// amConfig is a daemon's rules file.
type amConfig struct {
	disks    []*amDisk // the rule mounts partitions of these loop devices only
	coldplug bool
	// actions are extra YAML lines of the rule's action list, after the
	// mount, indented by six spaces.
	actions []string
	// group is settings.control.group.
	group string
	// settings are extra YAML lines under settings, indented by two.
	settings []string
}

// amRuleName is the name of the test rules' automount rule.
const amRuleName = "automount-test"

// rules renders the rules file. The match names the test's own loop
// devices, so no other block device of the machine is ever touched.
func (c amConfig) rules(root, stateDir string) string {
	scope := []string{"false"} // no disk: the rule matches nothing
	for _, d := range c.disks {
		scope = append(scope, "devpath startsWith "+strconv.Quote("/devices/virtual/block/"+d.name+"/"))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "settings:\n  source: kernel\n  coldplug: %t\n  mount_root: %s\n  state_dir: %s\n",
		c.coldplug, strconv.Quote(root), strconv.Quote(stateDir))
	fmt.Fprintf(&b, "  control: {socket: %s, group: %s}\n", strconv.Quote(filepath.Join(filepath.Dir(stateDir), "control")), strconv.Quote(c.group))
	for _, line := range c.settings {
		fmt.Fprintf(&b, "  %s\n", line)
	}
	fmt.Fprintf(&b, "rules:\n  - name: %s\n    match: >\n", amRuleName)
	fmt.Fprintf(&b, "      action == \"add\" && subsystem == \"block\" && fs.usage == \"filesystem\"\n")
	fmt.Fprintf(&b, "      && (%s)\n", strings.Join(scope, " || "))
	fmt.Fprintf(&b, "    actions:\n      - mount: {}\n")
	for _, a := range c.actions {
		fmt.Fprintf(&b, "      %s\n", a)
	}
	return b.String()
}

// amDaemon is a running `hotplugd run`.
type amDaemon struct {
	t        testing.TB
	bin      string
	rules    string // the rules file
	root     string // mount_root
	stateDir string // state_dir
	socket   string // the control socket

	cmd  *exec.Cmd
	log  *amLog
	done chan struct{} // closed when the process has exited and its stderr is read
}

// amStart writes the rules file into a new temporary directory (mode
// 0700, as the daemon demands), with mount_root <dir>/media and state_dir
// <dir>/state, and starts the daemon on it.
func amStart(t testing.TB, bin string, cfg amConfig) *amDaemon {
	t.Helper()
	dir := t.TempDir()
	d := &amDaemon{
		t: t, bin: bin,
		rules:    filepath.Join(dir, "rules.yaml"),
		root:     filepath.Join(dir, "media"),
		stateDir: filepath.Join(dir, "state"),
		socket:   filepath.Join(dir, "control"),
	}
	if err := os.WriteFile(d.rules, []byte(cfg.rules(d.root, d.stateDir)), 0o600); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, nothing stays mounted under the mount root; this
	// runs after the daemon is stopped and before the directory goes.
	t.Cleanup(func() {
		infos := amMountsUnder(t, d.root)
		for i := len(infos) - 1; i >= 0; i-- {
			if err := unix.Unmount(infos[i].Mountpoint, unix.MNT_DETACH); err != nil {
				t.Errorf("cleanup: umount %s: %v", infos[i].Mountpoint, err)
			}
		}
	})
	d.start()
	return d
}

// start runs the daemon on its rules file and waits until it is ready.
func (d *amDaemon) start() {
	d.t.Helper()
	d.log = &amLog{t: d.t}
	if _, ok := d.t.(*testing.B); ok {
		log := d.log
		log.quiet = true
		d.t.Cleanup(func() {
			if d.t.Failed() {
				d.t.Logf("hotplugd's log:\n%s", strings.Join(log.lines, "\n"))
			}
		})
	}
	d.done = make(chan struct{})
	d.cmd = exec.Command(d.bin, "run", "--config", d.rules)
	// Text logs on stderr, no systemd: the test is the supervisor.
	d.cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "LISTEN_FDS", "LISTEN_PID":
			return true
		}
		return false
	})
	d.cmd.Stderr = d.log
	d.cmd.WaitDelay = 5 * time.Second
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	done := d.done
	go func() {
		_ = d.cmd.Wait()
		close(done)
	}()
	d.t.Cleanup(d.stop)
	d.waitLog(`msg="hotplugd running"`)
}

// exited reports whether the daemon process has exited.
func (d *amDaemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop ends the daemon orderly (SIGTERM), or kills it after 15 s.
func (d *amDaemon) stop() {
	if d.exited() {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		if st := d.cmd.ProcessState; st != nil && !st.Success() {
			d.t.Errorf("hotplugd exited with %v after SIGTERM", st)
		}
	case <-time.After(15 * time.Second):
		d.t.Errorf("hotplugd did not stop within 15s of SIGTERM; killing it")
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// kill9 kills the daemon with SIGKILL: no cleanup of any kind runs.
func (d *amDaemon) kill9() {
	d.t.Helper()
	if err := d.cmd.Process.Kill(); err != nil {
		d.t.Fatal(err)
	}
	<-d.done
}

// waitLog waits for a log line containing every one of subs and returns it.
func (d *amDaemon) waitLog(subs ...string) string {
	d.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if line, ok := d.log.find(subs...); ok {
			return line
		}
		if d.exited() {
			if line, ok := d.log.find(subs...); ok {
				return line
			}
			d.t.Fatalf("hotplugd exited (%v) before logging %q", d.cmd.ProcessState, subs)
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("hotplugd did not log %q", subs)
		}
	}
}

// waitCount waits until n log lines contain sub.
func (d *amDaemon) waitCount(sub string, n int) {
	d.t.Helper()
	for deadline := time.Now().Add(15 * time.Second); d.log.count(sub) < n; time.Sleep(5 * time.Millisecond) {
		if d.exited() || time.Now().After(deadline) {
			d.t.Fatalf("hotplugd logged %q %d times, want %d", sub, d.log.count(sub), n)
		}
	}
}

// amLog collects the daemon's stderr, line by line, and passes it to
// t.Log. A benchmark's log is printed even when it passes, so there the
// lines are printed only on failure.
type amLog struct {
	t       testing.TB
	quiet   bool
	mu      sync.Mutex
	lines   []string
	partial []byte
}

func (l *amLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		l.lines = append(l.lines, line)
		if !l.quiet {
			l.t.Logf("hotplugd: %s", line)
		}
	}
}

// find returns the first line containing all of subs.
func (l *amLog) find(subs ...string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, line := range l.lines {
		if !slices.ContainsFunc(subs, func(s string) bool { return !strings.Contains(line, s) }) {
			return line, true
		}
	}
	return "", false
}

// count returns how many lines contain sub.
func (l *amLog) count(sub string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, sub) {
			n++
		}
	}
	return n
}
