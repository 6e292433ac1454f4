package daemon

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/uevent"
	"go.uber.org/goleak"
)

// gate is a handler whose events block until the test lets each one go,
// so a test decides when what finishes and sees exactly what has started.
type gate struct {
	mu      sync.Mutex
	started map[uint64]bool // by SEQNUM; true once let go
	release map[uint64]chan struct{}
	poke    chan struct{}
}

func newGate() *gate {
	return &gate{started: map[uint64]bool{}, release: map[uint64]chan struct{}{}, poke: make(chan struct{}, 1)}
}

func (g *gate) ch(seq uint64) chan struct{} {
	c := g.release[seq]
	if c == nil {
		c = make(chan struct{})
		g.release[seq] = c
	}
	return c
}

func (g *gate) handle(_ context.Context, e *uevent.Event) {
	g.mu.Lock()
	g.started[e.Seqnum] = false
	c := g.ch(e.Seqnum)
	g.mu.Unlock()
	select {
	case g.poke <- struct{}{}:
	default:
	}
	<-c
}

// let lets event seq, which runs, finish.
func (g *gate) let(seq uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.started[seq] = true
	close(g.ch(seq))
}

// running returns the SEQNUMs started and not let go.
func (g *gate) running() map[uint64]bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := map[uint64]bool{}
	for s, done := range g.started {
		if !done {
			r[s] = true
		}
	}
	return r
}

// await waits until exactly the events want are running, failing at once
// if one that should wait has started.
func (g *gate) await(t *testing.T, want ...uint64) {
	t.Helper()
	w := map[uint64]bool{}
	for _, s := range want {
		w[s] = true
	}
	timeout := time.After(10 * time.Second)
	for {
		got := g.running()
		extra := false
		for s := range got {
			extra = extra || !w[s]
		}
		if extra {
			t.Fatalf("running %v, want %v", keys(got), want)
		}
		if len(got) == len(w) {
			return
		}
		select {
		case <-g.poke:
		case <-time.After(time.Millisecond):
		case <-timeout:
			t.Fatalf("running %v, want %v", keys(got), want)
		}
	}
}

// settle gives the dispatcher time to start what it should not, for the
// next await to catch.
func settle() { time.Sleep(20 * time.Millisecond) }

func keys(m map[uint64]bool) []uint64 {
	var k []uint64
	for s := range m {
		k = append(k, s)
	}
	slices.Sort(k)
	return k
}

// A parent's event that arrives between two of its children's waits for
// the first, and the second waits for the parent, though the second
// child's own device is idle. An unrelated device, even one whose name
// extends the parent's, is not held up.
func TestDispatchParentBetweenChildren(t *testing.T) {
	defer goleak.VerifyNone(t)
	g := newGate()
	d := newDispatcher(8, 64, g.handle)
	ctx := context.Background()
	disk := "/devices/virtual/block/loop0"
	d.Submit(ctx, ev(1, "add", disk+"/loop0p1"))
	d.Submit(ctx, ev(2, "change", disk))
	d.Submit(ctx, ev(3, "add", disk+"/loop0p2"))
	d.Submit(ctx, ev(4, "add", disk+"/loop0p2/holders/x")) // a grandchild behind the parent
	d.Submit(ctx, ev(5, "add", disk+"0"))                  // loop00: unrelated
	d.Submit(ctx, ev(6, "add", "/devices/virtual/block"))  // the parent's parent, last
	g.await(t, 1, 5)
	settle()
	g.await(t, 1, 5)
	if !d.pending(disk) || d.pending("/devices/virtual/block/loop0/loop0p9") {
		t.Error("pending is wrong for a waiting and an unknown device")
	}
	g.let(5)
	g.let(1)
	g.await(t, 2)
	g.let(2)
	g.await(t, 3) // the grandchild still waits for its parent, 3
	g.let(3)
	g.await(t, 4)
	g.let(4)
	g.await(t, 6)
	g.let(6)
	d.Drain()
	d.Close()
	if n := d.locks.root.kids.len(); n != 0 {
		t.Errorf("%d lock nodes left after Drain, want none", n)
	}
}

// Siblings run together; a child that arrives while its parent waits
// behind a sibling waits for the parent too, and so does a second event of
// the parent.
func TestDispatchChildArrivesWhileParentWaits(t *testing.T) {
	defer goleak.VerifyNone(t)
	g := newGate()
	d := newDispatcher(8, 64, g.handle)
	ctx := context.Background()
	hub := "/devices/pci0000:00/0000:00:14.0/usb1/1-1"
	d.Submit(ctx, ev(1, "add", hub+"/1-1.1"))
	d.Submit(ctx, ev(2, "add", hub+"/1-1.2"))
	g.await(t, 1, 2) // siblings concurrently
	d.Submit(ctx, ev(3, "change", hub))
	d.Submit(ctx, ev(4, "add", hub+"/1-1.3"))
	d.Submit(ctx, ev(5, "change", hub))
	d.Submit(ctx, ev(6, "add", hub+"/1-1.4"))
	settle()
	g.await(t, 1, 2)
	g.let(2)
	settle()
	g.await(t, 1)
	g.let(1)
	g.await(t, 3)
	g.let(3)
	g.await(t, 4)
	g.let(4)
	g.await(t, 5)
	g.let(5)
	g.await(t, 6)
	g.let(6)
	d.Drain()
	d.Close()
}

// A chain of twelve levels, with events arriving bottom up, then top down,
// runs one at a time in arrival order; a sibling branch off the middle of
// the chain runs beside the lower half.
func TestDispatchDeepChain(t *testing.T) {
	defer goleak.VerifyNone(t)
	var mu sync.Mutex
	var order []uint64
	var active, overlap atomic.Int32
	d := newDispatcher(8, 64, func(_ context.Context, e *uevent.Event) {
		if active.Add(1) > 1 {
			overlap.Add(1)
		}
		time.Sleep(100 * time.Microsecond)
		mu.Lock()
		order = append(order, e.Seqnum)
		mu.Unlock()
		active.Add(-1)
	})
	ctx := context.Background()
	var paths []string
	p := "/devices"
	for i := range 12 {
		p += fmt.Sprintf("/l%d", i)
		paths = append(paths, p)
	}
	seq := uint64(0)
	for i := len(paths) - 1; i >= 0; i-- {
		seq++
		d.Submit(ctx, ev(seq, "add", paths[i]))
	}
	for _, p := range paths {
		seq++
		d.Submit(ctx, ev(seq, "change", p))
	}
	d.Drain()
	d.Close()
	if overlap.Load() != 0 {
		t.Errorf("%d events of the chain overlapped", overlap.Load())
	}
	if !slices.IsSorted(order) || len(order) != int(seq) {
		t.Errorf("order %v, want 1..%d", order, seq)
	}
}

// Close drops what waits for a lock and what is ready but has no worker,
// waits for the running event, and leaves nothing queued or pending.
func TestDispatchCloseWithWaiters(t *testing.T) {
	defer goleak.VerifyNone(t)
	g := newGate()
	d := newDispatcher(1, 8, g.handle)
	ctx := context.Background()
	d.Submit(ctx, ev(1, "add", "/devices/a/b"))
	g.await(t, 1)
	d.Submit(ctx, ev(2, "change", "/devices/a"))      // waits for 1
	d.Submit(ctx, ev(3, "add", "/devices/a/b/c"))     // waits for 1 and 2
	d.Submit(ctx, ev(4, "add", "/devices/c"))         // ready, no worker
	d.Submit(ctx, ev(5, "add", "/devices/a/b/c/d/e")) // waits for all of them
	if q := d.Stats().Queued; q != 5 {
		t.Errorf("queued %d, want 5", q)
	}
	closed := make(chan struct{})
	go func() { d.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while an event runs")
	case <-time.After(20 * time.Millisecond):
	}
	if d.Submit(ctx, ev(6, "add", "/devices/x")) != refused {
		t.Error("Submit after Close was not refused")
	}
	g.let(1)
	<-closed
	st := d.Stats()
	if st.Handled != 1 || st.Queued != 0 {
		t.Errorf("stats %+v, want 1 handled and none queued", st)
	}
	for _, p := range []string{"/devices/a", "/devices/a/b", "/devices/c", "/devices/a/b/c/d/e"} {
		if d.pending(p) {
			t.Errorf("%s pending after Close", p)
		}
	}
	if n := d.locks.root.kids.len(); n != 0 {
		t.Errorf("%d lock nodes left after Close, want none", n)
	}
}

// related is the ordering rule written plainly: equal devpaths, or one a
// prefix of the other ending before a '/' that is not the first byte.
func related(p, q string) bool {
	if len(p) > len(q) {
		p, q = q, p
	}
	for q != p {
		i := strings.LastIndexByte(q, '/')
		if i <= 0 {
			return false
		}
		q = q[:i]
	}
	return true
}

// Against the rule itself, on random traffic: after every step the events
// running are exactly those with no related event that arrived earlier
// still queued or running (the workers outnumber the events), and pending
// is true exactly for the devpaths with events. The devpaths include
// chains whose middle gets events only now and then, names that extend
// others ("/d/ab"), and odd ones the parser would refuse.
func TestDispatchMatchesRule(t *testing.T) {
	tree := []string{
		"/d", "/d/a", "/d/a/x", "/d/a/y", "/d/a/x/1", "/d/a/x/2", "/d/ab", "/d/ab/x",
		"/d/b/x/1/q/r/s", "/d/b/x/1/q/r/t", "/d/b/x/1/q", "/d/b/x/2/q/r", "/d/b", "/e/f/g/h", "/e",
		"/d/", "/d//a", "/", "", "/d/a/", "x/y", "x",
	}
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			defer goleak.VerifyNone(t)
			matchRule(t, tree, rand.New(rand.NewPCG(seed, 2)))
		})
	}
}

func matchRule(t *testing.T, tree []string, rng *rand.Rand) {
	g := newGate()
	d := newDispatcher(64, 64, g.handle)
	ctx := context.Background()
	type queuedEv struct {
		seq  uint64
		path string
	}
	var pending []queuedEv // the model: in arrival order
	runnable := func() []uint64 {
		var r []uint64
		for i, e := range pending {
			if !slices.ContainsFunc(pending[:i], func(o queuedEv) bool { return related(o.path, e.path) }) {
				r = append(r, e.seq)
			}
		}
		return r
	}
	seq := uint64(0)
	for step := 0; step < 2000 || len(pending) > 0; step++ {
		if step < 2000 && len(pending) < 24 && (len(pending) == 0 || rng.IntN(5) < 3) {
			seq++
			path := tree[rng.IntN(len(tree))]
			d.Submit(ctx, ev(seq, "change", path))
			pending = append(pending, queuedEv{seq, path})
		} else {
			run := runnable()
			done := run[rng.IntN(len(run))]
			g.let(done)
			pending = slices.DeleteFunc(pending, func(e queuedEv) bool { return e.seq == done })
		}
		// Once the dispatcher has retired the finished event, it has
		// started all it will; they are seen when their handlers begin.
		for deadline := time.Now().Add(10 * time.Second); d.Stats().Queued != len(pending); time.Sleep(10 * time.Microsecond) {
			if time.Now().After(deadline) {
				t.Fatalf("step %d: %d events queued, want %d", step, d.Stats().Queued, len(pending))
			}
		}
		g.await(t, runnable()...)
		for _, p := range tree {
			want := slices.ContainsFunc(pending, func(e queuedEv) bool { return e.path == p })
			if got := d.pending(p); got != want {
				t.Fatalf("step %d: pending(%q) = %v, want %v", step, p, got, want)
			}
		}
	}
	d.Drain()
	d.Close()
	if n := d.locks.root.kids.len(); n != 0 {
		t.Errorf("%d lock nodes left after Drain, want none", n)
	}
}

// A coldplug of distinct devices makes about one lock each, not one per
// level of their devpaths, and they go when the events are done.
func TestDispatchLocksPerDevice(t *testing.T) {
	defer goleak.VerifyNone(t)
	g := newGate()
	d := newDispatcher(200, 200, g.handle)
	for i := range 100 {
		d.Submit(context.Background(), ev(uint64(i+1), "add", benchPartition(i)))
	}
	var want []uint64
	for i := range 100 {
		want = append(want, uint64(i+1))
	}
	g.await(t, want...)
	n := 0
	d.mu.Lock()
	d.locks.root.walk(func(*node) { n++ })
	d.mu.Unlock()
	if n != 101 { // a leaf each, and where they branch
		t.Errorf("%d locks for 100 devices, want 101", n)
	}
	for _, s := range want {
		g.let(s)
	}
	d.Drain()
	d.Close()
	if n := d.locks.root.kids.len(); n != 0 {
		t.Errorf("%d lock nodes left after Drain, want none", n)
	}
}

// The SEQNUM set forgets exactly what the ring forgets, whatever the
// SEQNUMs: runs, repeats, and values that crowd the slots where the table
// wraps around.
func TestSeqRingMatchesModel(t *testing.T) {
	var r seqRing
	var crowd []uint64
	for n := uint64(1 << 50); len(crowd) < 300; n++ {
		if h := r.home(n); h >= len(r.set)-2 || h == 0 {
			crowd = append(crowd, n)
		}
	}
	var model []uint64 // the last len(r.ring) added
	rng := rand.New(rand.NewPCG(3, 4))
	next := uint64(1)
	for i := range 200_000 {
		var n uint64
		switch rng.IntN(4) {
		case 0: // a recent one again, as udev repeats the kernel's
			n = next - uint64(rng.IntN(5000)) - 1
			if n == 0 || n > next {
				n = 1
			}
		case 1:
			n = crowd[rng.IntN(len(crowd))]
		default:
			n = next
			next++
		}
		want := !slices.Contains(model, n)
		if got := r.add(n); got != want {
			t.Fatalf("step %d: add(%d) = %v, want %v", i, n, got, want)
		}
		if want {
			model = append(model, n)
			if len(model) > len(r.ring) {
				model = model[1:]
			}
		}
	}
}

// len is how many children k holds.
func (k *kids) len() int {
	if k.one != nil {
		return 1
	}
	return len(k.many)
}
