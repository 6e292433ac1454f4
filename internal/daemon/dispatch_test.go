package daemon

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/uevent"
	"go.uber.org/goleak"
)

func ev(seq uint64, action, devpath string) *uevent.Event {
	return &uevent.Event{Action: action, DevPath: devpath, Subsystem: "block", Seqnum: seq, Source: uevent.SourceKernel}
}

func TestDispatchOrderPerDeviceWhileAnotherIsSlow(t *testing.T) {
	defer goleak.VerifyNone(t)
	const n = 1000
	var mu sync.Mutex
	var got []uint64
	slowStarted := make(chan struct{})
	release := make(chan struct{})
	d := newDispatcher(4, 64, func(_ context.Context, e *uevent.Event) {
		if e.DevPath == "/devices/slow" {
			close(slowStarted)
			<-release
			return
		}
		mu.Lock()
		got = append(got, e.Seqnum)
		mu.Unlock()
	})
	ctx := context.Background()
	d.Submit(ctx, ev(1, "add", "/devices/slow"))
	<-slowStarted
	for i := uint64(2); i < n+2; i++ {
		if d.Submit(ctx, ev(i, "change", "/devices/virtual/net/lo")) != queued {
			t.Fatal("Submit refused")
		}
	}
	// All 1000 events of lo are handled while the slow device still runs.
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		done := len(got) == n
		mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("events of lo were held up by the slow device")
		}
		time.Sleep(time.Millisecond)
	}
	close(release)
	d.Drain()
	d.Close()
	for i, s := range got {
		if s != uint64(i+2) {
			t.Fatalf("event %d has SEQNUM %d, want %d (out of order)", i, s, i+2)
		}
	}
}

func TestDispatchParentChildOrder(t *testing.T) {
	defer goleak.VerifyNone(t)
	var mu sync.Mutex
	var order []string
	var active, overlap atomic.Int32
	d := newDispatcher(8, 64, func(_ context.Context, e *uevent.Event) {
		if active.Add(1) > 1 {
			overlap.Add(1)
		}
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		order = append(order, fmt.Sprintf("%d %s", e.Seqnum, e.Action))
		mu.Unlock()
		active.Add(-1)
	})
	ctx := context.Background()
	disk := "/devices/virtual/block/loop0"
	d.Submit(ctx, ev(1, "add", disk))
	d.Submit(ctx, ev(2, "add", disk+"/loop0p1"))
	d.Submit(ctx, ev(3, "add", disk+"/loop0p2"))
	d.Submit(ctx, ev(4, "change", disk))
	d.Submit(ctx, ev(5, "remove", disk+"/loop0p1"))
	d.Drain()
	d.Close()
	// 2 and 3 are siblings and may run in either order, but both after 1
	// and before 4; 5 after 4.
	pos := map[string]int{}
	for i, s := range order {
		pos[s] = i
	}
	if len(order) != 5 {
		t.Fatalf("handled %v", order)
	}
	if !(pos["1 add"] < pos["2 add"] && pos["1 add"] < pos["3 add"] &&
		pos["2 add"] < pos["4 change"] && pos["3 add"] < pos["4 change"] && pos["4 change"] < pos["5 remove"]) {
		t.Errorf("order %v breaks parent/child ordering", order)
	}
}

func TestDispatchUnrelatedRunConcurrently(t *testing.T) {
	defer goleak.VerifyNone(t)
	const workers = 4
	var active, peak atomic.Int32
	d := newDispatcher(workers, 64, func(_ context.Context, e *uevent.Event) {
		n := active.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
		active.Add(-1)
	})
	for i := range 16 {
		d.Submit(context.Background(), ev(uint64(i+1), "add", fmt.Sprintf("/devices/dev%d", i)))
	}
	d.Drain()
	d.Close()
	if peak.Load() != workers {
		t.Errorf("peak concurrency %d, want %d", peak.Load(), workers)
	}
}

func TestDispatchBoundedQueueBlocks(t *testing.T) {
	defer goleak.VerifyNone(t)
	release := make(chan struct{})
	d := newDispatcher(1, 3, func(context.Context, *uevent.Event) { <-release })
	ctx, cancel := context.WithCancel(context.Background())
	stop := d.wakeOnDone(ctx)
	defer stop()
	for i := range 3 {
		d.Submit(ctx, ev(uint64(i+1), "change", "/devices/x"))
	}
	blocked := make(chan submitted)
	go func() { blocked <- d.Submit(ctx, ev(4, "change", "/devices/x")) }()
	select {
	case <-blocked:
		t.Fatal("Submit on a full queue returned")
	case <-time.After(50 * time.Millisecond):
	}
	if q := d.Stats().Queued; q != 3 {
		t.Errorf("queued %d, want 3", q)
	}
	cancel()
	if got := <-blocked; got != refused {
		t.Errorf("Submit after cancel = %d, want refused", got)
	}
	close(release)
	d.Drain()
	d.Close()
}

func TestDispatchDuplicatesAndColdplug(t *testing.T) {
	defer goleak.VerifyNone(t)
	var mu sync.Mutex
	var got []string
	d := newDispatcher(2, 64, func(_ context.Context, e *uevent.Event) {
		mu.Lock()
		got = append(got, fmt.Sprintf("%s %s %s", e.Source, e.Action, e.DevPath))
		mu.Unlock()
	})
	ctx := context.Background()
	want := func(got, want submitted) {
		t.Helper()
		if got != want {
			t.Errorf("Submit = %d, want %d", got, want)
		}
	}
	want(d.Submit(ctx, ev(7, "change", "/devices/a")), queued)
	want(d.Submit(ctx, ev(7, "change", "/devices/a")), duplicate)
	d.beginColdplug()
	want(d.Submit(ctx, ev(8, "add", "/devices/b")), queued)
	cold := &uevent.Event{Action: "add", DevPath: "/devices/b", Subsystem: "block", Source: uevent.SourceColdplug}
	want(d.Submit(ctx, cold), coalesced)
	want(d.Submit(ctx, &uevent.Event{Action: "add", DevPath: "/devices/c", Subsystem: "block", Source: uevent.SourceColdplug}), queued)
	d.endColdplug()
	want(d.Submit(ctx, ev(9, "add", "/devices/b")), queued)
	d.Drain()
	d.Close()
	st := d.Stats()
	if st.Duplicates != 1 || st.Coalesced != 1 || st.Handled != 4 {
		t.Errorf("stats %+v, handled %v", st, got)
	}
}

func TestSeqRingForgetsOldest(t *testing.T) {
	var r seqRing
	for i := uint64(1); i <= uint64(len(r.ring))+1; i++ {
		if !r.add(i) {
			t.Fatalf("%d reported as duplicate", i)
		}
	}
	if r.add(uint64(len(r.ring))) {
		t.Error("recent SEQNUM not recognised")
	}
	if !r.add(1) {
		t.Error("oldest SEQNUM still remembered past the ring size")
	}
}

func BenchmarkDispatchOneDevice(b *testing.B) {
	d := newDispatcher(8, 1024, func(context.Context, *uevent.Event) {})
	e := make([]uevent.Event, b.N)
	for i := range e {
		e[i] = *ev(uint64(i+1), "change", "/devices/virtual/net/lo")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range e {
		d.Submit(context.Background(), &e[i])
	}
	d.Drain()
	d.Close()
}

// In the coldplug window a device pulled and plugged again gets its new
// "add"; only a coldplug/live pair of adds with nothing between is one.
func TestDispatchColdplugReplug(t *testing.T) {
	defer goleak.VerifyNone(t)
	release := make(chan struct{})
	var mu sync.Mutex
	var got []string
	d := newDispatcher(2, 64, func(_ context.Context, e *uevent.Event) {
		if e.DevPath == "/devices/slow" {
			<-release
		}
		mu.Lock()
		got = append(got, fmt.Sprintf("%s %s", e.Source, e.Action))
		mu.Unlock()
	})
	ctx := context.Background()
	cold := func(p string) *uevent.Event {
		return &uevent.Event{Action: "add", DevPath: p, Subsystem: "block", Source: uevent.SourceColdplug}
	}
	d.beginColdplug()
	d.Submit(ctx, cold("/devices/slow")) // holds the window open
	steps := []struct {
		ev   *uevent.Event
		want submitted
	}{
		{cold("/devices/sdb"), queued},
		{ev(10, "remove", "/devices/sdb"), queued},
		{ev(11, "add", "/devices/sdb"), queued}, // plugged again
		{ev(12, "add", "/devices/sdc"), queued}, // live first
		{cold("/devices/sdc"), coalesced},       // then enumerated
		{ev(13, "add", "/devices/sdc"), queued}, // a third add is new
	}
	for i, s := range steps {
		if r := d.Submit(ctx, s.ev); r != s.want {
			t.Errorf("step %d (%s %s %s): Submit = %d, want %d", i, s.ev.Source, s.ev.Action, s.ev.DevPath, r, s.want)
		}
	}
	close(release)
	d.Drain()
	d.endColdplug()
	d.Close()
	if n := d.Stats().Handled; n != 6 {
		t.Errorf("handled %d events, want 6: %v", n, got)
	}
}
