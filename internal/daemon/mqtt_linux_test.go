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
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/control"
	"github.com/hotplugd/hotplugd/internal/looptest"
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
			m := socketGet(t, filepath.Join(dir, "control"), "/metrics")
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

// ask publishes a request on P/cmd/<verb> with correlation data and
// returns the reply's payload, asking again while the daemon's
// subscription may not be made yet.
func ask(t *testing.T, admin *mqtttest.Client, verb string, payload []byte) []byte {
	t.Helper()
	corr := []byte(newTag())
	for try := 0; ; try++ {
		admin.Request(mqttPrefix+"/cmd/"+verb, mqttPrefix+"/reply/admin", corr, payload)
		if m := admin.Next(2 * time.Second); m != nil {
			if m.Topic != mqttPrefix+"/reply/admin" || m.Properties == nil || !bytes.Equal(m.Properties.CorrelationData, corr) {
				t.Fatalf("%s: reply on %s with %+v", verb, m.Topic, m.Properties)
			}
			return m.Payload
		}
		if try == 10 {
			t.Fatalf("%s: no reply", verb)
		}
	}
}

// expectMounts waits for a retained P/mounts that contains each of want.
func expectMounts(t *testing.T, sub *mqtttest.Client, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		m := sub.Expect(mqttPrefix+"/mounts", time.Until(deadline))
		ok := true
		for _, w := range want {
			ok = ok && bytes.Contains(m.Payload, []byte(w))
		}
		if ok {
			return string(m.Payload)
		}
	}
}

// TestMQTTMountsAndCommands: plugging and removing a real loop
// partition updates the retained P/mounts; P/cmd/status answers with the
// request's correlation data, P/cmd/eject unmounts a hotplugd mount, and
// a 10 MB, malformed or unknown request gets an error while events go on.
func TestMQTTMountsAndCommands(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	bin := amBuild(t)
	b := mqtttest.Start(t, mqtttest.Options{})
	sub := mqtttest.Dial(t, b, nil)
	sub.Subscribe(mqttPrefix + "/mounts")
	disk := amNewDisk(t, "ext4", "MQTTMOUNT", nil)
	dm := amStart(t, bin, amConfig{disks: []*amDisk{disk}, settings: []string{mqttSetting(b.URL(), t.TempDir(), "commands: true")}})
	expectMounts(t, sub, `{"mounts":[]}`)
	disk.attach()
	mi := disk.waitMount(dm)
	expectMounts(t, sub, `"devnode":"`+disk.part()+`"`, `"label":"MQTTMOUNT"`, `"path":"`+mi.Mountpoint+`"`)
	disk.yank()
	disk.waitUnmount()
	expectMounts(t, sub, `{"mounts":[]}`)
	disk.detach()

	admin := mqtttest.Dial(t, b, nil)
	admin.Subscribe(mqttPrefix + "/reply/#")
	var st control.Status
	if err := json.Unmarshal(ask(t, admin, "status", nil), &st); err != nil || st.Broker == nil || !st.Broker.Connected || st.Version == "" {
		t.Errorf("status over MQTT: %+v (%v)", st, err)
	}
	disk.attach()
	mi = disk.waitMount(dm)
	var ej control.EjectResult
	if err := json.Unmarshal(ask(t, admin, "eject", []byte(`{"targets":["`+disk.part()+`"]}`)), &ej); err != nil ||
		len(ej.Targets) != 1 || len(ej.Targets[0].Unmounted) != 1 || ej.Targets[0].Error != "" {
		t.Fatalf("eject over MQTT: %+v (%v)", ej, err)
	}
	disk.waitUnmount()
	amGone(t, mi.Mountpoint)
	expectMounts(t, sub, `{"mounts":[]}`)
	for verb, payload := range map[string][]byte{"status": bytes.Repeat([]byte(" "), 10<<20), "eject": []byte(`{"targets":`),
		"trigger": []byte(`{"action":"boom"}`), "reboot": nil} {
		var e control.ErrorBody
		if err := json.Unmarshal(ask(t, admin, verb, payload), &e); err != nil || e.Error == "" {
			t.Errorf("%s with %d bytes: %+v (%v), want an error", verb, len(payload), e, err)
		}
	}
	// Events are still handled: the partition, added again, is mounted.
	disk.detach()
	disk.attach()
	disk.waitMount(dm)
}

// TestMQTTCommandsOff: without commands: true the daemon does not
// subscribe, and nothing answers.
func TestMQTTCommandsOff(t *testing.T) {
	bin := needBinary(t)
	b := mqtttest.Start(t, mqtttest.Options{})
	dir := t.TempDir()
	mqttDaemon(t, bin, dir, newTag(), mqttSetting(b.URL(), dir))
	waitBroker(t, dir, true)
	out, _, code := ctl(t, bin, nil, "status", "--socket", filepath.Join(dir, "control"))
	if want := "  broker:  " + b.URL() + ", connected; 0 queued, "; code != 0 || !strings.Contains(out, want) {
		t.Errorf("hotplugd status, exit %d, lacks %q:\n%s", code, want, out)
	}
	admin := mqtttest.Dial(t, b, nil)
	admin.Subscribe(mqttPrefix + "/reply/#")
	admin.Request(mqttPrefix+"/cmd/status", mqttPrefix+"/reply/admin", []byte("c"), nil)
	admin.Quiet(mqttPrefix+"/reply/", 2*time.Second)
}

// TestMQTTTLS: with the broker's CA in ca_file the daemon connects over
// TLS and publishes; with another CA it refuses, says why in its log and
// status, and its rules run all the same.
func TestMQTTTLS(t *testing.T) {
	bin := needBinary(t)
	ca := mqtttest.NewCA(t, "fleet-ca")
	b := mqtttest.Start(t, mqtttest.Options{TLS: ca})
	sub := mqtttest.Dial(t, b, ca)
	sub.Subscribe(mqttPrefix + "/events/#")
	dir, tag := t.TempDir(), newTag()
	mqttDaemon(t, bin, dir, tag, mqttSetting(b.URL(), dir, "ca_file: "+jsonString(ca.CertFile)))
	waitBroker(t, dir, true)
	trigger(t, loUevent, newUUID(), tag)
	if ev := readEvent(t, sub, 10*time.Second); ev.Data.Env["SYNTH_ARG_T"] != tag {
		t.Errorf("over TLS: %+v", ev)
	}

	other := mqtttest.NewCA(t, "other-ca")
	dir, tag = t.TempDir(), newTag()
	marker := filepath.Join(dir, "ran")
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeRules(t, rulesPath, mqttSetting(b.URL(), dir, "ca_file: "+jsonString(other.CertFile)),
		rule{name: "touch", match: loMatch(tag), argv: []string{"/bin/touch", marker}})
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)
	d.waitLog(t, regexp.MustCompile(`mqtt broker: connecting failed.*certificate signed by unknown authority`), 20*time.Second)
	trigger(t, loUevent, newUUID(), tag)
	waitFile(t, marker, 10*time.Second, func(string) bool { return true })
	if bs := brokerStatus(t, dir); bs.Connected || !strings.Contains(bs.LastError, "unknown authority") {
		t.Errorf("status with the wrong CA: %+v", bs)
	}
}

// TestMQTTSilentBroker: a broker that accepts TCP and never answers does
// not delay a uevent's action.
func TestMQTTSilentBroker(t *testing.T) {
	bin := needBinary(t)
	addr := silentBroker(t)
	dir, tag := t.TempDir(), newTag()
	marker := filepath.Join(dir, "ran")
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeRules(t, rulesPath, mqttSetting("mqtt://"+addr, dir, "events: all"),
		rule{name: "touch", match: loMatch(tag), argv: []string{"/bin/touch", marker}})
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)
	start := time.Now()
	trigger(t, loUevent, newUUID(), tag)
	waitFile(t, marker, 10*time.Second, func(string) bool { return true })
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the action ran %v after the event", took)
	}
	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, waitExit); code != 0 {
		t.Errorf("exit %d", code)
	}
}

// silentBroker listens on 127.0.0.1, accepts connections and never
// says anything; it returns host:port.
func silentBroker(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}
