// Package mqtttest runs what the broker tests talk to: a real Debian
// mosquitto on 127.0.0.1 on a free port, started and stopped by the test
// (again on the same port, for outages), a test CA made with openssl,
// and a subscriber on paho.golang that sees MQTT 5 properties.
package mqtttest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// need fails the test (CI=true) or skips it when a tool is missing.
func need(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing: %s", what)
	}
	t.Skipf("prerequisite missing: %s", what)
}

func tool(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p
		}
	}
	return ""
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// Options shape a Broker.
type Options struct {
	// TLS makes the listener mqtts, with a server certificate of CA for
	// 127.0.0.1.
	TLS *CA
	// Persist keeps retained messages and sessions across Stop and
	// Restart (mosquitto's persistence, saved when it stops), so a
	// subscriber's session (DialSession) collects what is published
	// while it is away.
	Persist bool
}

// Broker is one mosquitto of a test.
type Broker struct {
	t    testing.TB
	Port int
	TLS  bool
	dir  string
	conf string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

// Start runs mosquitto on a free port of 127.0.0.1, without persistence,
// and stops it when the test ends.
func Start(t testing.TB, opts Options) *Broker {
	t.Helper()
	bin := tool("mosquitto")
	need(t, bin != "", "mosquitto (Debian package mosquitto)")
	b := &Broker{t: t, dir: t.TempDir(), Port: freePort(t), TLS: opts.TLS != nil}
	var conf strings.Builder
	fmt.Fprintf(&conf, "listener %d 127.0.0.1\nallow_anonymous true\n", b.Port)
	if opts.Persist {
		fmt.Fprintf(&conf, "persistence true\npersistence_location %s/\n", b.dir)
	} else {
		conf.WriteString("persistence false\n")
	}
	// The test's files are root's, mode 0700: mosquitto must not drop
	// to its own user before reading them.
	if os.Geteuid() == 0 {
		conf.WriteString("user root\n")
	}
	conf.WriteString("set_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nmax_queued_messages 100000\n")
	if opts.TLS != nil {
		cert, key := opts.TLS.Issue(t, "broker")
		fmt.Fprintf(&conf, "cafile %s\ncertfile %s\nkeyfile %s\n", opts.TLS.CertFile, cert, key)
	}
	b.conf = filepath.Join(b.dir, "mosquitto.conf")
	if err := os.WriteFile(b.conf, []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	b.Restart()
	t.Cleanup(func() {
		b.Stop()
		if t.Failed() {
			b.mu.Lock()
			t.Logf("mosquitto log:\n%s", b.log)
			b.mu.Unlock()
		}
	})
	return b
}

// freePort returns a TCP port of 127.0.0.1 nothing listens on now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// URL is the broker's URL for settings.mqtt.url.
func (b *Broker) URL() string {
	scheme := "mqtt"
	if b.TLS {
		scheme = "mqtts"
	}
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, b.Port)
}

// Addr is host:port.
func (b *Broker) Addr() string { return fmt.Sprintf("127.0.0.1:%d", b.Port) }

// Restart starts mosquitto (again, after Stop) and waits until it
// accepts connections.
func (b *Broker) Restart() {
	b.t.Helper()
	b.mu.Lock()
	if b.cmd != nil {
		b.mu.Unlock()
		b.t.Fatal("mqtttest: broker already running")
	}
	if b.log == nil {
		b.log = new(bytes.Buffer)
	}
	cmd := exec.Command(tool("mosquitto"), "-c", b.conf)
	cmd.Stdout, cmd.Stderr = lockedWriter{&b.mu, b.log}, lockedWriter{&b.mu, b.log}
	if err := cmd.Start(); err != nil {
		b.mu.Unlock()
		b.t.Fatalf("mosquitto: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	b.cmd, b.done = cmd, done
	b.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", b.Addr(), time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-done:
			b.t.Fatalf("mosquitto exited: %s", b.logText())
		default:
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("mosquitto does not listen on %s: %s", b.Addr(), b.logText())
		}
	}
}

// Stop stops mosquitto (SIGTERM; SIGKILL after 5s) and waits for it.
func (b *Broker) Stop() {
	b.mu.Lock()
	cmd, done := b.cmd, b.done
	b.cmd = nil
	b.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func (b *Broker) logText() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.log.String()
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}
