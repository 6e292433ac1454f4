package ratelimit

import (
	"fmt"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	l := Limiter{Period: time.Minute, Burst: 2}
	t0 := time.Unix(1000, 0)
	for i, want := range []bool{true, true, false, false, false} {
		if ok, s := l.Allow(t0.Add(time.Duration(i) * time.Second)); ok != want || s != 0 {
			t.Fatalf("call %d: %v %d, want %v 0", i, ok, s, want)
		}
	}
	if ok, s := l.Allow(t0.Add(time.Minute)); !ok || s != 3 {
		t.Errorf("next period: %v, %d suppressed; want true, 3", ok, s)
	}
	if ok, s := l.Allow(t0.Add(time.Minute + time.Second)); !ok || s != 0 {
		t.Errorf("second of the next period: %v %d", ok, s)
	}
}

func TestLimiterZero(t *testing.T) {
	var l Limiter
	now := time.Unix(5, 0)
	if ok, _ := l.Allow(now); !ok {
		t.Fatal("first call refused")
	}
	if ok, _ := l.Allow(now.Add(time.Millisecond)); ok {
		t.Error("zero value let two through in one second")
	}
}

func TestKeyed(t *testing.T) {
	k := Keyed{Period: time.Minute, Burst: 1}
	now := time.Unix(7, 0)
	if ok, _ := k.Allow("a", now); !ok {
		t.Fatal("a refused")
	}
	if ok, _ := k.Allow("b", now); !ok {
		t.Error("b refused because of a")
	}
	if ok, _ := k.Allow("a", now); ok {
		t.Error("a let through twice")
	}
	for i := range maxKeys + 1 {
		k.Allow(string(rune('A'+i%26))+time.Duration(i).String(), now)
	}
	if len(k.keys) > maxKeys {
		t.Errorf("%d keys kept, bound %d", len(k.keys), maxKeys)
	}
}

// TestLimiterBurstPerSecond: the listener's drop log, ten a second.
func TestLimiterBurstPerSecond(t *testing.T) {
	l := Limiter{Period: time.Second, Burst: 2}
	t0 := time.Unix(1000, 0)
	var got []string
	for _, at := range []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 300 * time.Millisecond, time.Second, 1100 * time.Millisecond} {
		ok, suppressed := l.Allow(t0.Add(at))
		got = append(got, fmt.Sprintf("%v/%d", ok, suppressed))
	}
	want := "[true/0 true/0 false/0 false/0 true/2 true/0]"
	if fmt.Sprint(got) != want {
		t.Errorf("Allow: %v, want %s", got, want)
	}
}
