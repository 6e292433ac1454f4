package daemon

import (
	"context"
	"strings"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// lockTree orders events by devpath with hierarchical locks: an event asks
// for its own devpath's lock exclusively (x) and for each ancestor's as an
// intention (ix). x excludes everything and ix only x, so an event of a
// parent excludes its whole subtree while siblings share their parent.
// A lock grants in arrival order, a later request never passing an earlier
// one that waits. So an event gets all its locks once every related event
// that arrived before it is done, as the two meet on the nearer devpath's
// lock and one of them asks it for x; and no later, as unrelated events
// meet only on common ancestors, where both ask for ix.
//
// An event's requests are all queued when it arrives, so each lock's FIFO
// is in arrival order and an event only ever waits for earlier ones: no
// deadlock. A request is granted once, on arrival or when a holder leaves,
// so an event costs O(depth of its devpath) however many are queued.
//
// Only some locks exist: those of devpaths with events, and those where
// the devpaths of queued events branch off, which hold the tree together.
// Any other ancestor's lock would only be asked for ix, by the events
// below it, and grant each at once: it could make no one wait. When such
// a devpath gets an event or becomes a branch, its lock is made with ix
// granted to each event below it (each holds or waits for the lock of the
// one node below). So a coldplug of distinct devices makes about one lock
// per device, not one per level of its devpath.
type lockTree struct {
	root  node        // devpath "", the top of the tree; never locked
	ready ring[*task] // events holding all their locks, not started

	// Retired nodes and tasks are kept for reuse, up to keep of each:
	// allocating and collecting them took a third of the time of a
	// burst, which makes one task and a node or two per event.
	spareNodes []*node
	spareTasks []*task
	keep       int
}

// task is one queued event.
type task struct {
	ctx     context.Context // Submit's, handed to the handler
	ev      *uevent.Event
	leaf    *node // the lock of ev.DevPath; its parents are the ancestors'
	waiting int   // requests not granted yet; at 0 the event may start
}

// node is the lock of one devpath.
type node struct {
	path   string
	key    string // in the parent's kids
	parent *node  // the nearest ancestor's lock, or the root
	kids   kids
	x, ix  int // granted requests; x is 0 or 1 except while Close drops
	own    int // events of this very devpath, granted or waiting
	wait   ring[request]
}

type request struct {
	t *task
	x bool
}

// free reports whether a request for x (or ix) fits the granted ones.
func (n *node) free(x bool) bool {
	return n.x == 0 && (!x || n.ix == 0)
}

func (n *node) take(x bool) {
	if x {
		n.x++
	} else {
		n.ix++
	}
}

func (n *node) idle() bool {
	return n.x == 0 && n.ix == 0 && n.wait.len() == 0
}

// newTask returns a task for ev, reused if one is spare.
func (l *lockTree) newTask(ctx context.Context, ev *uevent.Event) *task {
	k := len(l.spareTasks)
	if k == 0 {
		return &task{ctx: ctx, ev: ev}
	}
	t := l.spareTasks[k-1]
	l.spareTasks = l.spareTasks[:k-1]
	t.ctx, t.ev = ctx, ev
	return t
}

// retire takes back t, done and released.
func (l *lockTree) retire(t *task) {
	if len(l.spareTasks) < l.keep {
		*t = task{}
		l.spareTasks = append(l.spareTasks, t)
	}
}

// newNode returns an unlinked node for devpath, reused if one is spare.
func (l *lockTree) newNode(devpath string) *node {
	k := len(l.spareNodes)
	if k == 0 {
		return &node{path: devpath}
	}
	n := l.spareNodes[k-1]
	l.spareNodes = l.spareNodes[:k-1]
	n.path = devpath
	return n
}

// forget unlinks n, which is idle, and keeps it for reuse. Its wait
// buffer stays, unless a storm made it large.
func (l *lockTree) forget(n *node) {
	n.parent.kids.remove(n)
	if len(l.spareNodes) < l.keep {
		buf := n.wait.buf
		if len(buf) > 16 {
			buf = nil
		}
		*n = node{wait: ring[request]{buf: buf}}
		l.spareNodes = append(l.spareNodes, n)
	}
}

// acquire queues t's requests, granting at once each that fits the held
// locks and has nobody waiting before it.
func (l *lockTree) acquire(t *task) {
	t.leaf = l.node(t.ev.DevPath)
	t.leaf.own++
	for n, x := t.leaf, true; n.parent != nil; n, x = n.parent, false {
		if n.wait.len() == 0 && n.free(x) {
			n.take(x)
		} else {
			n.wait.push(request{t: t, x: x})
			t.waiting++
		}
	}
	if t.waiting == 0 {
		l.ready.push(t)
	}
}

// release gives up t's locks, granting the waiters what now fits and
// forgetting the locks nobody holds or wants. The nodes are those above
// t.leaf now: some may have been made since t arrived, with a request of
// t's granted.
func (l *lockTree) release(t *task) {
	t.leaf.own--
	x := true
	for n := t.leaf; n.parent != nil; x = false {
		if x {
			n.x--
		} else {
			n.ix--
		}
		l.grant(n)
		up := n.parent
		if n.idle() {
			l.forget(n)
		}
		n = up
	}
}

// grant grants n's waiters from the head while they fit: a run of ix, or
// one x. An event granted its last lock is ready.
func (l *lockTree) grant(n *node) {
	for n.wait.len() > 0 && n.free(n.wait.peek().x) {
		r, _ := n.wait.pop()
		n.take(r.x)
		if r.t.waiting--; r.t.waiting == 0 {
			l.ready.push(r.t)
		}
	}
}

// drop forgets the events that have not started and returns how many. A
// waiting request is taken as granted first, so that release undoes every
// request of a dropped event alike.
func (l *lockTree) drop() int {
	var dropped []*task
	for t, ok := l.ready.pop(); ok; t, ok = l.ready.pop() {
		dropped = append(dropped, t)
	}
	l.root.walk(func(n *node) {
		for r, ok := n.wait.pop(); ok; r, ok = n.wait.pop() {
			n.take(r.x)
			if r.t.waiting--; r.t.waiting == 0 {
				dropped = append(dropped, r.t)
			}
		}
	})
	for _, t := range dropped {
		l.release(t)
		l.retire(t)
	}
	return len(dropped)
}

// walk calls f with every node below n.
func (n *node) walk(f func(*node)) {
	n.kids.each(func(c *node) {
		f(c)
		c.walk(f)
	})
}

// node returns the lock of devpath, making it, and the lock where it
// branches off another queued devpath, if missing.
func (l *lockTree) node(devpath string) *node {
	at := &l.root
	for {
		key := devpath[len(at.path):nextCut(devpath, len(at.path))]
		n := at.kids.get(key)
		switch {
		case n == nil:
			return at.adopt(key, l.newNode(devpath))
		case within(devpath, n.path):
			if len(n.path) == len(devpath) {
				return n
			}
			at = n
		default:
			at = l.split(at, n, commonCut(devpath, n.path))
			if len(at.path) == len(devpath) {
				return at
			}
		}
	}
}

// lookup returns the lock of devpath, or nil.
func (l *lockTree) lookup(devpath string) *node {
	at := &l.root
	for {
		n := at.kids.get(devpath[len(at.path):nextCut(devpath, len(at.path))])
		if n == nil || !within(devpath, n.path) {
			return nil
		}
		if len(n.path) == len(devpath) {
			return n
		}
		at = n
	}
}

// adopt makes n the child of at under key.
func (at *node) adopt(key string, n *node) *node {
	n.key, n.parent = key, at
	at.kids.set(n)
	return n
}

// split puts the lock of n.path[:m] between at and its child n. Every
// request n has is from an event below the new lock, which is made with
// an ix granted to each.
func (l *lockTree) split(at, n *node, m int) *node {
	mid := at.adopt(n.key, l.newNode(n.path[:m]))
	mid.ix = n.x + n.ix + n.wait.len()
	mid.adopt(n.path[m:nextCut(n.path, m)], n)
	return mid
}

// kids are the children of a node by key: the rest of their devpath's
// next component, its '/' included. Most nodes have one child or none,
// so a map is made only for the second: one per node was the largest
// allocation of the dispatcher.
type kids struct {
	one  *node
	many map[string]*node
}

func (k *kids) get(key string) *node {
	if k.many != nil {
		return k.many[key]
	}
	if k.one != nil && k.one.key == key {
		return k.one
	}
	return nil
}

// set adds n, replacing the child with its key.
func (k *kids) set(n *node) {
	switch {
	case k.many != nil:
		k.many[n.key] = n
	case k.one == nil || k.one.key == n.key:
		k.one = n
	default:
		k.many = map[string]*node{k.one.key: k.one, n.key: n}
		k.one = nil
	}
}

func (k *kids) remove(n *node) {
	if k.many != nil {
		delete(k.many, n.key)
	} else if k.one == n {
		k.one = nil
	}
}

func (k *kids) each(f func(*node)) {
	if k.one != nil {
		f(k.one)
	}
	for _, n := range k.many {
		f(n)
	}
}

// The ancestors of a devpath are its prefixes that end before a '/' other
// than the first byte: "/devices/a/b" has "/devices/a" and "/devices" (the
// rule of the kernel's kobject paths). The ends of those prefixes and of
// the devpath itself are its cuts.

// nextCut returns devpath's first cut after i.
func nextCut(devpath string, i int) int {
	if i >= len(devpath) {
		return len(devpath)
	}
	if j := strings.IndexByte(devpath[i+1:], '/'); j >= 0 {
		return i + 1 + j
	}
	return len(devpath)
}

// within reports whether devpath is p or below it.
func within(devpath, p string) bool {
	return strings.HasPrefix(devpath, p) && (len(devpath) == len(p) || p != "" && devpath[len(p)] == '/')
}

// commonCut returns the last cut that a and b share: the length of their
// nearest common ancestor, or of the one that is the other's ancestor.
func commonCut(a, b string) int {
	i := 0
	for i < len(a) && i < len(b) && a[i] == b[i] {
		i++
	}
	if (i == len(a) || a[i] == '/') && (i == len(b) || b[i] == '/') {
		return i
	}
	return strings.LastIndexByte(a[:i], '/')
}

// ring is a FIFO on a circular buffer, reused as it fills and empties,
// so a steady stream of events allocates nothing.
type ring[T any] struct {
	buf     []T // its length is 0 or a power of two
	head, n int
}

func (r *ring[T]) len() int { return r.n }

func (r *ring[T]) push(v T) {
	if r.n == len(r.buf) {
		buf := make([]T, max(4, 2*len(r.buf)))
		k := copy(buf, r.buf[r.head:])
		copy(buf[k:], r.buf[:r.head])
		r.buf, r.head = buf, 0
	}
	r.buf[(r.head+r.n)&(len(r.buf)-1)] = v
	r.n++
}

// peek returns the head; the ring must not be empty.
func (r *ring[T]) peek() T { return r.buf[r.head] }

func (r *ring[T]) pop() (T, bool) {
	var zero T
	if r.n == 0 {
		return zero, false
	}
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	return v, true
}
