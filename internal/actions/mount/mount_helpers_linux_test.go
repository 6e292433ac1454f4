package mount

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/looptest"
)

// testDisk is a loop device with one real partition holding a filesystem.
type testDisk struct {
	loop string // /dev/loopN
	part string // /dev/loopNp1
	dev  Device // as the probe reports it
}

// diskOptions shape a testDisk.
type diskOptions struct {
	populate map[string]string // ext4 only: files to put on the filesystem
}

// newDisk makes an image with a DOS partition table, attaches it to a
// loop device, adds the partition and makes fsType on it. The cleanup of
// looptest.Attach leaves nothing mounted or attached, even when the test
// fails.
func newDisk(t testing.TB, fsType, label string, o diskOptions) *testDisk {
	t.Helper()
	size := int64(32 << 20)
	if fsType == "btrfs" {
		size = 128 << 20
	}
	loop := looptest.Attach(t, looptest.Image(t, size, "label: dos\n,,83\n"))
	loop.AddPartitions(t, 1)
	d := &testDisk{loop: loop.Dev, part: loop.Part(1)}
	var extra []string
	if fsType == "ext4" && len(o.populate) > 0 {
		dir := t.TempDir()
		for name, content := range o.populate {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		extra = []string{"-d", dir}
	}
	looptest.Mkfs(t, fsType, label, d.part, extra...)
	d.dev = probeDisk(t, d.part, looptest.WaitBlockDevice(t, d.part))
	return d
}

// probeDisk fills a Device the way the device package does: blkid's udev
// output, the raw label decoded from ID_FS_LABEL_ENC, and sysfs.
func probeDisk(t testing.TB, part string, st unix.Stat_t) Device {
	t.Helper()
	props := map[string]string{}
	for line := range strings.Lines(looptest.Run(t, "blkid", "-p", "-o", "udev", part)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), "=")
		props[k] = v
	}
	dev := Device{
		Major:     unix.Major(st.Rdev),
		Minor:     unix.Minor(st.Rdev),
		Devnode:   part,
		Devname:   filepath.Base(part),
		FSUsage:   props["ID_FS_USAGE"],
		FSType:    props["ID_FS_TYPE"],
		Label:     decodeUdevEnc(props["ID_FS_LABEL_ENC"]),
		UUID:      props["ID_FS_UUID"],
		PartUUID:  props["ID_PART_ENTRY_UUID"],
		PartLabel: props["ID_PART_ENTRY_NAME"],
	}
	link, err := os.Readlink("/sys/dev/block/" + dev.DevNum())
	if err != nil {
		t.Fatal(err)
	}
	dev.Devpath = strings.TrimPrefix(filepath.Clean(filepath.Join("/sys/dev/block", link)), "/sys")
	return dev
}

// decodeUdevEnc decodes udev's \xNN escaping.
func decodeUdevEnc(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if n, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountFixture is a Mounter on a fresh mount root and state file.
type mountFixture struct {
	m     *Mounter
	cfg   Config
	root  string
	state string
}

// fakeProc makes a procfs root whose filesystems file holds filesystems
// and whose self is the real /proc/self, for mountinfo.
func fakeProc(t testing.TB, filesystems string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "filesystems"), []byte(filesystems), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/proc/self", filepath.Join(dir, "self")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// newMountFixture makes a Mounter with every host path but /proc, /sys and
// /dev in temporary directories. The mount root is not created: Mount
// does that.
func newMountFixture(t testing.TB, mod func(*Config)) *mountFixture {
	t.Helper()
	base := t.TempDir()
	cfg := Config{
		MountRoot: filepath.Join(base, "media"),
		StatePath: filepath.Join(base, "run", "hotplugd", "mounts.json"),
		Roots:     host.Roots{Etc: base}, // no fstab: nothing listed
		Timeout:   20 * time.Second,
		Logger:    slog.New(slog.NewTextHandler(mountLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := NewMounter(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); detachUnder(t, cfg.MountRoot) })
	return &mountFixture{m: m, cfg: cfg, root: cfg.MountRoot, state: cfg.StatePath}
}

// detachUnder lazily unmounts everything at or under dir.
func detachUnder(t testing.TB, dir string) {
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	for i := len(infos) - 1; i >= 0; i-- {
		if err := unix.Unmount(infos[i].Mountpoint, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("cleanup: umount %s: %v", infos[i].Mountpoint, err)
		}
	}
}

// mountLogWriter sends log lines to t.Log.
type mountLogWriter struct{ t testing.TB }

func (w mountLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// mountOn returns the topmost mount at path, or nil.
func mountOn(t testing.TB, path string) *mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(nil)
	if err != nil {
		t.Fatal(err)
	}
	at := mountsAt(infos, path)
	if len(at) == 0 {
		return nil
	}
	return at[len(at)-1]
}

// hasOptions reports whether a comma-separated option list has each want.
func hasOptions(list string, want ...string) bool {
	have := strings.Split(list, ",")
	for _, w := range want {
		found := false
		for _, h := range have {
			if h == w {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// stateEntries reads the state file as a fresh daemon would.
func stateEntries(t testing.TB, path string) map[string]Entry {
	t.Helper()
	entries, err := readState(path)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	return entries
}

// dirEntries lists a directory's names; nil when it is empty or missing.
func dirEntries(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// waitForMount polls cond for up to 10 seconds.
func waitForMount(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// diskseq is the kernel's sequence number of the disk's loop device,
// from its sysfs diskseq.
func (d *testDisk) diskseq(t testing.TB) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/class/block", filepath.Base(d.loop), "diskseq"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// rewriteState replaces old, which must be there, with new in the state
// file, as a state written before something changed would read.
func rewriteState(t testing.TB, path, old, new string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("the state file has no %s:\n%s", old, b)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(b), old, new, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}
