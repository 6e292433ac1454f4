// Package ratelimit keeps a log from flooding: a device that fails on
// every event, a rule that errs on every event of a storm, a sender that
// forges thousands of messages. A Limiter lets a burst of lines through
// per period and counts the rest, so the next line let through can say
// how many were suppressed.
package ratelimit

import (
	"sync"
	"time"
)

// Limiter lets Burst calls of Allow succeed per Period. It is safe for
// concurrent use; the zero value lets one call through per second.
type Limiter struct {
	Period time.Duration
	Burst  int

	mu         sync.Mutex
	start      time.Time
	n          int
	suppressed uint64
}

// Allow reports whether to log now and, when it does, how many lines
// were suppressed since the last one it let through.
func (l *Limiter) Allow(now time.Time) (ok bool, suppressed uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	period, burst := l.Period, l.Burst
	if period <= 0 {
		period = time.Second
	}
	if burst <= 0 {
		burst = 1
	}
	if l.start.IsZero() || now.Sub(l.start) >= period {
		l.start, l.n = now, 0
	}
	if l.n >= burst {
		l.suppressed++
		return false, 0
	}
	l.n++
	suppressed, l.suppressed = l.suppressed, 0
	return true, suppressed
}

// maxKeys bounds a Keyed: past it, every key starts afresh.
const maxKeys = 4096

// Keyed is a Limiter per key (a device and a rule, say), created when
// the key is first seen. It is safe for concurrent use.
type Keyed struct {
	Period time.Duration
	Burst  int

	mu   sync.Mutex
	keys map[string]*Limiter
}

// Allow is Limiter.Allow for key.
func (k *Keyed) Allow(key string, now time.Time) (ok bool, suppressed uint64) {
	k.mu.Lock()
	l := k.keys[key]
	if l == nil {
		if k.keys == nil || len(k.keys) >= maxKeys {
			k.keys = make(map[string]*Limiter)
		}
		l = &Limiter{Period: k.Period, Burst: k.Burst}
		k.keys[key] = l
	}
	k.mu.Unlock()
	return l.Allow(now)
}
