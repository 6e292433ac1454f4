//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// mode is what the guest runs once its root is mounted.
type mode string

const (
	// shellMode: the agent is PID 1 in a minimal system (proc, sys, dev,
	// run, tmp mounted; no udevd, no systemd).
	shellMode mode = "shell"
	// systemdMode: systemd is PID 1 and the agent one of its services.
	systemdMode mode = "systemd"
)

// Deadlines of the harness. TCG runs a guest ten or more times slower
// than the hardware.
const (
	bootTimeout    = 3 * time.Minute // until the agent says hello
	commandTimeout = 2 * time.Minute // one command in the guest, unless it says otherwise
	connectTimeout = 30 * time.Second
)

// guest is one running QEMU guest. Its work directory is in the host's
// root, which the guest mounts under its overlay, so the guest sees the
// files the test put there before the boot at the same paths (files
// changed later may not show through the overlay). Not under /tmp:
// systemd mounts a tmpfs there.
type guest struct {
	mode    mode
	dir     string // the work directory
	bin     string // hotplugd, as the guest sees it
	deb     string // the .deb, when one was given
	console string // the serial console's log file

	qemu   *exec.Cmd
	exited chan struct{} // closed when QEMU has exited
	qmp    *qmp
	agent  *agentConn
}

// bootGuest builds what the guest needs, boots it and waits for its
// agent. Everything is undone when the test ends: QEMU is stopped, the
// work directory (images, sockets, logs) removed. When the test failed,
// the end of the console log and the guest's kernel log are shown.
func bootGuest(t *testing.T, m mode) *guest {
	t.Helper()
	h := findHost(t, m)
	dir, err := os.MkdirTemp("/var/tmp", "hotplugd-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	g := &guest{mode: m, dir: dir, console: filepath.Join(dir, "console.log"), exited: make(chan struct{})}
	t.Cleanup(func() {
		if os.Getenv("HOTPLUGD_E2E_KEEP") != "" {
			t.Logf("work directory kept: %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	g.bin = filepath.Join(dir, "hotplugd")
	h.buildBinaries(t, dir)
	if h.deb != "" {
		g.deb = filepath.Join(dir, filepath.Base(h.deb))
		copyFile(t, h.deb, g.deb)
	}
	stage2 := filepath.Join(dir, "stage2.sh")
	writeFile(t, stage2, stage2Script(m, dir), 0o755)
	initrd := filepath.Join(dir, "initramfs.cpio")
	ir := initramfs{kernelRelease: h.release, modulesDir: h.modules, busybox: h.busybox, stage2: stage2}
	if err := ir.write(initrd); err != nil {
		t.Fatalf("initramfs: %v", err)
	}
	g.start(t, h, initrd)
	return g
}

// host is what this machine offers the suite.
type host struct {
	qemu    string
	kernel  string // /boot/vmlinuz-<release>
	release string
	modules string // /lib/modules/<release>
	busybox string
	deb     string // HOTPLUGD_E2E_DEB, for the systemd scenarios
}

// imageTools make the sticks' images (Debian: util-linux, fdisk,
// dosfstools, exfatprogs, e2fsprogs, btrfs-progs, xfsprogs, ntfs-3g,
// udftools).
var imageTools = []string{"sfdisk", "losetup", "partx", "mkfs.vfat", "mkfs.exfat", "mkfs.ext4",
	"mkfs.btrfs", "mkfs.xfs", "mkntfs", "mkudffs"}

// findHost checks the prerequisites: root, QEMU, a kernel with its
// modules, a static busybox, the tools that make the images, and for
// the systemd mode the .deb.
func findHost(t *testing.T, m mode) host {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (loop devices for the images, QEMU's 9p export of /)")
	}
	h := host{qemu: looptest.ToolPath("qemu-system-x86_64"), busybox: looptest.ToolPath("busybox")}
	if h.qemu == "" {
		missing = append(missing, "qemu-system-x86_64 (Debian: qemu-system-x86)")
	}
	h.kernel, h.release = findKernel()
	if h.kernel == "" {
		missing = append(missing, "a kernel in /boot/vmlinuz-* with its /lib/modules (Debian: linux-image-amd64)")
	}
	h.modules = filepath.Join("/lib/modules", h.release)
	if h.busybox == "" || !isStatic(h.busybox) {
		missing = append(missing, "a static busybox (Debian: busybox-static)")
	}
	for _, tool := range imageTools {
		if looptest.ToolPath(tool) == "" {
			missing = append(missing, tool)
		}
	}
	if looptest.ToolPath("xorriso") == "" && looptest.ToolPath("genisoimage") == "" {
		missing = append(missing, "xorriso or genisoimage")
	}
	if m == systemdMode {
		h.deb = os.Getenv("HOTPLUGD_E2E_DEB")
		if h.deb == "" {
			missing = append(missing, "HOTPLUGD_E2E_DEB, the .deb to install in the guest (make e2e builds it)")
		} else if _, err := os.Stat(h.deb); err != nil {
			missing = append(missing, err.Error())
		}
	}
	looptest.Need(t, len(missing) == 0, strings.Join(missing, "; "))
	return h
}

// findKernel returns the newest /boot/vmlinuz-* whose modules are
// installed, or HOTPLUGD_E2E_KERNEL.
func findKernel() (path, release string) {
	cands, _ := filepath.Glob("/boot/vmlinuz-*")
	if k := os.Getenv("HOTPLUGD_E2E_KERNEL"); k != "" {
		cands = []string{k}
	}
	slices.Reverse(cands) // newest last in lexical order is good enough for one Debian series
	for _, k := range cands {
		rel := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		if _, err := os.Stat(filepath.Join("/lib/modules", rel, "modules.dep")); err == nil {
			return k, rel
		}
	}
	return "", ""
}

// isStatic reports whether an ELF executable has no interpreter.
func isStatic(file string) bool {
	f, err := elf.Open(file)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// buildBinaries puts into dir the hotplugd under test (HOTPLUGD_E2E_BIN,
// else built from this tree) and the guest agent, both static.
func (h host) buildBinaries(t *testing.T, dir string) {
	t.Helper()
	root := moduleRoot(t)
	if bin := os.Getenv("HOTPLUGD_E2E_BIN"); bin != "" {
		if !isStatic(bin) {
			t.Fatalf("HOTPLUGD_E2E_BIN=%s is not a static binary (build it with CGO_ENABLED=0)", bin)
		}
		copyFile(t, bin, filepath.Join(dir, "hotplugd"))
	} else {
		goBuild(t, root, filepath.Join(dir, "hotplugd"), "./cmd/hotplugd")
	}
	goBuild(t, root, filepath.Join(dir, "agent"), "-tags", "e2e", "./internal/e2e/agent")
}

func goBuild(t *testing.T, root, out string, args ...string) {
	t.Helper()
	cmd := exec.Command("go", append([]string{"build", "-trimpath", "-o", out}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %v: %v\n%s", args, err, b)
	}
}

func moduleRoot(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMOD").Output()
	mod := strings.TrimSpace(string(out))
	if err != nil || mod == "" || mod == os.DevNull {
		t.Fatalf("not inside the hotplugd module (go env GOMOD: %q, %v)", mod, err)
	}
	return filepath.Dir(mod)
}

// stage2Script is what the initramfs runs as PID 1 in the overlay.
func stage2Script(m mode, dir string) string {
	agent := shq(filepath.Join(dir, "agent"))
	common := `set -eu
echo "hotplugd-e2e: stage 2 (` + string(m) + `)"
# The driver of the agent's port, and of the USB bus: what an initramfs
# loads for the machine's own hardware. USB devices' drivers are loaded
# by whatever handles their events (udevd, or a rule in shell mode).
/sbin/modprobe -a virtio_console xhci_pci
`
	if m == shellMode {
		return common + `mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=0620 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
# What kmod static-nodes does for systemd: opening them loads fuse and
# device-mapper.
[ -e /dev/fuse ] || mknod -m 0666 /dev/fuse c 10 229
mkdir -p /dev/mapper
[ -e /dev/mapper/control ] || mknod -m 0600 /dev/mapper/control c 10 236
mkdir -p /run/e2e
hostname hotplugd-e2e
exec ` + agent + ` -mode shell
`
	}
	return common + `# The host's fstab describes the host; its policy-rc.d (a container's)
# would keep the package scripts from starting services.
: > /etc/fstab
rm -f /usr/sbin/policy-rc.d
# A target of its own: sysinit (udevd, journald, tmpfiles) and sockets,
# without the host's enabled services and timers. Gettys would hang up
# the serial console the test reads.
for u in serial-getty@ttyS0.service getty@tty1.service console-getty.service; do
	ln -sf /dev/null /etc/systemd/system/$u
done
cat > /etc/systemd/system/hotplugd-e2e.target <<'EOF'
[Unit]
Description=hotplugd real-machine suite
Requires=sysinit.target sockets.target
After=sysinit.target sockets.target
AllowIsolate=yes
EOF
cat > /etc/systemd/system/hotplugd-e2e-agent.service <<EOF
[Unit]
Description=hotplugd real-machine suite: agent
DefaultDependencies=no
[Service]
ExecStart=` + agent + ` -mode systemd
EOF
mkdir -p /etc/systemd/system/sysinit.target.wants
ln -sf ../hotplugd-e2e-agent.service /etc/systemd/system/sysinit.target.wants/
ln -sf /etc/systemd/system/hotplugd-e2e.target /etc/systemd/system/default.target
exec /lib/systemd/systemd
`
}

// start runs QEMU and connects to its monitor and to the agent.
func (g *guest) start(t *testing.T, h host, initrd string) {
	t.Helper()
	qmpL := listenUnix(t, filepath.Join(g.dir, "qmp.sock"))
	agentL := listenUnix(t, filepath.Join(g.dir, "agent.sock"))
	appendArgs := "console=ttyS0 panic=-1 loglevel=4 random.trust_cpu=on"
	if g.mode == systemdMode {
		appendArgs += " systemd.show_status=1"
	}
	args := []string{
		"-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
		"-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "2", "-m", "1536",
		"-kernel", h.kernel, "-initrd", initrd, "-append", appendArgs,
		"-chardev", "file,id=console,path=" + g.console, "-serial", "chardev:console",
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
		"-chardev", "socket,id=qmp,path=" + qmpL.Addr().String(), "-mon", "chardev=qmp,mode=control",
		"-device", "virtio-serial-pci",
		"-chardev", "socket,id=agent,path=" + agentL.Addr().String(),
		"-device", "virtserialport,chardev=agent,name=hotplugd.e2e",
		"-device", "qemu-xhci,id=xhci,p2=8,p3=8",
	}
	qlog, err := os.Create(filepath.Join(g.dir, "qemu.log"))
	if err != nil {
		t.Fatal(err)
	}
	g.qemu = exec.Command(h.qemu, args...)
	g.qemu.Stdout, g.qemu.Stderr = qlog, qlog
	if err := g.qemu.Start(); err != nil {
		qlog.Close()
		t.Fatalf("start %s: %v", h.qemu, err)
	}
	go func() {
		_ = g.qemu.Wait()
		qlog.Close()
		close(g.exited)
	}()
	t.Cleanup(func() { g.stop(t) })

	qc := g.accept(t, qmpL, "QMP")
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	if g.qmp, err = newQMP(ctx, qc); err != nil {
		t.Fatalf("%v%s", err, g.diagnostics())
	}
	g.agent = newAgentConn(g.accept(t, agentL, "the agent's port"))
	start := time.Now()
	select {
	case hello := <-g.agent.hello:
		t.Logf("guest (%s) up in %v", hello, time.Since(start).Round(100*time.Millisecond))
	case <-g.agent.done:
		t.Fatalf("the agent's port closed before the agent said hello: %v%s", g.agent.err, g.diagnostics())
	case <-g.exited:
		t.Fatalf("QEMU exited during boot (%v)%s", g.qemu.ProcessState, g.diagnostics())
	case <-time.After(bootTimeout):
		t.Fatalf("no hello from the guest's agent within %v%s", bootTimeout, g.diagnostics())
	}
}

func listenUnix(t *testing.T, path string) *net.UnixListener {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// accept takes QEMU's connection to one of the sockets it was told to
// connect to.
func (g *guest) accept(t *testing.T, l *net.UnixListener, what string) net.Conn {
	t.Helper()
	_ = l.SetDeadline(time.Now().Add(connectTimeout))
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("QEMU did not connect to %s: %v%s", what, err, g.diagnostics())
	}
	return c
}

// stop ends QEMU: quit through the monitor, then SIGKILL.
func (g *guest) stop(t *testing.T) {
	if t.Failed() {
		t.Logf("guest diagnostics:%s", g.diagnostics())
	}
	if g.qmp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = g.qmp.do(ctx, "quit", nil)
		cancel()
	}
	select {
	case <-g.exited:
	case <-time.After(5 * time.Second):
		_ = g.qemu.Process.Kill()
		<-g.exited
	}
	if g.qmp != nil {
		g.qmp.close()
	}
	if g.agent != nil {
		g.agent.conn.Close()
	}
}

// diagnostics is what helps understand a failure: the end of the kernel
// log (from the agent, while it answers) and of the serial console and
// QEMU's own output.
func (g *guest) diagnostics() string {
	var b strings.Builder
	if g.agent != nil && g.agent.alive() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		r, err := g.agent.run(ctx, "dmesg | tail -n 80", "", 15*time.Second)
		cancel()
		if err == nil {
			fmt.Fprintf(&b, "\n--- guest dmesg (end)\n%s", r.Stdout)
		}
	}
	fmt.Fprintf(&b, "\n--- serial console (end)\n%s", tail(g.console, 60))
	fmt.Fprintf(&b, "\n--- qemu (end)\n%s", tail(filepath.Join(g.dir, "qemu.log"), 20))
	return b.String()
}

// tail returns the last n lines of a file.
func tail(file string, n int) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// agentRequest and agentResponse are the agent's wire format (see
// internal/e2e/agent).
type agentRequest struct {
	ID      uint64        `json:"id"`
	Script  string        `json:"script"`
	Stdin   string        `json:"stdin,omitempty"`
	Timeout time.Duration `json:"timeout"`
}

type agentResponse struct {
	ID     uint64 `json:"id"`
	Hello  string `json:"hello,omitempty"`
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	Code   int    `json:"code"`
	Error  string `json:"error,omitempty"`
}

// agentConn is the host's end of the agent's port.
type agentConn struct {
	conn  net.Conn
	hello chan string   // the agent's hellos (one per start of the agent)
	done  chan struct{} // closed when the connection ends

	wmu sync.Mutex
	enc *json.Encoder

	mu      sync.Mutex
	next    uint64
	pending map[uint64]chan agentResponse
	err     error
}

func newAgentConn(c net.Conn) *agentConn {
	a := &agentConn{conn: c, hello: make(chan string, 8), done: make(chan struct{}), enc: json.NewEncoder(c),
		pending: map[uint64]chan agentResponse{}}
	go a.read()
	return a
}

func (a *agentConn) read() {
	sc := bufio.NewScanner(a.conn)
	sc.Buffer(make([]byte, 64<<10), 32<<20)
	for sc.Scan() {
		var r agentResponse
		// The port carries nothing but the agent's lines, but a guest
		// that writes to it before the agent runs is not fatal.
		if err := json.Unmarshal(bytes.TrimSpace(sc.Bytes()), &r); err != nil {
			continue
		}
		if r.Hello != "" {
			select {
			case a.hello <- r.Hello:
			default:
			}
			continue
		}
		a.mu.Lock()
		if c := a.pending[r.ID]; c != nil {
			c <- r
			delete(a.pending, r.ID)
		}
		a.mu.Unlock()
	}
	a.mu.Lock()
	a.err = sc.Err()
	if a.err == nil {
		a.err = io.EOF
	}
	a.mu.Unlock()
	close(a.done)
}

func (a *agentConn) alive() bool {
	select {
	case <-a.done:
		return false
	default:
		return true
	}
}

// run runs script with /bin/sh in the guest; the guest kills it after
// timeout, and run gives up a little later or when ctx ends.
func (a *agentConn) run(ctx context.Context, script, stdin string, timeout time.Duration) (agentResponse, error) {
	a.mu.Lock()
	a.next++
	id := a.next
	c := make(chan agentResponse, 1)
	a.pending[id] = c
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.pending, id)
		a.mu.Unlock()
	}()
	a.wmu.Lock()
	err := a.enc.Encode(agentRequest{ID: id, Script: script, Stdin: stdin, Timeout: timeout})
	a.wmu.Unlock()
	if err != nil {
		return agentResponse{}, fmt.Errorf("agent: %w", err)
	}
	grace := time.NewTimer(timeout + 15*time.Second)
	defer grace.Stop()
	select {
	case r := <-c:
		if r.Error != "" {
			return r, errors.New(r.Error)
		}
		return r, nil
	case <-a.done:
		return agentResponse{}, fmt.Errorf("agent: connection ended: %v", a.err)
	case <-grace.C:
		return agentResponse{}, fmt.Errorf("agent: no answer within %v", timeout+15*time.Second)
	case <-ctx.Done():
		return agentResponse{}, ctx.Err()
	}
}

// result is what a command in the guest did.
type result struct {
	script         string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("$ %s\nexit status %d\n--- stdout\n%s--- stderr\n%s", r.script, r.code, r.stdout, r.stderr)
}

// try runs a script in the guest and returns what it did; only a guest
// that does not answer fails the test.
func (g *guest) try(t testing.TB, script string) result {
	t.Helper()
	return g.tryStdin(t, script, "", commandTimeout)
}

func (g *guest) tryStdin(t testing.TB, script, stdin string, timeout time.Duration) result {
	t.Helper()
	r, err := g.agent.run(context.Background(), script, stdin, timeout)
	res := result{script: script, stdout: r.Stdout, stderr: r.Stderr, code: r.Code}
	if err != nil {
		t.Fatalf("guest: %v\n%s", err, res)
	}
	return res
}

// sh runs a script in the guest, fails the test unless it exits 0, and
// returns its standard output.
func (g *guest) sh(t testing.TB, script string) string {
	t.Helper()
	r := g.try(t, script)
	if r.code != 0 {
		t.Fatalf("in the guest:\n%s", r)
	}
	return r.stdout
}

// writeGuestFile writes a file in the guest.
func (g *guest) writeGuestFile(t testing.TB, path, content string, perm os.FileMode) {
	t.Helper()
	r := g.tryStdin(t, fmt.Sprintf("mkdir -p %s && cat > %s && chmod %o %s", shq(filepath.Dir(path)), shq(path), perm, shq(path)),
		content, commandTimeout)
	if r.code != 0 {
		t.Fatalf("in the guest:\n%s", r)
	}
}

// waitFor runs script in the guest every 250ms until it exits 0 and
// returns its last result and whether it did before timeout.
func (g *guest) waitFor(t testing.TB, timeout time.Duration, script string) (result, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		r := g.try(t, script)
		if r.code == 0 {
			return r, true
		}
		if time.Now().After(deadline) {
			return r, false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// eventually is waitFor that fails the test on timeout.
func (g *guest) eventually(t testing.TB, timeout time.Duration, what, script string) string {
	t.Helper()
	r, ok := g.waitFor(t, timeout, script)
	if !ok {
		t.Fatalf("timed out after %v waiting for %s; last try:\n%s", timeout, what, r)
	}
	return r.stdout
}

// shq quotes s for the shell.
func shq(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func writeFile(t testing.TB, path, content string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), perm); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, dst, string(b), 0o755)
}
