package looptest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Stalled is a loop device whose reads hang in the kernel: its backing
// file lives on a FUSE filesystem (ntfs-3g) whose server is stopped, so
// a process reading the device with O_DIRECT sleeps uninterruptibly
// (state D) and SIGKILL does not end it, as on a dying disk or a
// suspended device-mapper device. Resume lets the reads finish.
type Stalled struct {
	Dev    string // /dev/loopN
	server int    // the FUSE server's pid
	once   sync.Once
}

// Stall makes a Stalled device. Its cleanup resumes the server, detaches
// the device and unmounts the FUSE filesystem, even when the test fails.
func Stall(t testing.TB) *Stalled {
	t.Helper()
	Require(t, "mkntfs", "ntfs-3g")
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "ntfs.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err == nil {
		err = f.Truncate(64 << 20)
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	Run(t, "mkntfs", "-q", "-F", "-f", img)
	// -o no_detach keeps the server our child, so its pid is known.
	server := exec.Command(ToolPath("ntfs-3g"), "-o", "no_detach", img, mnt)
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	s := &Stalled{server: server.Process.Pid}
	t.Cleanup(func() {
		s.Resume()
		unix.Unmount(mnt, unix.MNT_DETACH)
		server.Process.Kill()
		server.Wait()
	})
	var parent, top unix.Stat_t
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if unix.Stat(dir, &parent) == nil && unix.Stat(mnt, &top) == nil && top.Dev != parent.Dev {
			break // the FUSE filesystem is mounted
		}
		if time.Now().After(deadline) {
			t.Fatal("the ntfs-3g mount never came up")
		}
	}
	backing := filepath.Join(mnt, "back.img")
	f, err = os.Create(backing)
	if err == nil {
		err = f.Truncate(8 << 20)
		f.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	s.Dev = strings.TrimSpace(Run(t, "losetup", "-f", "--show", backing))
	t.Cleanup(func() { RunErr("losetup", "-d", s.Dev) })
	if err := unix.Kill(s.server, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	return s
}

// Resume lets the FUSE server, and with it the device's reads, go on.
func (s *Stalled) Resume() {
	s.once.Do(func() { unix.Kill(s.server, unix.SIGCONT) })
}

// ReadArgv is a command that reads the device uncached, and so hangs.
func (s *Stalled) ReadArgv() []string {
	return []string{"/bin/dd", "if=" + s.Dev, "of=/dev/null", "bs=4096", "count=1", "skip=" + strconv.Itoa(100), "iflag=direct"}
}
