package broker

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

func TestLevel(t *testing.T) {
	for in, want := range map[string]string{
		"block": "block", "usb-serial": "usb-serial", "scsi_host": "scsi_host", "": "_",
		"a/b": "a_b", "+": "_", "#": "_", "$SYS": "_SYS", "net\x00": "net_", "é": "__",
		strings.Repeat("x", 100): strings.Repeat("x", maxLevel),
	} {
		if got := level(in); got != want {
			t.Errorf("level(%q) = %q, want %q", in, got, want)
		}
	}
}

// testEvent is the change of lo a test's write to its uevent file makes.
func testEvent(t *testing.T, seq uint64, tag string) *uevent.Event {
	t.Helper()
	ev, err := uevent.FromProps([]uevent.Property{
		{Key: "ACTION", Value: "change"}, {Key: "DEVPATH", Value: "/devices/virtual/net/lo"},
		{Key: "SUBSYSTEM", Value: "net"}, {Key: "INTERFACE", Value: "lo"}, {Key: "IFINDEX", Value: "1"},
		{Key: "SEQNUM", Value: strconv.FormatUint(seq, 10)}, {Key: "SYNTH_ARG_T", Value: tag},
	})
	if err != nil {
		t.Fatal(err)
	}
	ev.Source = uevent.SourceKernel
	return &ev
}

// ceDoc is what a subscriber reads of an event's document.
type ceDoc struct {
	SpecVersion     string `json:"specversion"`
	ID              string `json:"id"`
	Source          string `json:"source"`
	Type            string `json:"type"`
	Subject         string `json:"subject"`
	Time            string `json:"time"`
	DataContentType string `json:"datacontenttype"`
	Data            struct {
		Seqnum    uint64            `json:"seqnum"`
		Action    string            `json:"action"`
		DevPath   string            `json:"devpath"`
		Subsystem string            `json:"subsystem"`
		Source    string            `json:"source"`
		Env       map[string]string `json:"env"`
		Rules     []string          `json:"rules"`
	} `json:"data"`
}

func TestEventDocument(t *testing.T) {
	s := &rules.MQTTSettings{Host: "kiosk-1", Events: "all", Properties: []string{"INTERFACE", "SYNTH_ARG_T"}}
	c := &Client{s: s, cfg: Config{BootID: "b00t", Since: time.Unix(100, 0)}}
	now := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	b, err := c.eventDoc(testEvent(t, 42, "x"), []*rules.Rule{{Name: "r1"}, {Name: "r2"}}, now)
	if err != nil {
		t.Fatal(err)
	}
	var d ceDoc
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if d.SpecVersion != "1.0" || d.ID != "b00t-42" || d.Source != "urn:hotplugd:kiosk-1" || d.Type != "io.hotplugd.device.change" ||
		d.Subject != "/devices/virtual/net/lo" || d.Time != "2025-01-02T03:04:05.000000006Z" || d.DataContentType != "application/json" {
		t.Errorf("envelope %+v", d)
	}
	if d.Data.Seqnum != 42 || d.Data.Action != "change" || d.Data.Subsystem != "net" || d.Data.Source != "kernel" {
		t.Errorf("data %+v", d.Data)
	}
	if diff := cmp.Diff(map[string]string{"INTERFACE": "lo", "SYNTH_ARG_T": "x"}, d.Data.Env); diff != "" {
		t.Errorf("env, filtered by properties (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"r1", "r2"}, d.Data.Rules); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	ev := testEvent(t, 0, "x")
	ev.Source = uevent.SourceColdplug
	id1, id2 := c.eventID(ev), c.eventID(ev)
	if id1 == id2 || !strings.HasPrefix(id1, "b00t-coldplug-100000000000-") {
		t.Errorf("ids of events without a SEQNUM: %q, %q", id1, id2)
	}
}

func TestWants(t *testing.T) {
	for _, tt := range []struct {
		events  string
		matched int
		want    bool
	}{{"all", 0, true}, {"matched", 0, false}, {"matched", 1, true}, {"none", 1, false}} {
		c := &Client{s: &rules.MQTTSettings{Events: tt.events}}
		if got := c.Wants(tt.matched); got != tt.want {
			t.Errorf("events %s, %d matched: %v", tt.events, tt.matched, got)
		}
	}
	var none *Client
	if none.Wants(1) {
		t.Error("no client wants events")
	}
}

func TestReplyTopic(t *testing.T) {
	c := &Client{topics: newTopics("hotplugd/v1", "h1")}
	for topic, ok := range map[string]bool{
		"hotplugd/v1/h1/reply/abc": true, "admin/replies/1": true, "": false, "a/+/b": false,
		"hotplugd/v1/h1/status": false, "hotplugd/v1/h1/cmd/status": false, "hotplugd/v1/h1/events/net/add": false,
	} {
		if err := c.replyTopicOK(topic); (err == nil) != ok {
			t.Errorf("response topic %q: %v", topic, err)
		}
	}
}
