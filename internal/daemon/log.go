package daemon

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
)

// NewLogger logs to the journal's native protocol when stderr is connected
// to the journal (systemd sets JOURNAL_STREAM), so fields stay separate and
// priorities are kept; otherwise as text lines on stderr. The level can be
// changed later through lv (a reload may change log_level).
func NewLogger(stderr io.Writer, lv *slog.LevelVar) *slog.Logger {
	if ok, _ := journal.StderrIsJournalStream(); ok && journal.Enabled() {
		return slog.New(newJournalHandler(lv, journal.Send))
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
}

// journalHandler sends each record as one journal entry: MESSAGE is the
// record in logfmt (so `journalctl` shows everything), PRIORITY follows the
// level, and every attribute is also a field of its own (RULE=, DEVPATH=),
// for `journalctl RULE=usb-automount`.
type journalHandler struct {
	level  slog.Leveler
	send   func(string, journal.Priority, map[string]string) error
	fields map[string]string // from WithAttrs, already named
	group  string

	mu  *sync.Mutex
	buf *bytes.Buffer
	txt slog.Handler
}

func newJournalHandler(level slog.Leveler, send func(string, journal.Priority, map[string]string) error) *journalHandler {
	h := &journalHandler{level: level, send: send, mu: new(sync.Mutex), buf: new(bytes.Buffer)}
	h.txt = slog.NewTextHandler(h.buf, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && (a.Key == slog.TimeKey || a.Key == slog.LevelKey) {
				return slog.Attr{} // the journal has both already
			}
			return a
		},
	})
	return h
}

func (h *journalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": "hotplugd"}
	for k, v := range h.fields {
		vars[k] = v
	}
	r.Attrs(func(a slog.Attr) bool {
		if k := journalField(h.group, a.Key); k != "" {
			vars[k] = a.Value.Resolve().String()
		}
		return true
	})

	h.mu.Lock()
	h.buf.Reset()
	err := h.txt.Handle(ctx, r)
	msg := strings.TrimSuffix(h.buf.String(), "\n")
	h.mu.Unlock()
	if err != nil {
		return err
	}
	return h.send(msg, priority(r.Level), vars)
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.fields = make(map[string]string, len(h.fields)+len(as))
	for k, v := range h.fields {
		c.fields[k] = v
	}
	for _, a := range as {
		if k := journalField(h.group, a.Key); k != "" {
			c.fields[k] = a.Value.Resolve().String()
		}
	}
	c.txt = h.txt.WithAttrs(as)
	return &c
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	c := *h
	if c.group != "" {
		name = c.group + "_" + name
	}
	c.group = name
	c.txt = h.txt.WithGroup(name)
	return &c
}

// journalField makes an attribute key into a journal field name: upper
// case letters, digits and '_', not starting with '_' (those are trusted
// fields journald sets itself) or a digit. Keys that are left empty are
// skipped.
func journalField(group, key string) string {
	if group != "" {
		key = group + "_" + key
	}
	var b strings.Builder
	for _, c := range strings.ToUpper(key) {
		switch {
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9' && b.Len() > 0:
			b.WriteRune(c)
		case b.Len() > 0:
			b.WriteByte('_')
		}
	}
	f := strings.TrimRight(b.String(), "_")
	switch f {
	case "", "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER":
		return ""
	}
	return f
}

func priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}
