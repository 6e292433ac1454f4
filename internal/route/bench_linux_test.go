package route

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/nettest"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// stormCounter counts the address events of one interface and says when
// it has seen want of them.
type stormCounter struct {
	name string
	n    atomic.Int64
	want atomic.Int64
	all  chan struct{}
}

func (c *stormCounter) Event(ev uevent.Event) {
	if ev.DevName == c.name && strings.HasPrefix(ev.Action, "address-") && c.n.Add(1) == c.want.Load() {
		c.all <- struct{}{}
	}
}

// BenchmarkAddressStorm: 10,000 address add/remove pairs on a veth, as
// fast as the kernel makes them, read by a listener with the default
// buffer. It reports the route events received per second, from the
// first request to the last event, and how many were lost (the storm's
// own rate, stormchanges/s, bounds it).
func BenchmarkAddressStorm(b *testing.B) {
	const pairs = 10000
	p := nettest.Veth(b)
	nettest.IP(b, "link", "set", p.A, "up")
	index := nettest.Index(b, p.A)
	c := &stormCounter{name: p.A, all: make(chan struct{}, 1)}
	l := start(b, Config{}, c)
	var elapsed, storm time.Duration
	lost := int64(0)
	for b.Loop() {
		c.n.Store(0)
		c.want.Store(2 * pairs)
		begin := time.Now()
		nettest.Storm(b, index, pairs, nil)
		storm += time.Since(begin)
		select {
		case <-c.all:
		case <-time.After(time.Minute):
			lost += 2*pairs - c.n.Load()
		}
		elapsed += time.Since(begin)
	}
	events := float64(2 * pairs * b.N)
	b.ReportMetric(events/elapsed.Seconds(), "events/s")
	b.ReportMetric(events/storm.Seconds(), "stormchanges/s")
	b.ReportMetric(float64(lost), "lost")
	b.ReportMetric(float64(l.Stats().Overruns), "overruns")
}
