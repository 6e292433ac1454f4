package broker

// Tests against a real mosquitto (Debian's), started by the test on
// 127.0.0.1 on a free port and stopped by it.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/control"
	"github.com/hotplugd/hotplugd/internal/logtest"
	"github.com/hotplugd/hotplugd/internal/mqtttest"
	"github.com/hotplugd/hotplugd/internal/rules"
)

// fakeHandlers answers commands as the daemon would, recording what
// was asked.
type fakeHandlers struct {
	mu     sync.Mutex
	ejects []control.EjectRequest
}

func (h *fakeHandlers) Status() control.Status {
	return control.Status{Version: "test", LastError: "none"}
}
func (h *fakeHandlers) Eject(_ context.Context, req control.EjectRequest) control.EjectResult {
	h.mu.Lock()
	h.ejects = append(h.ejects, req)
	h.mu.Unlock()
	return control.EjectResult{Targets: []control.EjectTarget{{Target: req.Targets[0], Unmounted: []control.MountStatus{}}}}
}
func (h *fakeHandlers) Reload() control.ReloadResult { return control.ReloadResult{OK: true, Rules: 3} }
func (h *fakeHandlers) Trigger(_ context.Context, req control.TriggerRequest) control.TriggerResult {
	return control.TriggerResult{Action: req.Action, Triggered: 1}
}
func (h *fakeHandlers) Settle(context.Context, time.Duration) control.SettleResult {
	return control.SettleResult{Settled: true}
}
func (h *fakeHandlers) WriteMetrics(io.Writer) error { return nil }

func testSettings(t *testing.T, brokerURL string) *rules.MQTTSettings {
	t.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		t.Fatal(err)
	}
	return &rules.MQTTSettings{URL: u, Host: "h1", ClientID: "hotplugd-h1-" + strings.ReplaceAll(t.Name(), "/", "-"),
		Prefix: "hotplugd/v1", QoS: 1, Events: "all", QueueDir: filepath.Join(t.TempDir(), "q"), QueueMax: 10000,
		Commands: true}
}

// startClient starts a Client on s and closes it when the test ends.
func startClient(t *testing.T, s *rules.MQTTSettings) *Client {
	t.Helper()
	log, _ := logtest.New(t)
	c, err := New(Config{Settings: s, Version: "test", BootID: "b00t", Since: time.Now(), Handlers: &fakeHandlers{},
		Log: log, backoff: func(int) time.Duration { return 100 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func waitConnected(t *testing.T, c *Client, want bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); c.connected.Load() != want; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("connected is not %v after 20s; last error %q", want, c.Status().LastError)
		}
	}
}

const statusTopic = "hotplugd/v1/h1/status"

func TestEventsReachTheBroker(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	sub := mqtttest.Dial(t, b, nil)
	sub.Subscribe("hotplugd/v1/h1/#")
	c := startClient(t, testSettings(t, b.URL()))
	m := sub.Expect(statusTopic, 10*time.Second)
	var st struct{ State, Version, BootID string }
	if err := json.Unmarshal(m.Payload, &st); err != nil || st.State != "online" || st.Version != "test" {
		t.Errorf("status %s (%v)", m.Payload, err)
	}
	c.Event(testEvent(t, 7, "tag"), []*rules.Rule{{Name: "r"}})
	m = sub.Expect("hotplugd/v1/h1/events/net/change", 10*time.Second)
	if m.Properties == nil || m.Properties.ContentType != cloudEventType || m.QoS != 1 {
		t.Errorf("properties %+v, QoS %d", m.Properties, m.QoS)
	}
	var d ceDoc
	if err := json.Unmarshal(m.Payload, &d); err != nil || d.ID != "b00t-7" || d.Data.Env["SYNTH_ARG_T"] != "tag" {
		t.Errorf("document %s (%v)", m.Payload, err)
	}
	c.Mounts([]control.MountStatus{{Devnode: "/dev/sdb1", Path: "/media/STICK"}})
	c.Mounts([]control.MountStatus{{Devnode: "/dev/sdb1", Path: "/media/STICK"}}) // the same: not again
	c.Mounts(nil)
	// The connection's own republication of the mounts may come first.
	for _, want := range []string{"/media/STICK", `{"mounts":[]}`} {
		for m := sub.Expect("hotplugd/v1/h1/mounts", 10*time.Second); !bytes.Contains(m.Payload, []byte(want)); {
			m = sub.Expect("hotplugd/v1/h1/mounts", 10*time.Second)
		}
	}
	c.PublishNotify("my.rule", []byte(`{"message":"hi"}`))
	if m := sub.Expect("hotplugd/v1/h1/notify/my.rule", 10*time.Second); string(m.Payload) != `{"message":"hi"}` {
		t.Errorf("notify %s", m.Payload)
	}
	// A subscriber that comes later finds the retained status and mounts.
	late := mqtttest.Dial(t, b, nil)
	late.Subscribe("hotplugd/v1/h1/+")
	got := map[string]string{}
	for range 2 {
		if m := late.Next(5 * time.Second); m != nil && m.Retain {
			got[m.Topic] = string(m.Payload)
		}
	}
	if !strings.Contains(got[statusTopic], "online") || got["hotplugd/v1/h1/mounts"] != `{"mounts":[]}` {
		t.Errorf("retained %v", got)
	}
}

// expectEvents reads n event documents and checks their seqnums are
// first, first+1, ...: all, in order, none twice.
func expectEvents(t *testing.T, sub *mqtttest.Client, first, n int) {
	t.Helper()
	for i := range n {
		m := sub.Expect("hotplugd/v1/h1/events/net/change", 30*time.Second)
		var d ceDoc
		if err := json.Unmarshal(m.Payload, &d); err != nil {
			t.Fatal(err)
		}
		if want := uint64(first + i); d.Data.Seqnum != want {
			t.Fatalf("event %d of %d: seqnum %d, want %d", i, n, d.Data.Seqnum, want)
		}
	}
	sub.Quiet("hotplugd/v1/h1/events/", 300*time.Millisecond)
}

// TestOutage: what is handed over while the broker is down arrives, in
// order, once it is back; with a smaller queue_max the newest do and
// the rest are counted as dropped.
func TestOutage(t *testing.T) {
	for _, tt := range []struct {
		max, arrive int
	}{{10000, 1000}, {100, 100}} {
		t.Run("max-"+strconv.Itoa(tt.max), func(t *testing.T) {
			b := mqtttest.Start(t, mqtttest.Options{Persist: true})
			mqtttest.DialSession(t, b, nil, "fleet").Subscribe("hotplugd/v1/h1/events/#")
			s := testSettings(t, b.URL())
			s.QueueMax = tt.max
			c := startClient(t, s)
			waitConnected(t, c, true)
			b.Stop()
			waitConnected(t, c, false)
			for i := range 1000 {
				c.Event(testEvent(t, uint64(1+i), "o"), nil)
			}
			b.Restart()
			sub := mqtttest.DialSession(t, b, nil, "fleet")
			expectEvents(t, sub, 1+1000-tt.arrive, tt.arrive)
			if st := c.Stats(); st.Dropped["queue_full"] != uint64(1000-tt.arrive) || st.Queue != 0 {
				t.Errorf("stats %+v, want %d dropped", st, 1000-tt.arrive)
			}
		})
	}
}

// TestRestartDuringOutage: what one client queued on disk while the
// broker was down, the next client on the same queue_dir delivers.
func TestRestartDuringOutage(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{Persist: true})
	mqtttest.DialSession(t, b, nil, "fleet").Subscribe("hotplugd/v1/h1/events/#")
	s := testSettings(t, b.URL())
	b.Stop()
	c := startClient(t, s)
	for i := range 50 {
		c.Event(testEvent(t, uint64(1+i), "r"), nil)
	}
	c.Close(context.Background())
	if n := c.Stats().Queue; n != 50 {
		t.Fatalf("queued after close: %d, want 50", n)
	}
	b.Restart()
	sub := mqtttest.DialSession(t, b, nil, "fleet")
	c2 := startClient(t, s)
	expectEvents(t, sub, 1, 50)
	if st := c2.Stats(); st.Published != 50 || st.Queue != 0 {
		t.Errorf("second client: %+v", st)
	}
}

// TestPresence: the retained status is online while connected; a lost
// connection leaves the Last Will's offline; an orderly close leaves
// offline too.
func TestPresence(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	sub := mqtttest.Dial(t, b, nil)
	sub.Subscribe(statusTopic)
	c := startClient(t, testSettings(t, b.URL()))
	state := func() string {
		t.Helper()
		var st struct{ State string }
		m := sub.Expect(statusTopic, 20*time.Second)
		if err := json.Unmarshal(m.Payload, &st); err != nil {
			t.Fatal(err)
		}
		return st.State
	}
	if got := state(); got != "online" {
		t.Fatalf("status %q, want online", got)
	}
	c.cm.TerminateConnectionForTest() // as a dead network or process would
	for _, want := range []string{"offline", "online"} {
		if got := state(); got != want {
			t.Fatalf("status %q, want %q", got, want)
		}
	}
	c.Close(context.Background())
	if got := state(); got != "offline" {
		t.Errorf("after Close: %q", got)
	}
}

// TestCommands: requests on P/cmd/<verb> are answered on their response
// topic with their correlation data, with the handlers' JSON, or an
// error for a request that is too large, malformed or unknown.
func TestCommands(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	c := startClient(t, testSettings(t, b.URL()))
	waitConnected(t, c, true)
	admin := mqtttest.Dial(t, b, nil)
	admin.Subscribe("hotplugd/v1/h1/reply/#")
	time.Sleep(200 * time.Millisecond) // the client's subscription follows its connection
	ask := func(verb string, payload []byte) map[string]any {
		t.Helper()
		corr := []byte("corr-" + verb)
		admin.Request("hotplugd/v1/h1/cmd/"+verb, "hotplugd/v1/h1/reply/admin", corr, payload)
		m := admin.Expect("hotplugd/v1/h1/reply/admin", 10*time.Second)
		if m.Properties == nil || !bytes.Equal(m.Properties.CorrelationData, corr) {
			t.Fatalf("%s: reply without its correlation data: %+v", verb, m.Properties)
		}
		var out map[string]any
		if err := json.Unmarshal(m.Payload, &out); err != nil {
			t.Fatalf("%s: reply %q: %v", verb, m.Payload, err)
		}
		return out
	}
	if r := ask("status", nil); r["version"] != "test" || r["last_error"] != "none" {
		t.Errorf("status: %v", r)
	}
	if r := ask("reload", []byte("{}")); r["ok"] != true {
		t.Errorf("reload: %v", r)
	}
	if r := ask("eject", []byte(`{"targets":["/dev/sdb1"]}`)); r["targets"] == nil {
		t.Errorf("eject: %v", r)
	}
	if r := ask("trigger", []byte(`{"action":"change","subsystem":"net"}`)); r["triggered"] != 1.0 || r["action"] != "change" {
		t.Errorf("trigger: %v", r)
	}
	for verb, payload := range map[string][]byte{
		"status":  bytes.Repeat([]byte("x"), 10<<20),
		"eject":   []byte(`{"targets":`),
		"trigger": []byte(`{"action":"explode"}`),
		"format":  nil,
	} {
		if r := ask(verb, payload); r["error"] == nil || len(r) != 1 {
			t.Errorf("%s with %d bytes: %v, want an error", verb, len(payload), r)
		}
	}
	// A response topic of the host's own is not answered on.
	admin.Request("hotplugd/v1/h1/cmd/status", "hotplugd/v1/h1/status", []byte("x"), nil)
	admin.Quiet("hotplugd/v1/h1/", 300*time.Millisecond)
	// The client still publishes.
	c.Event(testEvent(t, 9, "after"), nil)
	sub := mqtttest.Dial(t, b, nil)
	sub.Subscribe("hotplugd/v1/h1/events/#")
	c.Event(testEvent(t, 10, "after"), nil)
	sub.Expect("hotplugd/v1/h1/events/net/change", 10*time.Second)
}

// TestCommandsOff: without commands: true nothing answers.
func TestCommandsOff(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	s := testSettings(t, b.URL())
	s.Commands = false
	c := startClient(t, s)
	waitConnected(t, c, true)
	admin := mqtttest.Dial(t, b, nil)
	admin.Subscribe("hotplugd/v1/h1/reply/#")
	time.Sleep(200 * time.Millisecond)
	admin.Request("hotplugd/v1/h1/cmd/status", "hotplugd/v1/h1/reply/admin", []byte("c"), nil)
	admin.Quiet("hotplugd/v1/h1/reply/", time.Second)
}

// TestCommandRate: a flood of requests gets answers within the rate and
// errors beyond it, never a stall.
func TestCommandRate(t *testing.T) {
	b := mqtttest.Start(t, mqtttest.Options{})
	c := startClient(t, testSettings(t, b.URL()))
	waitConnected(t, c, true)
	admin := mqtttest.Dial(t, b, nil)
	admin.Subscribe("hotplugd/v1/h1/reply/#")
	time.Sleep(200 * time.Millisecond)
	for range 2 * cmdRate {
		admin.Request("hotplugd/v1/h1/cmd/status", "hotplugd/v1/h1/reply/admin", []byte("c"), nil)
		time.Sleep(time.Millisecond) // within the command queue
	}
	ok, limited := 0, 0
	for range 2 * cmdRate {
		m := admin.Expect("hotplugd/v1/h1/reply/admin", 10*time.Second)
		switch {
		case bytes.Contains(m.Payload, []byte("too many requests")):
			limited++
		case bytes.Contains(m.Payload, []byte(`"version"`)):
			ok++
		}
	}
	if ok < cmdRate || limited == 0 || ok+limited != 2*cmdRate {
		t.Errorf("%d answered, %d refused of %d in a burst; want at least %d answered, some refused", ok, limited, 2*cmdRate, cmdRate)
	}
}

// TestTLS: with the broker's CA in ca_file the client connects over
// TLS; with another CA it refuses, says why, and messages wait.
func TestTLS(t *testing.T) {
	ca := mqtttest.NewCA(t, "test-ca")
	b := mqtttest.Start(t, mqtttest.Options{TLS: ca})
	s := testSettings(t, b.URL())
	s.RootCAs = readPool(t, ca.CertFile)
	c := startClient(t, s)
	waitConnected(t, c, true)
	sub := mqtttest.Dial(t, b, ca)
	sub.Subscribe("hotplugd/v1/h1/events/#")
	c.Event(testEvent(t, 1, "tls"), nil)
	sub.Expect("hotplugd/v1/h1/events/net/change", 10*time.Second)

	other := mqtttest.NewCA(t, "other-ca")
	s2 := testSettings(t, b.URL())
	s2.ClientID += "-2"
	s2.RootCAs = readPool(t, other.CertFile)
	c2 := startClient(t, s2)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c2.Status().LastError, "certificate signed by unknown authority") {
		if time.Now().After(deadline) {
			t.Fatalf("wrong CA: last error %q", c2.Status().LastError)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c2.Event(testEvent(t, 2, "tls"), nil)
	if st := c2.Stats(); st.Connected || st.Queue != 1 {
		t.Errorf("wrong CA: %+v, want not connected and the event queued", st)
	}
}

func readPool(t *testing.T, path string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("%s: no certificate", path)
	}
	return pool
}

// TestSilentBroker: a broker that accepts TCP and never answers does not
// slow the hand-over, and Close does not hang on it.
func TestSilentBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	c := startClient(t, testSettings(t, "mqtt://"+ln.Addr().String()))
	start := time.Now()
	for i := range 1000 {
		c.Event(testEvent(t, uint64(i+1), "silent"), nil)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("1000 events took %v to hand over", d)
	}
	start = time.Now()
	c.Close(context.Background())
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	if n := c.Stats().Queue; n != 1000 {
		t.Errorf("queued %d, want 1000", n)
	}
}
