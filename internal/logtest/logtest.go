// Package logtest is a slog handler for tests: it keeps every record for
// inspection and writes each to t.Log.
package logtest

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Record is one log record.
type Record struct {
	Level slog.Level
	Msg   string
	Attrs map[string]slog.Value
}

// Str is the value of attribute key as a string, "" when absent.
func (r Record) Str(key string) string {
	v, ok := r.Attrs[key]
	if !ok {
		return ""
	}
	return v.Resolve().String()
}

// New returns a logger that records everything, and a function returning
// the records so far.
func New(t testing.TB) (*slog.Logger, func() []Record) {
	h := handler{t: t, mu: new(sync.Mutex), recs: new([]Record)}
	return slog.New(h), func() []Record {
		h.mu.Lock()
		defer h.mu.Unlock()
		return slices.Clone(*h.recs)
	}
}

type handler struct {
	t    testing.TB
	mu   *sync.Mutex
	recs *[]Record
}

func (h handler) Enabled(context.Context, slog.Level) bool { return true }
func (h handler) WithAttrs([]slog.Attr) slog.Handler       { panic("logtest: WithAttrs not supported") }
func (h handler) WithGroup(string) slog.Handler            { panic("logtest: WithGroup not supported") }

func (h handler) Handle(_ context.Context, r slog.Record) error {
	rec := Record{Level: r.Level, Msg: r.Message, Attrs: map[string]slog.Value{}}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %q", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs[a.Key] = a.Value
		fmt.Fprintf(&b, " %s=%q", a.Key, a.Value.String())
		return true
	})
	h.mu.Lock()
	*h.recs = append(*h.recs, rec)
	h.mu.Unlock()
	h.t.Log(b.String())
	return nil
}
