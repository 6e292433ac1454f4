package device

import (
	"container/list"
	"maps"
	"slices"
	"sync"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// record is what the database knows about one device.
type record struct {
	devpath      string
	props        []uevent.Property
	fs           uevent.FS
	fsKnown      bool
	attr         map[string]attrVal
	attrs        map[string]attrVal
	parents      []parent
	parentsKnown bool
}

// update is what one event read, for merge.
type update struct {
	fs           uevent.FS
	fsKnown      bool
	attr, attrs  map[string]attrVal
	parents      []parent
	parentsKnown bool
}

// db maps devpath to record, keeping at most max records and evicting
// the least recently used. Records are only touched under mu; take hands
// one out of the map, after which its taker owns it.
type db struct {
	mu        sync.Mutex
	max       int
	byPath    map[string]*list.Element // of *record
	lru       list.List                // front: most recently used
	evictions uint64
}

func (b *db) init(max int) {
	b.max = max
	b.byPath = make(map[string]*list.Element)
}

// get returns the record of devpath, creating it, and marks it used.
func (b *db) get(devpath string) *record {
	if e, ok := b.byPath[devpath]; ok {
		b.lru.MoveToFront(e)
		return e.Value.(*record)
	}
	r := &record{devpath: devpath}
	b.byPath[devpath] = b.lru.PushFront(r)
	for b.lru.Len() > b.max {
		old := b.victim()
		b.lru.Remove(old)
		delete(b.byPath, old.Value.(*record).devpath)
		b.evictions++
	}
	return r
}

// victim is the record to evict: the least recently used one that is not
// a block device, among the oldest few, else the least recently used.
// Block devices are what remove rules (fs.*) and unmounting care about;
// a large machine's CPUs and memory blocks should go first. The
// newest record, just made, is never its own victim.
func (b *db) victim() *list.Element {
	e := b.lru.Back()
	for i := 0; i < 64 && e != nil && e != b.lru.Front(); i, e = i+1, e.Prev() {
		if !isBlock(e.Value.(*record).props) {
			return e
		}
	}
	return b.lru.Back()
}

func isBlock(props []uevent.Property) bool {
	for _, p := range props {
		if p.Key == "SUBSYSTEM" {
			return p.Value == "block"
		}
	}
	return false
}

// replace forgets what was known about devpath and starts over with props.
func (b *db) replace(devpath string, props []uevent.Property) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.get(devpath)
	*r = record{devpath: devpath, props: props}
}

// update sets the properties of devpath, keeping what was read before.
func (b *db) update(devpath string, props []uevent.Property) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.get(devpath).props = props
}

// rename moves the record of old to devpath (a move event).
func (b *db) rename(old, devpath string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.byPath[old]
	if !ok || old == devpath {
		return
	}
	if prev, ok := b.byPath[devpath]; ok {
		b.lru.Remove(prev)
	}
	delete(b.byPath, old)
	r := e.Value.(*record)
	r.devpath = devpath
	b.byPath[devpath] = e
	b.lru.MoveToFront(e)
}

// merge records what an event read. Newer answers replace older ones;
// what this event did not ask about is kept.
func (b *db) merge(devpath string, props []uevent.Property, u update) {
	b.mu.Lock()
	defer b.mu.Unlock()
	r := b.get(devpath)
	r.props = slices.Clone(props)
	if u.fsKnown {
		r.fs, r.fsKnown = u.fs, true
	}
	if len(u.attr) > 0 {
		if r.attr == nil {
			r.attr = make(map[string]attrVal, len(u.attr))
		}
		maps.Copy(r.attr, u.attr)
	}
	if len(u.attrs) > 0 {
		if r.attrs == nil {
			r.attrs = make(map[string]attrVal, len(u.attrs))
		}
		maps.Copy(r.attrs, u.attrs)
	}
	if u.parentsKnown {
		r.parents = make([]parent, len(u.parents))
		for i, p := range u.parents {
			r.parents[i] = parent{level: -1, subsystem: p.subsystem, devtype: p.devtype}
		}
		r.parentsKnown = true
	}
}

// take removes devpath's record and returns it, or nil.
func (b *db) take(devpath string) *record {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.byPath[devpath]
	if !ok {
		return nil
	}
	b.lru.Remove(e)
	delete(b.byPath, devpath)
	return e.Value.(*record)
}

func (b *db) stats() (int, uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.byPath), b.evictions
}

// props returns a copy of devpath's recorded properties, if any, without
// marking the record used.
func (b *db) props(devpath string) ([]uevent.Property, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, ok := b.byPath[devpath]
	if !ok {
		return nil, false
	}
	return slices.Clone(e.Value.(*record).props), true
}
