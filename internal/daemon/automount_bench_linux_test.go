package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/listener"
	"github.com/hotplugd/hotplugd/internal/looptest"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// amLatencyRuns is how many plug-ins one benchmark iteration measures.
const amLatencyRuns = 20

// BenchmarkAutomountLatency measures how long an ext4 disk takes to be
// mounted by the hotplugd binary: from its partition's appearance to its
// mount in /proc/self/mountinfo, polled every millisecond. Each run adds
// the partition (partx -a: the kernel's real "add"), waits for the mount,
// then removes the disk ("remove" on its uevent file), waits for the
// unmount and deletes the partition. Reported, over 20 runs per iteration:
//   - p50-ms, max-ms: from just before partx -a is started; includes
//     partx itself (fork, exec, BLKPG);
//   - p50-ms-event, max-ms-event: from the moment a netlink socket of the
//     benchmark receives the kernel's "add", as the daemon's does; this is
//     hotplugd's own share (probe with blkid, rules, mkdir, mount(2));
//   - p50-ms-partx: how long partx -a took.
//
// The goal is p50 ≤ 50 ms. Run it as root with -benchtime 1x.
func BenchmarkAutomountLatency(b *testing.B) {
	looptest.Require(b, "go", "mkfs.ext4")
	bin := amBuild(b)
	disk := amNewDisk(b, "ext4", "BENCH", nil)
	dm := amStart(b, bin, amConfig{disks: []*amDisk{disk}})
	mountPoint := dm.root + "/BENCH"

	adds := make(chan time.Time, 16)
	lst, err := listener.New(listener.Config{Source: "kernel"}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := lst.Run(ctx, amAddWatch{devpath: disk.devpath(), adds: adds}); err != nil {
			b.Error(err)
		}
	})
	b.Cleanup(func() { cancel(); wg.Wait() })

	var total, fromEvent, partx []time.Duration
	b.ResetTimer()
	for range b.N {
		for range amLatencyRuns {
			for len(adds) > 0 {
				<-adds
			}
			start := time.Now()
			looptest.Run(b, "partx", "-a", "--nr", "1", disk.loop)
			partxDone := time.Now()
			seen := amWaitMountinfo(b, mountPoint, true)
			var event time.Time
			select {
			case event = <-adds:
			case <-time.After(5 * time.Second):
				b.Fatal("the benchmark's own socket did not see the add")
			}
			total = append(total, seen.Sub(start))
			fromEvent = append(fromEvent, seen.Sub(event))
			partx = append(partx, partxDone.Sub(start))

			b.StopTimer()
			disk.waitNode()
			disk.yank()
			amWaitMountinfo(b, mountPoint, false)
			dm.waitCount("msg=unmounted", len(total))
			disk.detach()
			b.StartTimer()
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	b.ReportMetric(ms(amPercentile(total, 50)), "p50-ms")
	b.ReportMetric(ms(slices.Max(total)), "max-ms")
	b.ReportMetric(ms(amPercentile(fromEvent, 50)), "p50-ms-event")
	b.ReportMetric(ms(slices.Max(fromEvent)), "max-ms-event")
	b.ReportMetric(ms(amPercentile(partx, 50)), "p50-ms-partx")
	b.Logf("add → mount in mountinfo, %d runs: from partx -a %v; from the kernel's event %v", len(total), total, fromEvent)
}

// amAddWatch timestamps the kernel's "add" of one device.
type amAddWatch struct {
	devpath string
	adds    chan<- time.Time
}

func (w amAddWatch) Event(ev uevent.Event) {
	if ev.Action == "add" && ev.DevPath == w.devpath {
		select {
		case w.adds <- time.Now():
		default:
		}
	}
}

func (amAddWatch) Overrun() {}

// amWaitMountinfo polls /proc/self/mountinfo every millisecond until a
// mount at path is there (or, with !present, gone) and returns when it
// saw it.
func amWaitMountinfo(tb testing.TB, path string, present bool) time.Time {
	tb.Helper()
	// Fields 5 and 6 of a mountinfo line: " MOUNTPOINT OPTIONS"; the path
	// has no characters mountinfo escapes.
	if strings.ContainsAny(path, " \t\n\\") {
		tb.Fatalf("%q: mountinfo would escape it", path)
	}
	needle := []byte(" " + path + " ")
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(time.Millisecond) {
		b, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			tb.Fatal(err)
		}
		if bytes.Contains(b, needle) == present {
			return time.Now()
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: mounted is not %t after 15s", path, present)
		}
	}
}

// amPercentile returns the p-th percentile (nearest rank) of ds.
func amPercentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p+99)/100 - 1
	return s[max(i, 0)]
}
