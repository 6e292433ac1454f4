package broker

import (
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/mqtttest"
	"github.com/hotplugd/hotplugd/internal/rules"
)

// BenchmarkEventDocument: one event's CloudEvents document.
func BenchmarkEventDocument(b *testing.B) {
	c := &Client{s: &rules.MQTTSettings{Host: "h", Events: "all"}, cfg: Config{BootID: "b00t"}}
	ev := testEvent(&testing.T{}, 7, "tag")
	matched := []*rules.Rule{{Name: "r"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.eventDoc(ev, matched, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPublish: events handed over, written, published to a local
// mosquitto and acknowledged, per second.
func BenchmarkPublish(b *testing.B) {
	t := &testing.T{}
	broker := mqtttest.Start(b, mqtttest.Options{})
	s := testSettings(t, broker.URL())
	s.QueueDir = b.TempDir()
	s.QueueMax = 1 << 20
	c, err := New(Config{Settings: s, BootID: "b", Since: time.Now(), Handlers: &fakeHandlers{}})
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	defer c.Close(b.Context())
	for !c.connected.Load() {
		time.Sleep(time.Millisecond)
	}
	ev := testEvent(t, 7, "tag")
	b.ResetTimer()
	for range b.N {
		c.Event(ev, nil)
	}
	for c.Stats().Published < uint64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "published/s")
}
