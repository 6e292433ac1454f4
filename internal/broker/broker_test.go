package broker

// Tests against a real mosquitto (Debian's), started by the test on
// 127.0.0.1 on a free port and stopped by it.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/url"
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
