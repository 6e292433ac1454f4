package broker

import (
	"bytes"
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/hotplugd/hotplugd/internal/control"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// Content types: CloudEvents' structured mode over MQTT 5 says its own.
const (
	jsonType       = "application/json"
	cloudEventType = "application/cloudevents+json"
)

// offline is the status the Last Will and an orderly stop leave.
var offline = []byte(`{"state":"offline"}`)

// topics are the client's topics under P = prefix/host.
type topics struct {
	base, status, mounts, events, notify, cmd, reply string
}

func newTopics(prefix, host string) topics {
	p := prefix + "/" + level(host)
	return topics{base: p, status: p + "/status", mounts: p + "/mounts", events: p + "/events/",
		notify: p + "/notify/", cmd: p + "/cmd/", reply: p + "/reply/"}
}

// maxLevel bounds a topic level made from a name.
const maxLevel = 64

// level makes s one topic level: letters, digits, '_', '-' and '.'
// stay, anything else (a '/', the wildcards '+' and '#', a '$', bytes
// outside ASCII) becomes '_'; at most maxLevel bytes, never empty. Only
// the kernel's subsystem and action names and the rules' names become
// levels; a device's strings never do.
func level(s string) string {
	if s == "" {
		return "_"
	}
	b := []byte(s[:min(len(s), maxLevel)])
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

// Wants reports whether an event the rules matched n times is published
// (settings.mqtt.events), so that the caller builds nothing otherwise.
func (c *Client) Wants(n int) bool {
	if c == nil {
		return false
	}
	switch c.s.Events {
	case "all":
		return true
	case "matched":
		return n > 0
	}
	return false
}

// Event hands ev, with the names of the rules it matched, to the outbox
// as a CloudEvents document on P/events/<subsystem>/<action>. It never
// waits for the broker; call it when Wants says so.
func (c *Client) Event(ev *uevent.Event, matched []*rules.Rule) {
	if !c.Wants(len(matched)) {
		return
	}
	doc, err := c.eventDoc(ev, matched, time.Now())
	if err != nil {
		c.log.Error("mqtt: event document", "devpath", ev.DevPath, "err", err)
		return
	}
	c.ob.push(message{topic: c.topics.events + level(ev.Subsystem) + "/" + level(ev.Action),
		contentType: cloudEventType, payload: doc, qos: c.s.QoS})
}

// eventDoc is the CloudEvents document of ev: its data is the `monitor
// --json` object, env cut to settings.mqtt.properties, and "rules".
func (c *Client) eventDoc(ev *uevent.Event, matched []*rules.Rule, now time.Time) ([]byte, error) {
	e := *ev
	if c.s.Properties != nil {
		e.Props = slices.DeleteFunc(slices.Clone(ev.Props), func(p uevent.Property) bool {
			return !slices.Contains(c.s.Properties, p.Key)
		})
	}
	data, err := e.MarshalJSON()
	if err != nil {
		return nil, err
	}
	names := make([]string, len(matched))
	for i, r := range matched {
		names[i] = r.Name
	}
	// The envelope is written here rather than by json.Marshal of a
	// cloudEvent, which would check and compact data (the bulk) again:
	// data is encoding/json's own output, every other value a string it
	// escapes.
	doc := make([]byte, 0, len(data)+256)
	doc = append(doc, `{"specversion":"1.0","id":`...)
	for _, f := range []struct{ name, val string }{{"", c.eventID(ev)}, {"source", "urn:hotplugd:" + c.s.Host},
		{"type", "io.hotplugd.device." + level(ev.Action)}, {"subject", ev.DevPath},
		{"time", now.UTC().Format(time.RFC3339Nano)}, {"datacontenttype", jsonType}} {
		if f.name != "" {
			doc = append(append(append(doc, `,"`...), f.name...), `":`...)
		}
		doc = append(doc, mustJSON(f.val)...)
	}
	doc = append(doc, `,"data":`...)
	doc = append(doc, bytes.TrimSuffix(data, []byte("}"))...)
	doc = append(doc, `,"rules":`...)
	doc = append(doc, mustJSON(names)...)
	return append(doc, "}}"...), nil
}

// eventID is <boot_id>-<seqnum>, unique in a boot as the kernel's
// SEQNUM is. Events the daemon makes up (coldplug, resync) have none:
// theirs is <boot_id>-<source>-<start of the daemon>-<n>.
func (c *Client) eventID(ev *uevent.Event) string {
	if ev.Seqnum != 0 {
		return c.cfg.BootID + "-" + strconv.FormatUint(ev.Seqnum, 10)
	}
	return c.cfg.BootID + "-" + string(ev.Source) + "-" + strconv.FormatInt(c.cfg.Since.UnixNano(), 10) + "-" +
		strconv.FormatUint(c.seq.Add(1), 10)
}

// Mounts hands the current mounts to the outbox as the retained P/mounts,
// unless they are what was published last.
func (c *Client) Mounts(ms []control.MountStatus) {
	if c == nil {
		return
	}
	if ms == nil {
		ms = []control.MountStatus{}
	}
	doc := mustJSON(struct {
		Mounts []control.MountStatus `json:"mounts"`
	}{ms})
	c.mu.Lock()
	same := bytes.Equal(doc, c.lastMounts)
	c.lastMounts = doc
	c.mu.Unlock()
	if !same {
		c.ob.push(message{topic: c.topics.mounts, contentType: jsonType, payload: doc, qos: c.s.QoS, retain: true})
	}
}

// PublishNotify hands a notification's document to the outbox, on
// P/notify/<rule> (notify.Publisher).
func (c *Client) PublishNotify(rule string, doc []byte) {
	c.ob.push(message{topic: c.topics.notify + level(rule), contentType: jsonType, payload: doc, qos: c.s.QoS})
}

// announce runs on each connection: the retained online status and
// mounts are published again (a broker that lost them has them back),
// and the command topics subscribed.
func (c *Client) announce(ctx context.Context, cm *autopaho.ConnectionManager) {
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	online := mustJSON(struct {
		State   string `json:"state"`
		Version string `json:"version"`
		BootID  string `json:"boot_id"`
		Since   string `json:"since"`
	}{"online", c.cfg.Version, c.cfg.BootID, c.cfg.Since.UTC().Format(time.RFC3339)})
	props := &paho.PublishProperties{ContentType: jsonType}
	if _, err := cm.Publish(ctx, &paho.Publish{Topic: c.topics.status, QoS: 1, Retain: true, Payload: online, Properties: props}); err != nil {
		c.noteErr("publishing the status", err)
	}
	c.mu.Lock()
	mounts := c.lastMounts
	c.mu.Unlock()
	if mounts != nil && c.ob.depth() == 0 { // else the outbox brings them, in their order
		if _, err := cm.Publish(ctx, &paho.Publish{Topic: c.topics.mounts, QoS: 1, Retain: true, Payload: mounts, Properties: props}); err != nil {
			c.noteErr("publishing the mounts", err)
		}
	}
	if !c.s.Commands {
		return
	}
	if _, err := cm.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: c.topics.cmd + "+", QoS: 1}}}); err != nil {
		c.noteErr("subscribing to "+c.topics.cmd+"+", err)
	}
}
