package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/nettest"
)

// lockedBuffer is a bytes.Buffer written by one goroutine and read by
// another.
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

// TestMonitorRoute runs `hotplugd monitor --source route`, human and
// --json, while one end of a veth pair goes up and down.
func TestMonitorRoute(t *testing.T) {
	p := nettest.Veth(t)
	devpath := "/devices/virtual/net/" + p.A
	for _, asJSON := range []bool{false, true} {
		name := "human"
		if asJSON {
			name = "json"
		}
		t.Run(name, func(t *testing.T) {
			args := []string{"monitor", "--source", "route", "--subsystem", "net"}
			if asJSON {
				args = append(args, "--json")
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			pr, pw := io.Pipe()
			var stderr lockedBuffer
			done := make(chan error, 1)
			go func() { done <- run(ctx, args, pw, &stderr); pw.Close() }()
			out := lines(pr)
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(stderr.String(), "hotplugd monitor: listening to route events") {
				if time.Now().After(deadline) {
					t.Fatalf("no listening line; stderr:\n%s", stderr.String())
				}
				time.Sleep(5 * time.Millisecond)
			}

			nettest.IP(t, "link", "set", p.A, "up")
			if asJSON {
				checkRouteJSON(t, out, "link-up", p.A, devpath)
			} else {
				header := regexp.MustCompile(`^ROUTE \[\d+\.\d{6}\] link-up  ` + regexp.QuoteMeta(devpath) + ` \(net\)$`)
				waitLine(t, out, "the link-up header", header.MatchString)
				waitLine(t, out, "INTERFACE", func(l string) bool { return l == "INTERFACE="+p.A })
			}
			nettest.IP(t, "link", "set", p.A, "down")
			if asJSON {
				checkRouteJSON(t, out, "link-down", p.A, devpath)
			} else {
				waitLine(t, out, "ACTION=link-down", func(l string) bool { return l == "ACTION=link-down" })
			}
			cancel()
			go func() {
				for range out { // drain, so the monitor's last writes do not block
				}
			}()
			if err := <-done; err != nil {
				t.Fatalf("monitor: %v", err)
			}
			summary := regexp.MustCompile(`(?m)^hotplugd monitor: received=\d+ accepted=\d+ events=[1-9]\d* printed=[1-9]\d* dropped_truncated=0 dropped_sender=0 dropped_creds=0 dropped_parse=0 overruns=0 dumps=1$`)
			if !summary.MatchString(stderr.String()) {
				t.Errorf("no summary line like %s on stderr:\n%s", summary, stderr.String())
			}
		})
	}
}

// checkRouteJSON waits for the JSON event action of iface.
func checkRouteJSON(t *testing.T, out <-chan string, action, iface, devpath string) {
	t.Helper()
	var got struct {
		Action, DevPath, Subsystem, DevName, DevNode, Source string
		Env                                                  map[string]string
	}
	waitLine(t, out, action+" of "+iface, func(l string) bool {
		got.Env = nil
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Fatalf("stdout line %q is not JSON: %v", l, err)
		}
		return got.Action == action && got.DevName == iface
	})
	if got.DevPath != devpath || got.Subsystem != "net" || got.DevNode != "" || got.Source != "route" ||
		got.Env["INTERFACE"] != iface || got.Env["IFINDEX"] == "" || got.Env["OPERSTATE"] == "" {
		t.Errorf("%+v: want devpath %s, subsystem net, no devnode, source route, and the link's properties", got, devpath)
	}
}
