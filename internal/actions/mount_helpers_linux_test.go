package actions

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// requireMountEnv skips a test that needs root, loop devices and tools,
// unless CI=true, where a missing prerequisite is a failure.
func requireMountEnv(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		missing = append(missing, "/dev/loop-control")
	}
	for _, tool := range append([]string{"sfdisk", "losetup", "partx", "blkid"}, tools...) {
		if mountToolPath(tool) == "" {
			missing = append(missing, tool)
		}
	}
	if len(missing) == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisites missing: %s", strings.Join(missing, ", "))
	}
	t.Skipf("prerequisites missing: %s", strings.Join(missing, ", "))
}

// mountToolPath finds a program in PATH or the sbin directories root's PATH
// sometimes lacks.
func mountToolPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// mountTool runs a tool and fails the test with its output on error.
func mountTool(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := mountToolErr(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mountToolErr(name string, args ...string) (string, error) {
	p := mountToolPath(name)
	if p == "" {
		return "", fmt.Errorf("%s not found", name)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(p, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("%s %q: %v: %s%s", name, args, err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

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

// newDisk makes an image with a DOS partition table, attaches it with
// losetup, adds the partition with partx -a and makes fsType on it. Its
// cleanup runs even when the test fails: it detaches whatever is still
// mounted from the partition first (a mounted partition cannot be
// deleted), then deletes the partition and the loop device.
func newDisk(t testing.TB, fsType, label string, o diskOptions) *testDisk {
	t.Helper()
	size := int64(32 << 20)
	if fsType == "btrfs" {
		size = 128 << 20
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sfdisk := exec.Command(mountToolPath("sfdisk"), "-q", img)
	sfdisk.Stdin = strings.NewReader("label: dos\n,,83\n")
	if out, err := sfdisk.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	loop := strings.TrimSpace(mountTool(t, "losetup", "-f", "--show", img))
	d := &testDisk{loop: loop, part: loop + "p1"}
	t.Cleanup(func() { d.destroy(t) })
	mountTool(t, "partx", "-a", loop)
	var st unix.Stat_t
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if unix.Stat(d.part, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", d.part)
		}
	}
	switch fsType {
	case "ext4":
		args := []string{"-q", "-F", "-L", label}
		if len(o.populate) > 0 {
			dir := t.TempDir()
			for name, content := range o.populate {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			args = append(args, "-d", dir)
		}
		mountTool(t, "mkfs.ext4", append(args, d.part)...)
	case "ntfs":
		mountTool(t, "mkntfs", "-Q", "-q", "-F", "-L", label, d.part)
	case "vfat":
		mountTool(t, "mkfs.vfat", "-n", label, d.part)
	case "btrfs":
		mountTool(t, "mkfs.btrfs", "-q", "-f", "-L", label, d.part)
	default:
		t.Fatalf("newDisk: no mkfs for %s", fsType)
	}
	d.dev = probeDisk(t, d.part, st)
	return d
}

// probeDisk fills a Device the way the device package does: blkid's udev
// output, the raw label decoded from ID_FS_LABEL_ENC, and sysfs.
func probeDisk(t testing.TB, part string, st unix.Stat_t) Device {
	t.Helper()
	props := map[string]string{}
	for line := range strings.Lines(mountTool(t, "blkid", "-p", "-o", "udev", part)) {
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

// destroy detaches mounts of the partition, then removes it and the loop
// device, retrying while something (udev probing) holds them briefly.
func (d *testDisk) destroy(t testing.TB) {
	if d.dev.Major != 0 || d.dev.Minor != 0 {
		if infos, err := mountinfo.GetMounts(nil); err == nil {
			for i := len(infos) - 1; i >= 0; i-- {
				if isDeviceMount(infos[i], d.dev) {
					if err := unix.Unmount(infos[i].Mountpoint, unix.MNT_DETACH); err != nil {
						t.Errorf("cleanup: umount %s: %v", infos[i].Mountpoint, err)
					}
				}
			}
		}
	}
	retry := func(name string, args ...string) {
		var err error
		for range 50 {
			if _, err = mountToolErr(name, args...); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("cleanup: %v", err)
	}
	if _, err := os.Stat(d.part); err == nil {
		retry("partx", "-d", d.loop)
	}
	retry("losetup", "-d", d.loop)
}

// mountFixture is a Mounter on a fresh mount root and state file.
type mountFixture struct {
	m     *Mounter
	cfg   MounterConfig
	root  string
	state string
}

// newMountFixture makes a Mounter with every host path but /proc, /sys and
// /dev in temporary directories. The mount root is not created: Mount
// does that.
func newMountFixture(t testing.TB, mod func(*MounterConfig)) *mountFixture {
	t.Helper()
	base := t.TempDir()
	cfg := MounterConfig{
		MountRoot: filepath.Join(base, "media"),
		StatePath: filepath.Join(base, "run", "hotplugd", "mounts.json"),
		FstabPath: filepath.Join(base, "fstab"), // absent: nothing listed
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
	t.Cleanup(func() { detachUnder(t, cfg.MountRoot) })
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
func stateEntries(t testing.TB, path string) map[string]MountEntry {
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
