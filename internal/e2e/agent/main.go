//go:build e2e

// Command agent runs inside the guest of the real-machine suite and runs
// the test's shell commands there. It talks JSON lines over the
// virtio-serial port the harness names (see internal/e2e): one hello
// when it starts, then one response per request, answered concurrently.
//
// As PID 1 (the shell mode of the guest) it forks itself and only reaps
// orphans, like tini: os/exec must be the only one to wait for its own
// children. When the serving child ends, it powers the guest off.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// request and response are the wire format; internal/e2e has the same
// two types.
type request struct {
	ID      uint64        `json:"id"`
	Script  string        `json:"script"`
	Stdin   string        `json:"stdin,omitempty"`
	Timeout time.Duration `json:"timeout"`
}

type response struct {
	ID     uint64 `json:"id"`
	Hello  string `json:"hello,omitempty"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	Code   int    `json:"code"`
	Error  string `json:"error,omitempty"`
}

// outputMax bounds what one command may return; more is cut.
const outputMax = 4 << 20

func main() {
	port := flag.String("port", "hotplugd.e2e", "the virtio-serial port's `name`")
	mode := flag.String("mode", "shell", "what the guest runs: shell or systemd (sent in the hello)")
	serve := flag.Bool("serve", false, "serve (set by the PID 1 reaper for its child)")
	flag.Parse()
	if os.Getpid() == 1 && !*serve {
		reap(os.Args)
		return
	}
	if err := run(*port, *mode); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

// reap is PID 1: it starts the agent as its child and reaps every
// process that ends up its child, until the agent is gone.
func reap(args []string) {
	child, err := os.StartProcess("/proc/self/exe", append([]string{args[0], "-serve"}, args[1:]...),
		&os.ProcAttr{Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "agent: start:", err)
	} else {
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, 0, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || pid == child.Pid {
				fmt.Fprintf(os.Stderr, "agent: exited (%v, %v)\n", ws, err)
				break
			}
		}
	}
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

func run(portName, mode string) error {
	dev, err := findPort(portName, 30*time.Second)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var mu sync.Mutex
	enc := json.NewEncoder(f)
	send := func(r response) {
		mu.Lock()
		defer mu.Unlock()
		if err := enc.Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, "agent: write:", err)
		}
	}
	send(response{Hello: mode})
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var req request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			fmt.Fprintf(os.Stderr, "agent: bad request %q: %v\n", sc.Bytes(), err)
			continue
		}
		go func() { send(execute(req)) }()
	}
	return fmt.Errorf("reading %s: %v", dev, sc.Err())
}

// findPort waits for the virtio-serial port called name and returns its
// device node.
func findPort(name string, timeout time.Duration) (string, error) {
	for deadline := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		paths, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, p := range paths {
			b, err := os.ReadFile(p)
			if err == nil && strings.TrimSpace(string(b)) == name {
				return "/dev/" + filepath.Base(filepath.Dir(p)), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no virtio-serial port named %q after %v", name, timeout)
		}
	}
}

// execute runs one script with /bin/sh in its own process group, killed
// with the group at its deadline.
func execute(req request) response {
	if req.Timeout <= 0 {
		req.Timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), req.Timeout)
	defer cancel()
	var stdout, stderr limited
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", req.Script)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LC_ALL=C", "TERM=dumb"}
	cmd.Dir = "/"
	cmd.Stdin = strings.NewReader(req.Stdin)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// A background process that keeps our pipes open does not hold the
	// answer up for long.
	cmd.WaitDelay = 2 * time.Second
	err := cmd.Run()
	r := response{ID: req.ID, Stdout: stdout.String(), Stderr: stderr.String(), Code: cmd.ProcessState.ExitCode()}
	switch {
	case ctx.Err() != nil:
		r.Error = fmt.Sprintf("timed out after %v", req.Timeout)
	case err != nil && !errors.As(err, new(*exec.ExitError)) && !errors.Is(err, exec.ErrWaitDelay):
		r.Error = err.Error()
	}
	return r
}

// limited is a buffer that keeps the first outputMax bytes.
type limited struct {
	mu  sync.Mutex
	buf bytes.Buffer
	cut bool
}

func (l *limited) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if room := outputMax - l.buf.Len(); room < len(p) {
		l.buf.Write(p[:max(room, 0)])
		l.cut = true
		return len(p), nil
	}
	return l.buf.Write(p)
}

func (l *limited) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cut {
		return l.buf.String() + "\n[output cut]"
	}
	return l.buf.String()
}
