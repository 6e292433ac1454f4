package looptest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// Need skips the test when a prerequisite is missing, or, with CI=true,
// fails it.
func Need(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisites missing: %s", what)
	}
	t.Skipf("prerequisites missing: %s", what)
}

// Require needs root, /dev/loop-control, the partition tools (sfdisk,
// losetup, partx, blkid) and the given tools.
func Require(t testing.TB, tools ...string) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		missing = append(missing, "/dev/loop-control")
	}
	for _, tool := range append([]string{"sfdisk", "losetup", "partx", "blkid"}, tools...) {
		if ToolPath(tool) == "" {
			missing = append(missing, tool)
		}
	}
	Need(t, len(missing) == 0, strings.Join(missing, ", "))
}

// ToolPath finds a program in PATH or in the directories a non-login
// root PATH sometimes lacks; "" if there is none.
func ToolPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/go/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// Run runs a tool and returns its stdout. A missing tool is a missing
// prerequisite (see Need); a failing one fails the test with all it said.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	Need(t, ToolPath(name) != "", name)
	out, err := RunErr(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RunErr runs a tool and returns its stdout, and an error with all it
// said if it fails.
func RunErr(name string, args ...string) (string, error) {
	return runIn(nil, name, args...)
}

func runIn(stdin []byte, name string, args ...string) (string, error) {
	p := ToolPath(name)
	if p == "" {
		return "", fmt.Errorf("%s not found", name)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(p, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %q: %v: %s%s", name, args, err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// Image makes a sparse file of size bytes in a new temporary directory
// and, unless table is "", writes the sfdisk script table to it as its
// partition table (e.g. "label: dos\nstart=2048, type=83\n").
func Image(t testing.TB, size int64, table string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if table != "" {
		Need(t, ToolPath("sfdisk") != "", "sfdisk")
		if _, err := runIn([]byte(table), "sfdisk", "-q", img); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// Mkfs makes a filesystem of type fsType (ext4, btrfs, ntfs or vfat)
// labelled label on target, a block device or an image file. extra
// arguments go before target, e.g. "-d", dir to fill an ext4.
func Mkfs(t testing.TB, fsType, label, target string, extra ...string) {
	t.Helper()
	var tool string
	var args []string
	switch fsType {
	case "ext4":
		tool, args = "mkfs.ext4", []string{"-q", "-F", "-L", label}
	case "btrfs":
		tool, args = "mkfs.btrfs", []string{"-q", "-f", "-L", label}
	case "ntfs":
		tool, args = "mkntfs", []string{"-Q", "-q", "-F", "-L", label}
	case "vfat":
		tool, args = "mkfs.vfat", []string{"-n", label}
	default:
		t.Fatalf("looptest.Mkfs: no mkfs for %s", fsType)
	}
	Run(t, tool, slices.Concat(args, extra, []string{target})...)
}

// Loop is an image attached to a loop device.
type Loop struct {
	Dev  string // /dev/loopN
	Name string // loopN
}

// Attach attaches img to a free loop device (losetup -f --show). Its
// cleanup, registered at once, runs even when the test fails: it lazily
// unmounts whatever is still mounted from the device or its partitions,
// deletes the partitions (partx -d) and detaches the device, retrying
// while something (udev probing, a lazily detached filesystem) holds
// them briefly.
func Attach(t testing.TB, img string) *Loop {
	t.Helper()
	dev := strings.TrimSpace(Run(t, "losetup", "-f", "--show", img))
	l := &Loop{Dev: dev, Name: filepath.Base(dev)}
	t.Cleanup(func() { l.destroy(t) })
	return l
}

// Part is the device node of partition n, /dev/loopNpn.
func (l *Loop) Part(n int) string { return l.Dev + "p" + strconv.Itoa(n) }

// PartName is the kernel name of partition n, loopNpn.
func (l *Loop) PartName(n int) string { return l.Name + "p" + strconv.Itoa(n) }

// AddPartitions adds the partitions of the table (partx -a), the kernel
// here having no partition parser, and waits until partitions 1 to n
// are block devices.
func (l *Loop) AddPartitions(t testing.TB, n int) {
	t.Helper()
	Run(t, "partx", "-a", l.Dev)
	for i := 1; i <= n; i++ {
		WaitBlockDevice(t, l.Part(i))
	}
}

// WaitBlockDevice waits up to 10 seconds for path to be a block device
// and returns its stat.
func WaitBlockDevice(t testing.TB, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if unix.Stat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear", path)
		}
	}
}

// partitions returns the kernel names of the device's partitions now.
func (l *Loop) partitions() []string {
	paths, _ := filepath.Glob("/sys/class/block/" + l.Name + "/" + l.Name + "p*")
	var names []string
	for _, p := range paths {
		names = append(names, filepath.Base(p))
	}
	return names
}

// destroy is the cleanup of Attach.
func (l *Loop) destroy(t testing.TB) {
	parts := l.partitions()
	l.unmountAll(t, parts)
	retry := func(name string, args ...string) {
		var err error
		for range 50 {
			if _, err = RunErr(name, args...); err == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("cleanup: %v", err)
	}
	if len(parts) > 0 {
		retry("partx", "-d", l.Dev)
	}
	retry("losetup", "-d", l.Dev)
}

// unmountAll lazily unmounts, wherever they are, the mounts of the
// device and of parts: by device number, or by source for filesystems
// that show an anonymous device number (btrfs).
func (l *Loop) unmountAll(t testing.TB, parts []string) {
	sources := map[string]bool{l.Dev: true}
	devnums := map[string]bool{}
	for _, name := range append([]string{l.Name}, parts...) {
		sources["/dev/"+name] = true
		if b, err := os.ReadFile("/sys/class/block/" + name + "/dev"); err == nil {
			devnums[strings.TrimSpace(string(b))] = true
		}
	}
	infos, err := mountinfo.GetMounts(func(mi *mountinfo.Info) (skip, stop bool) {
		return !sources[mi.Source] && !devnums[fmt.Sprintf("%d:%d", mi.Major, mi.Minor)], false
	})
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
