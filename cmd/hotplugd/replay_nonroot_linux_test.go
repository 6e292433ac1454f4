package main

import (
	"bytes"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// TestReplayAsNobody: an ordinary user replays a recording against rules
// that mount, run a program and post to a webhook, and nothing is
// mounted, run, sent or written: no mount root, no state file, no file
// the program would make, no connection.
func TestReplayAsNobody(t *testing.T) {
	looptest.Need(t, os.Geteuid() == 0, "root, to run hotplugd as nobody")
	bin := buildBinary(t)
	dir, err := os.MkdirTemp("", "hotplugd-replay-") // nobody must reach it: not the 0700 test temp dir
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	out := filepath.Join(dir, "out") // where the program would write, as nobody
	for _, d := range []string{dir, out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o755)
	}
	if err := os.Chown(out, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var connections atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			connections.Add(1)
			c.Close()
		}
	}()
	hp := filepath.Join(dir, "hotplugd")
	copyFile(t, bin, hp)
	if err := os.Chmod(hp, 0o755); err != nil {
		t.Fatal(err)
	}
	copyFile(t, "testdata/loop0p1-plug-pull.jsonl", filepath.Join(dir, "events.jsonl"))
	rules := fmt.Sprintf(`settings: {state_dir: %[1]s/state, mount_root: %[1]s/media}
rules:
  - name: everything
    match: action == "add" && fs.usage == "filesystem"
    actions:
      - mount: {}
      - run: {argv: ["/bin/sh", "-c", "touch \"$0\"/ran", %[2]q]}
      - notify: {message: "{{ fs.label }}", targets: [webhook: {url: "http://%[3]s/hook"}, desktop: {}]}
`, dir, out, ln.Addr())
	writeFile(t, filepath.Join(dir, "rules.yaml"), rules)
	args := []string{"test", "--config", filepath.Join(dir, "rules.yaml"), "--replay", filepath.Join(dir, "events.jsonl")}
	expect := filepath.Join(dir, "expect.yaml")
	if b, err := exec.Command(hp, append(args, "--expect", expect, "--update")...).CombinedOutput(); err != nil {
		t.Fatalf("--update as root: %v\n%s", err, b)
	}
	before := snapshot(t, dir)
	for _, tt := range []struct {
		args []string
		want string
	}{
		{args, "mount /dev/loop0p1 at " + dir + "/media/STICK\n"},
		{append(args, "--expect", expect), expect + ": all 5 events agree\n"},
	} {
		var stdout, stderr bytes.Buffer
		cmd := exec.Command(hp, tt.args...)
		cmd.Stdout, cmd.Stderr, cmd.Dir = &stdout, &stderr, out
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		if err := cmd.Run(); err != nil || !strings.Contains(stdout.String(), tt.want) {
			t.Errorf("%q as nobody: %v, want %q in\n%s%s", tt.args, err, tt.want, &stdout, &stderr)
		}
	}
	if diff := cmp.Diff(before, snapshot(t, dir)); diff != "" {
		t.Errorf("the replay changed files (-before +after):\n%s", diff)
	}
	if n := connections.Load(); n != 0 {
		t.Errorf("the webhook got %d connections", n)
	}
	if mi, err := os.ReadFile("/proc/self/mountinfo"); err != nil || strings.Contains(string(mi), dir) {
		t.Errorf("mountinfo names %s (%v)", dir, err)
	}
}

// snapshot lists every file under dir with its size, mode and time.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		files = append(files, fmt.Sprintf("%s %d %v %s", p, fi.Size(), fi.Mode(), fi.ModTime()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}
