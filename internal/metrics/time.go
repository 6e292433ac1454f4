package metrics

import (
	"sync/atomic"
	"time"
)

// atomicTime is a time stored as Unix nanoseconds; zero is no time.
type atomicTime struct{ ns atomic.Int64 }

func (t *atomicTime) store(v time.Time) { t.ns.Store(v.UnixNano()) }

func (t *atomicTime) load() time.Time {
	n := t.ns.Load()
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}
