package route

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

var recapture = flag.Bool("capture", false, "rewrite testdata/*.nl from this machine's kernel (root; creates veth0 and veth1)")

// TestCapture records the messages of testdata from the kernel: each
// step's command, then every datagram that arrives within a moment, as
// testdata/STEP-N.nl. The decoding tests say what each one holds, so a
// new capture needs their expectations checked.
func TestCapture(t *testing.T) {
	if !*recapture {
		t.Skip("only with -capture")
	}
	// In a network namespace of its own, the dumps hold lo and the test's
	// links and nothing of the machine. The thread stays locked: it ends
	// with the test, and the commands run from it.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Fatalf("unshare CLONE_NEWNET: %v", err)
	}
	c, err := open(1<<20, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	ip := func(args ...string) { looptest.Run(t, "ip", args...) }
	steps := []struct {
		name string
		do   func()
	}{
		{"veth-add", func() { ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1") }},
		{"veth0-addrgenmode", func() { ip("link", "set", "veth0", "addrgenmode", "none") }},
		{"veth1-addrgenmode", func() { ip("link", "set", "veth1", "addrgenmode", "none") }},
		{"veth0-up", func() { ip("link", "set", "veth0", "up") }},
		{"veth1-up", func() { ip("link", "set", "veth1", "up") }},
		{"veth0-ipv4-add", func() { ip("addr", "add", "192.0.2.10/24", "dev", "veth0") }},
		{"veth0-ipv4-peer-add", func() { ip("addr", "add", "10.9.9.1", "peer", "10.9.9.2/32", "dev", "veth0") }},
		{"veth0-ipv6-add", func() { ip("addr", "add", "2001:db8::10/64", "dev", "veth0") }},
		{"veth0-ipv6-dad", func() { time.Sleep(2 * time.Second) }},
		{"veth0-ipv4-del", func() { ip("addr", "del", "192.0.2.10/24", "dev", "veth0") }},
		{"veth0-mtu", func() { ip("link", "set", "veth0", "mtu", "1400") }},
		{"dump-links", func() { c.send(dumpRequest(dumpLinks, 4242)) }},
		{"dump-addrs", func() { c.send(dumpRequest(dumpAddrs, 4243)) }},
		{"bridge-add", func() { ip("link", "add", "hpbr0", "type", "bridge") }},
		{"veth1-bridge-port", func() { ip("link", "set", "veth1", "master", "hpbr0") }},
		{"veth1-bridge-leave", func() { ip("link", "set", "veth1", "nomaster") }},
		{"veth1-down", func() { ip("link", "set", "veth1", "down") }},
		{"veth-del", func() { ip("link", "del", "veth0") }},
	}
	got := make(chan []byte)
	go func() { // reads from any thread: the socket belongs to the namespace

		for {
			b, _, err := c.receive()
			if errors.Is(err, errClosed) {
				close(got)
				return
			}
			got <- append([]byte(nil), b...)
		}
	}()
	for _, st := range steps {
		st.do()
		for n := 0; ; n++ {
			select {
			case b := <-got:
				p := filepath.Join("testdata", fmt.Sprintf("%s-%d.nl", st.name, n))
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			case <-time.After(300 * time.Millisecond):
			}
			break
		}
	}
}
