package daemon

// The built daemon against a real mosquitto (Debian's), started by each
// test on 127.0.0.1 on a free port and stopped by it: real uevents go
// out as CloudEvents documents, survive outages and restarts in the
// on-disk outbox, and commands come back in.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/control"
	"github.com/hotplugd/hotplugd/internal/mqtttest"
)

// mqttHost is the daemons' host name in the tests' topics.
const (
	mqttHost   = "t1"
	mqttPrefix = "hotplugd/v1/" + mqttHost
)

// mqttSetting is the settings line of a broker at url with its outbox in
// dir, plus extra keys ("events: all").
func mqttSetting(url, dir string, extra ...string) string {
	keys := append([]string{"url: " + jsonString(url), "host: " + mqttHost,
		"queue_dir: " + jsonString(filepath.Join(dir, "outbox"))}, extra...)
	return "mqtt: {" + strings.Join(keys, ", ") + "}"
}

// eventDoc is what a subscriber reads of an event.
type eventDoc struct {
	ID      string `json:"id"`
	Source  string `json:"source"`
	Type    string `json:"type"`
	Subject string `json:"subject"`
	Data    struct {
		Seqnum uint64            `json:"seqnum"`
		Action string            `json:"action"`
		Env    map[string]string `json:"env"`
		Rules  []string          `json:"rules"`
	} `json:"data"`
}

func readEvent(t *testing.T, sub *mqtttest.Client, timeout time.Duration) eventDoc {
	t.Helper()
	m := sub.Expect(mqttPrefix+"/events/net/change", timeout)
	var d eventDoc
	if err := json.Unmarshal(m.Payload, &d); err != nil {
		t.Fatalf("event document: %v\n%s", err, m.Payload)
	}
	return d
}

// mqttDaemon starts the daemon on a rules file with one rule matching
// this test's changes of lo (it notifies: the log only) and settings.
func mqttDaemon(t *testing.T, bin, dir, tag string, settings ...string) *daemonProc {
	t.Helper()
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeRules(t, rulesPath, strings.Join(settings, "\n"), rule{name: "lo-" + tag, match: loMatch(tag)})
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)
	return d
}

func brokerStatus(t *testing.T, dir string) control.BrokerStatus {
	t.Helper()
	s, err := control.NewClient(filepath.Join(dir, "control")).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if s.Broker == nil {
		t.Fatal("status has no broker")
	}
	return *s.Broker
}

// waitBroker waits until the daemon's broker connection is up (or down)
// and, when up, its outbox empty.
func waitBroker(t *testing.T, dir string, connected bool) {
	t.Helper()
	eventually(t, 20*time.Second, func() bool {
		b := brokerStatus(t, dir)
		return b.Connected == connected && (!connected || b.Queue == 0)
	}, "the broker connected=%v", connected)
}

// TestMQTTEvents: a real uevent a rule matched arrives on
// P/events/net/change as a CloudEvents document carrying the event and
// the rule; properties: cuts env down; events: none sends nothing.
func TestMQTTEvents(t *testing.T) {
	bin := needBinary(t)
	b := mqtttest.Start(t, mqtttest.Options{})
	for _, tt := range []struct{ name, extra string }{{"matched", "events: matched"},
		{"properties", "properties: [SYNTH_ARG_T, INTERFACE]"}, {"none", "events: none"}} {
		t.Run(tt.name, func(t *testing.T) {
			dir, tag := t.TempDir(), newTag()
			sub := mqtttest.Dial(t, b, nil)
			sub.Subscribe(mqttPrefix + "/events/#")
			d := mqttDaemon(t, bin, dir, tag, mqttSetting(b.URL(), dir, tt.extra))
			waitBroker(t, dir, true)
			uuid := newUUID()
			trigger(t, loUevent, uuid, tag)
			if tt.name == "none" {
				d.waitLog(t, regexp.MustCompile(`rule matched.*`+tag), 10*time.Second)
				sub.Quiet(mqttPrefix+"/events/", time.Second)
				return
			}
			ev := readEvent(t, sub, 10*time.Second)
			boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
			if ev.ID != fmt.Sprintf("%s-%d", strings.TrimSpace(string(boot)), ev.Data.Seqnum) || ev.Source != "urn:hotplugd:"+mqttHost ||
				ev.Type != "io.hotplugd.device.change" || ev.Subject != "/devices/virtual/net/lo" {
				t.Errorf("envelope %+v", ev)
			}
			if ev.Data.Env["SYNTH_UUID"] != uuid && tt.name == "matched" || ev.Data.Env["SYNTH_ARG_T"] != tag ||
				len(ev.Data.Rules) != 1 || ev.Data.Rules[0] != "lo-"+tag {
				t.Errorf("data %+v", ev.Data)
			}
			if tt.name == "properties" && len(ev.Data.Env) != 2 {
				t.Errorf("env %v, want SYNTH_ARG_T and INTERFACE only", ev.Data.Env)
			}
		})
	}
}

// TestMQTTLastWill: kill -9 of the daemon turns its retained status
// offline (the Last Will); the next daemon turns it online.
func TestMQTTLastWill(t *testing.T) {
	bin := needBinary(t)
	b := mqtttest.Start(t, mqtttest.Options{})
	dir, tag := t.TempDir(), newTag()
	d := mqttDaemon(t, bin, dir, tag, mqttSetting(b.URL(), dir))
	sub := mqtttest.Dial(t, b, nil)
	sub.Subscribe(mqttPrefix + "/status")
	state := func() string {
		t.Helper()
		var st struct{ State, Version string }
		m := sub.Expect(mqttPrefix+"/status", 20*time.Second)
		if err := json.Unmarshal(m.Payload, &st); err != nil {
			t.Fatal(err)
		}
		return st.State
	}
	if s := state(); s != "online" {
		t.Fatalf("status %q, want online", s)
	}
	d.signal(t, syscall.SIGKILL)
	d.wait(t, waitExit)
	if s := state(); s != "offline" {
		t.Fatalf("after kill -9: %q, want offline", s)
	}
	d = startDaemon(t, bin, filepath.Join(dir, "rules.yaml"))
	d.ready(t)
	if s := state(); s != "online" {
		t.Fatalf("after the restart: %q, want online", s)
	}
	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, waitExit); code != 0 {
		t.Errorf("exit %d", code)
	}
	if s := state(); s != "offline" {
		t.Errorf("after SIGTERM: %q, want offline", s)
	}
}

// mqttStorm writes n changes of lo tagged tag and waits until the daemon
// has handled them.
func mqttStorm(t *testing.T, bin, dir, tag string, n int) {
	t.Helper()
	for range n {
		trigger(t, loUevent, newUUID(), tag)
	}
	if _, errOut, code := ctl(t, bin, nil, "settle", "--socket", filepath.Join(dir, "control")); code != 0 {
		t.Fatalf("settle: %s", errOut)
	}
}

// expectStorm reads n events of tag: all in SEQNUM order, none twice.
func expectStorm(t *testing.T, sub *mqtttest.Client, tag string, n int) {
	t.Helper()
	var last uint64
	ids := map[string]bool{}
	for i := range n {
		ev := readEvent(t, sub, 30*time.Second)
		if ev.Data.Env["SYNTH_ARG_T"] != tag || ev.Data.Seqnum <= last || ids[ev.ID] {
			t.Fatalf("event %d of %d: seqnum %d after %d, id %s (seen %v), tag %q", i, n, ev.Data.Seqnum, last, ev.ID,
				ids[ev.ID], ev.Data.Env["SYNTH_ARG_T"])
		}
		last, ids[ev.ID] = ev.Data.Seqnum, true
	}
	sub.Quiet(mqttPrefix+"/events/", 500*time.Millisecond)
}

// TestMQTTOutage: with mosquitto stopped, 1,000 real events wait in the
// outbox and all arrive, in order, once it is back; with queue_max 100
// the newest 100 do and the drop counter says 900.
func TestMQTTOutage(t *testing.T) {
	bin := needBinary(t)
	for _, max := range []int{10000, 100} {
		t.Run(fmt.Sprintf("queue_max %d", max), func(t *testing.T) {
			b := mqtttest.Start(t, mqtttest.Options{Persist: true})
			mqtttest.DialSession(t, b, nil, "fleet").Subscribe(mqttPrefix + "/events/#")
			dir, tag := t.TempDir(), newTag()
			mqttDaemon(t, bin, dir, tag, mqttSetting(b.URL(), dir, fmt.Sprintf("queue_max: %d", max)))
			waitBroker(t, dir, true)
			b.Stop()
			mqttStorm(t, bin, dir, tag, 1000)
			b.Restart()
			sub := mqtttest.DialSession(t, b, nil, "fleet")
			expectStorm(t, sub, tag, min(max, 1000))
			waitBroker(t, dir, true)
			m, err := control.NewClient(filepath.Join(dir, "control")).Metrics(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := fmt.Sprintf("hotplugd_broker_messages_dropped_total{reason=\"queue_full\"} %d\n", 1000-min(max, 1000))
			if !bytes.Contains(m, []byte(want)) || !bytes.Contains(m, []byte("hotplugd_broker_connected 1\n")) {
				t.Errorf("metrics lack %q and connected:\n%s", want, grepLines(m, "hotplugd_broker"))
			}
		})
	}
}

func grepLines(b []byte, sub string) string {
	var out []string
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "")
}

// TestMQTTRestartDuringOutage: what the daemon queued on disk while the
// broker was down goes out after both are back.
func TestMQTTRestartDuringOutage(t *testing.T) {
	bin := needBinary(t)
	b := mqtttest.Start(t, mqtttest.Options{Persist: true})
	mqtttest.DialSession(t, b, nil, "fleet").Subscribe(mqttPrefix + "/events/#")
	dir, tag := t.TempDir(), newTag()
	d := mqttDaemon(t, bin, dir, tag, mqttSetting(b.URL(), dir))
	waitBroker(t, dir, true)
	b.Stop()
	mqttStorm(t, bin, dir, tag, 100)
	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, waitExit); code != 0 {
		t.Fatalf("exit %d", code)
	}
	b.Restart()
	d = startDaemon(t, bin, filepath.Join(dir, "rules.yaml"))
	d.ready(t)
	expectStorm(t, mqtttest.DialSession(t, b, nil, "fleet"), tag, 100)
}
