package daemon

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// DispatchStats counts what the dispatcher did.
type DispatchStats struct {
	Submitted  uint64 // events offered
	Handled    uint64 // events whose handler returned
	Duplicates uint64 // events ignored because their SEQNUM was seen already
	Coalesced  uint64 // coldplug/live "add" pairs of which one was skipped
	Queued     int    // events waiting or running now
}

// dispatcher runs a handler for each event on at most workers goroutines,
// keeping the kernel's order among related devices: two events whose
// devpaths are equal, or one the ancestor of the other, are handled one
// after the other in arrival (SEQNUM) order. Events of unrelated devices
// run concurrently, so a slow action on one device never holds up another.
//
// The queue is bounded: Submit blocks while it is full, so the listener
// stops reading and the kernel's socket buffer takes the burst instead of
// anything being dropped here.
type dispatcher struct {
	handle  func(context.Context, *uevent.Event)
	workers int
	max     int

	mu      sync.Mutex
	cond    *sync.Cond // signalled when an event finishes or the queue closes
	groups  map[string]*group
	below   map[string]int // devpath → number of groups strictly below it
	queued  int
	running int
	arrival uint64
	closed  bool
	seen    seqRing
	// adds records, while a coldplug runs, the source of the last "add"
	// of each devpath, so a device that is both enumerated and announced
	// live in the coldplug window is handled once. A "remove" forgets it:
	// a device pulled and plugged again gets its new "add".
	adds map[string]uevent.Source

	submitted, handled, duplicates, coalesced atomic.Uint64
	wg                                        sync.WaitGroup
}

// group is the FIFO of one devpath.
type group struct {
	devpath string
	queue   []item
	running bool
}

type item struct {
	ev      *uevent.Event
	arrival uint64
}

func newDispatcher(workers, max int, handle func(context.Context, *uevent.Event)) *dispatcher {
	d := &dispatcher{
		handle:  handle,
		workers: max1(workers),
		max:     max1(max),
		groups:  make(map[string]*group),
		below:   make(map[string]int),
	}
	d.cond = sync.NewCond(&d.mu)
	return d
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// submitted is what Submit did with an event.
type submitted uint8

const (
	queued    submitted = iota
	refused             // the dispatcher is closed or ctx ended
	duplicate           // its SEQNUM was seen already
	coalesced           // a second "add" of a device in the coldplug window
)

// Submit queues ev, blocking while the queue is full, until the
// dispatcher closes or ctx ends (see wakeOnDone).
func (d *dispatcher) Submit(ctx context.Context, ev *uevent.Event) submitted {
	d.submitted.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.queued >= d.max && !d.closed && ctx.Err() == nil {
		d.cond.Wait()
	}
	if d.closed || ctx.Err() != nil {
		return refused
	}
	if ev.Seqnum != 0 && !d.seen.add(ev.Seqnum) {
		d.duplicates.Add(1)
		return duplicate
	}
	if d.adds != nil {
		switch ev.Action {
		case "add":
			prev, seen := d.adds[ev.DevPath]
			if seen && (prev == uevent.SourceColdplug) != (ev.Source == uevent.SourceColdplug) {
				delete(d.adds, ev.DevPath)
				d.coalesced.Add(1)
				return coalesced
			}
			d.adds[ev.DevPath] = ev.Source
		case "remove":
			delete(d.adds, ev.DevPath)
		}
	}
	g := d.groups[ev.DevPath]
	if g == nil {
		g = &group{devpath: ev.DevPath}
		d.groups[ev.DevPath] = g
		forAncestors(ev.DevPath, func(a string) { d.below[a]++ })
	}
	d.arrival++
	g.queue = append(g.queue, item{ev: ev, arrival: d.arrival})
	d.queued++
	d.startReady(ctx)
	return queued
}

// wakeOnDone makes waiters in Submit notice ctx's end; call it once per
// context that Submit is given.
func (d *dispatcher) wakeOnDone(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() {
		d.mu.Lock()
		d.cond.Broadcast()
		d.mu.Unlock()
	})
}

// startReady starts runnable groups while workers are free. d.mu is held.
func (d *dispatcher) startReady(ctx context.Context) {
	for d.running < d.workers {
		g := d.next()
		if g == nil {
			return
		}
		g.running = true
		d.running++
		it := g.queue[0]
		d.wg.Add(1)
		go d.run(ctx, g, it)
	}
}

// next returns the runnable group whose head arrived first, or nil.
func (d *dispatcher) next() *group {
	var best *group
	for _, g := range d.groups {
		if g.running || len(g.queue) == 0 {
			continue
		}
		if best != nil && g.queue[0].arrival > best.queue[0].arrival {
			continue
		}
		if d.blocked(g) {
			continue
		}
		best = g
	}
	return best
}

// blocked reports whether an ancestor or descendant of g's device has an
// event running or one that arrived before g's head.
func (d *dispatcher) blocked(g *group) bool {
	head := g.queue[0].arrival
	earlier := func(o *group) bool {
		return o.running || len(o.queue) > 0 && o.queue[0].arrival < head
	}
	stop := false
	forAncestors(g.devpath, func(a string) {
		if o := d.groups[a]; !stop && o != nil && earlier(o) {
			stop = true
		}
	})
	if stop {
		return true
	}
	if d.below[g.devpath] > 0 {
		prefix := g.devpath + "/"
		for p, o := range d.groups {
			if strings.HasPrefix(p, prefix) && earlier(o) {
				return true
			}
		}
	}
	return false
}

// run handles it, then keeps going with whatever next() picks while that
// is its own group, saving a goroutine start per event in a burst from one
// device.
func (d *dispatcher) run(ctx context.Context, g *group, it item) {
	defer d.wg.Done()
	for {
		d.handle(ctx, it.ev)
		d.handled.Add(1)
		d.mu.Lock()
		g.queue[0] = item{}
		g.queue = g.queue[1:]
		g.running = false
		d.queued--
		if len(g.queue) == 0 {
			delete(d.groups, g.devpath)
			forAncestors(g.devpath, func(a string) {
				if d.below[a]--; d.below[a] == 0 {
					delete(d.below, a)
				}
			})
		}
		d.cond.Broadcast()
		if !d.closed && d.next() == g {
			g.running = true
			it = g.queue[0]
			d.mu.Unlock()
			continue
		}
		d.running--
		if !d.closed {
			d.startReady(ctx)
		}
		d.mu.Unlock()
		return
	}
}

// beginColdplug starts the window in which a device gets one "add".
func (d *dispatcher) beginColdplug() {
	d.mu.Lock()
	d.adds = make(map[string]uevent.Source)
	d.mu.Unlock()
}

// endColdplug ends that window.
func (d *dispatcher) endColdplug() {
	d.mu.Lock()
	d.adds = nil
	d.mu.Unlock()
}

// pending reports whether devpath has events queued or running.
func (d *dispatcher) pending(devpath string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.groups[devpath] != nil
}

// Drain waits until every queued event has been handled.
func (d *dispatcher) Drain() {
	d.mu.Lock()
	for d.queued > 0 {
		d.cond.Wait()
	}
	d.mu.Unlock()
}

// Close stops intake: queued events that have not started are dropped,
// and Close waits for the running ones to return (their context is the
// caller's to cancel).
func (d *dispatcher) Close() {
	d.mu.Lock()
	d.closed = true
	for _, g := range d.groups {
		if !g.running {
			d.queued -= len(g.queue)
			g.queue = nil
		} else {
			d.queued -= len(g.queue) - 1
			g.queue = g.queue[:1]
		}
	}
	d.cond.Broadcast()
	d.mu.Unlock()
	d.wg.Wait()
}

// Stats returns the counters.
func (d *dispatcher) Stats() DispatchStats {
	d.mu.Lock()
	q := d.queued
	d.mu.Unlock()
	return DispatchStats{
		Submitted:  d.submitted.Load(),
		Handled:    d.handled.Load(),
		Duplicates: d.duplicates.Load(),
		Coalesced:  d.coalesced.Load(),
		Queued:     q,
	}
}

// forAncestors calls f with each proper ancestor of devpath, nearest
// first: "/devices/a/b" gives "/devices/a", then "/devices".
func forAncestors(devpath string, f func(string)) {
	for {
		i := strings.LastIndexByte(devpath, '/')
		if i <= 0 {
			return
		}
		devpath = devpath[:i]
		f(devpath)
	}
}

// seqRing remembers the last len(ring) SEQNUMs to ignore duplicates.
type seqRing struct {
	ring [4096]uint64
	set  map[uint64]struct{}
	pos  int
}

// add records n and reports whether it was new.
func (r *seqRing) add(n uint64) bool {
	if r.set == nil {
		r.set = make(map[uint64]struct{}, len(r.ring))
	}
	if _, dup := r.set[n]; dup {
		return false
	}
	if old := r.ring[r.pos]; old != 0 {
		delete(r.set, old)
	}
	r.ring[r.pos] = n
	r.set[n] = struct{}{}
	r.pos = (r.pos + 1) % len(r.ring)
	return true
}
