package daemon

import (
	"context"
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
// The order is kept by a lockTree, in which starting an event costs
// O(depth of its devpath) however many devices are queued.
//
// The queue is bounded: Submit blocks while it is full, so the listener
// stops reading and the kernel's socket buffer takes the burst instead of
// anything being dropped here.
type dispatcher struct {
	handle  func(context.Context, *uevent.Event)
	workers int
	max     int

	mu      sync.Mutex
	cond    *sync.Cond // signalled when the queue gets room, empties or closes
	locks   lockTree
	queued  int // events waiting or running
	running int // worker goroutines
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

func newDispatcher(workers, max int, handle func(context.Context, *uevent.Event)) *dispatcher {
	d := &dispatcher{
		handle:  handle,
		workers: max1(workers),
		max:     max1(max),
	}
	d.cond = sync.NewCond(&d.mu)
	d.locks.keep = d.max
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
// dispatcher closes or ctx ends (see wakeOnDone). The handler gets ctx.
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
	if d.coalesce(ev) {
		d.coalesced.Add(1)
		return coalesced
	}
	d.queued++
	d.locks.acquire(d.locks.newTask(ctx, ev))
	d.startWorkers()
	return queued
}

// coalesce reports whether ev is the second "add" of a coldplug/live
// pair, and records it if not. d.mu is held.
func (d *dispatcher) coalesce(ev *uevent.Event) bool {
	if d.adds == nil {
		return false
	}
	switch ev.Action {
	case "add":
		prev, seen := d.adds[ev.DevPath]
		if seen && (prev == uevent.SourceColdplug) != (ev.Source == uevent.SourceColdplug) {
			delete(d.adds, ev.DevPath)
			return true
		}
		d.adds[ev.DevPath] = ev.Source
	case "remove":
		delete(d.adds, ev.DevPath)
	}
	return false
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

// startWorkers starts a goroutine per ready event while workers are free.
// Workers run until nothing is ready, so a burst costs a goroutine start
// per worker, not per event. d.mu is held.
func (d *dispatcher) startWorkers() {
	for d.running < d.workers {
		t, ok := d.locks.ready.pop()
		if !ok {
			return
		}
		d.running++
		d.wg.Add(1)
		go d.work(t)
	}
}

// work handles t, then whatever is ready next.
func (d *dispatcher) work(t *task) {
	defer d.wg.Done()
	for t != nil {
		d.handle(t.ctx, t.ev)
		d.handled.Add(1)
		d.mu.Lock()
		t = d.finish(t)
		d.mu.Unlock()
	}
}

// finish retires t and returns the worker's next event, or nil when
// nothing is ready and the worker ends. d.mu is held.
func (d *dispatcher) finish(t *task) *task {
	d.locks.release(t)
	d.locks.retire(t)
	// Only these changes let a waiter in Submit or Drain go on.
	if d.queued == d.max || d.queued == 1 {
		d.cond.Broadcast()
	}
	d.queued--
	next, ok := d.locks.ready.pop()
	if !ok {
		d.running--
		return nil
	}
	d.startWorkers()
	return next
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
	n := d.locks.lookup(devpath)
	return n != nil && n.own > 0
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
	d.queued -= d.locks.drop()
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

// seqRing remembers the last len(ring) SEQNUMs to ignore duplicates. The
// set is an open-addressing table twice the ring's size that deletes by
// shifting back: a map, under an insertion and a deletion per event,
// fills with tombstones and costs several times more.
type seqRing struct {
	ring [4096]uint64
	set  [1 << seqBits]uint64 // 0 is an empty slot
	pos  int
}

const seqBits = 13

// add records n, which is not 0, and reports whether it was new.
func (r *seqRing) add(n uint64) bool {
	if r.set[r.find(n)] == n {
		return false
	}
	if old := r.ring[r.pos]; old != 0 {
		r.remove(old)
	}
	r.set[r.find(n)] = n
	r.ring[r.pos] = n
	r.pos = (r.pos + 1) % len(r.ring)
	return true
}

// home is n's first slot: Fibonacci hashing spreads runs of SEQNUMs.
func (r *seqRing) home(n uint64) int {
	return int(n * 0x9e3779b97f4a7c15 >> (64 - seqBits))
}

// find returns the slot of n, or the empty one where it would go.
func (r *seqRing) find(n uint64) int {
	i := r.home(n)
	for r.set[i] != 0 && r.set[i] != n {
		i = (i + 1) % len(r.set)
	}
	return i
}

// remove deletes n, which is in the set, moving back the entries after it
// that would no longer be found past the hole.
func (r *seqRing) remove(n uint64) {
	hole := r.find(n)
	for i := (hole + 1) % len(r.set); r.set[i] != 0; i = (i + 1) % len(r.set) {
		// The entry at i stays if its home is cyclically in (hole, i].
		if h := r.home(r.set[i]); (i-h+len(r.set))%len(r.set) < (i-hole+len(r.set))%len(r.set) {
			continue
		}
		r.set[hole] = r.set[i]
		hole = i
	}
	r.set[hole] = 0
}
