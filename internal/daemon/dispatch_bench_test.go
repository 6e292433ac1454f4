package daemon

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// benchPartition is the devpath of a partition of the i'th disk on a USB
// bus: twelve levels deep, as on a real machine, since what the dispatcher
// does per event grows with the depth of the devpath.
func benchPartition(i int) string {
	return fmt.Sprintf("/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host%d/target%d:0:0/%d:0:0:0/block/sd%d/sd%d1", i, i, i, i, i)
}

// BenchmarkDispatch measures what the dispatcher itself costs per event:
// the handler does nothing, so the figure is its locking and bookkeeping.
// same-device is a storm from one device, all serialised; distinct is a
// coldplug of many devices; in distinct-with-parents each partition's
// "add" is followed by a "change" of its disk, which must wait for it.
func BenchmarkDispatch(b *testing.B) {
	const n = 100_000
	cases := []struct {
		name    string
		devpath func(i int) (string, string)
	}{
		{"same-device", func(int) (string, string) { return "change", benchPartition(0) }},
		{"distinct", func(i int) (string, string) { return "add", benchPartition(i) }},
		{"distinct-with-parents", func(i int) (string, string) {
			if i%2 == 1 {
				p := benchPartition(i / 2)
				return "change", p[:strings.LastIndexByte(p, '/')]
			}
			return "add", benchPartition(i / 2)
		}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			evs := make([]uevent.Event, n)
			for i := range evs {
				action, devpath := c.devpath(i)
				evs[i] = *ev(uint64(i+1), action, devpath)
			}
			ctx := context.Background()
			for b.Loop() {
				d := newDispatcher(8, 4096, func(context.Context, *uevent.Event) {})
				for i := range evs {
					if d.Submit(ctx, &evs[i]) != queued {
						b.Fatal("Submit refused")
					}
				}
				d.Drain()
				d.Close()
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
