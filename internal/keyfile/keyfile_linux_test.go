package keyfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// newKey writes a key of root's (the test runs as root) with mode perm.
func newKey(t *testing.T, perm os.FileMode) string {
	t.Helper()
	looptest.Need(t, os.Geteuid() == 0, "root (keyfiles must be root's)")
	p := filepath.Join(t.TempDir(), "backup.key")
	if err := os.WriteFile(p, []byte("secret key bytes\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckAndOpen(t *testing.T) {
	cases := []struct {
		name  string
		perm  os.FileMode
		owner int // -1: root
		want  string
	}{
		{"root only 0600", 0o600, -1, ""},
		{"root only 0400", 0o400, -1, ""},
		{"executable by others does not matter", 0o711, -1, ""},
		{"readable by others", 0o604, -1, "readable by its group or others (mode 0604"},
		{"readable by the group", 0o640, -1, "readable by its group or others (mode 0640"},
		{"writable by the group", 0o620, -1, "writable by its group or others"},
		{"readable and writable by all", 0o666, -1, "readable and writable by its group or others"},
		{"owned by a user", 0o600, 1000, "is owned by uid 1000, not root"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := newKey(t, c.perm)
			if c.owner >= 0 {
				if err := os.Chown(p, c.owner, c.owner); err != nil {
					t.Fatal(err)
				}
			}
			for what, err := range map[string]error{"Check": Check(p), "Open": openErr(p)} {
				switch {
				case c.want == "" && err != nil:
					t.Errorf("%s: %v", what, err)
				case c.want != "" && (err == nil || !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), c.want)):
					t.Errorf("%s: %v, want ErrUnsafe saying %q", what, err, c.want)
				}
			}
		})
	}
}

func openErr(p string) error {
	f, err := Open(p)
	if err == nil {
		f.Close()
	}
	return err
}

// TestNotAFile: a symlink (even to a good key), a directory and a FIFO
// are refused, and opening the FIFO does not block.
func TestNotAFile(t *testing.T) {
	good := newKey(t, 0o600)
	dir := t.TempDir()
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.key")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{link: "is a symlink", dir: "not a regular file", fifo: "not a regular file"} {
		if err := Check(path); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%s): %v, want %q", path, err, want)
		}
		done := make(chan error, 1)
		go func() { done <- openErr(path) }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("Open(%s): %v, want %q", path, err, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Open(%s) blocks", path)
		}
	}
	if err := Check(filepath.Join(dir, "missing.key")); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Check of a missing file: %v", err)
	}
}

// TestOpenReadsWhatItChecked: the key is read from the file Open
// checked, even when the path leads elsewhere afterwards.
func TestOpenReadsWhatItChecked(t *testing.T) {
	p := newKey(t, 0o600)
	f, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	other := filepath.Join(t.TempDir(), "other")
	if err := os.WriteFile(other, []byte("someone else's"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, p); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(f)
	if err != nil || string(b) != "secret key bytes\n" {
		t.Errorf("read %q, %v; want the key that was checked", b, err)
	}
	if err := openErr(p); err == nil || !strings.Contains(err.Error(), "is a symlink") {
		t.Errorf("Open after the swap: %v, want the symlink refused", err)
	}
}
