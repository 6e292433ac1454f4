package daemon

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestBinaryNonRoot: as an ordinary user (nobody), `hotplugd run` still
// listens and runs actions as that user; mounting is refused with a clear
// reason, at start and when a mount rule fires.
func TestBinaryNonRoot(t *testing.T) {
	bin := needBinary(t)
	need(t, os.Geteuid() == 0, "root, to start the daemon as nobody")
	// nobody must reach the binary, the rules and the output: a 0755
	// directory under /tmp, not the 0700 test temp dir.
	dir, err := os.MkdirTemp("", "hotplugd-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	out := filepath.Join(dir, "out")
	for _, d := range []string{dir, out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chmod(d, 0o755)
	}
	if err := os.Chown(out, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	hp := filepath.Join(dir, "hotplugd")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(hp, b, 0o755); err != nil {
		t.Fatal(err)
	}
	tag := newTag()
	rules := fmt.Sprintf(`settings:
  coldplug: false
  state_dir: %[1]s/state
  mount_root: %[1]s/media
  control: {socket: %[1]s/control}
rules:
  - name: as-nobody
    match: %[2]s
    actions:
      - mount: {}
      - run: {argv: ["/bin/sh", "-c", "id -u > \"$0\"/uid", %[3]q]}
  - name: run-as-nobody
    match: %[2]s
    actions:
      - run: {argv: ["/bin/sh", "-c", "id -u > \"$0\"/uid", %[3]q]}
`, dir, jsonString(loMatch(tag)), out)
	rulesPath := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesPath, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}

	var stderr lockedBuffer
	cmd := exec.Command(hp, "run", "--config", rulesPath)
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	// The daemon is ready once it logs that it runs.
	eventually(t, waitAction, func() bool { return strings.Contains(stderr.String(), "hotplugd running") },
		"the daemon did not start as nobody: %s", &stderr)
	trigger(t, loUevent, newUUID(), tag)
	got := waitFile(t, filepath.Join(out, "uid"), waitAction, func(s string) bool { return s != "" })
	if got != "65534\n" {
		t.Errorf("the action ran as uid %q, want 65534", got)
	}
	time.Sleep(100 * time.Millisecond)
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	log := stderr.String()
	for _, want := range []string{
		`msg="mounting is disabled" err="hotplugd runs as uid 65534, and mounting needs root"`,
		`msg="action failed" rule=as-nobody action=mount`,
		`mounting is not available: hotplugd runs as uid 65534, and mounting needs root`,
		`later actions of the rule not run" rule=as-nobody`,
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "media")); !os.IsNotExist(err) {
		t.Errorf("mount root created as nobody: %v", err)
	}
}

// lockedBuffer is a bytes.Buffer the command's copier writes while the
// test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
