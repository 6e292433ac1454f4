package daemon

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"

	"github.com/hotplugd/hotplugd/internal/actions"
	"github.com/hotplugd/hotplugd/internal/device"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// TestResync: after an overrun, devices of /sys nothing was heard of get
// an "add", devices heard of that are gone get a "remove" (also when the
// device database no longer holds them), and the rest get nothing; all
// with source "resync".
func TestResync(t *testing.T) {
	_, err := os.Stat("/sys/devices/virtual/mem/null/uevent")
	need(t, err == nil, "/sys with /devices/virtual/mem/null: %v", err)
	devs, err := device.New(device.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer devs.Close()
	var mu sync.Mutex
	got := map[string]string{} // devpath → action
	d := &daemon{
		log:     slog.New(slog.DiscardHandler),
		devs:    devs,
		deps:    &actions.Deps{},
		present: map[string]string{},
	}
	d.disp = newDispatcher(2, 64, func(_ context.Context, ev *uevent.Event) {
		if ev.Source != uevent.SourceResync {
			t.Errorf("%s %s has source %q", ev.Action, ev.DevPath, ev.Source)
		}
		mu.Lock()
		got[ev.DevPath] = ev.Action
		mu.Unlock()
	})
	lo := &uevent.Event{Action: "add", DevPath: "/devices/virtual/net/lo", Subsystem: "net"}
	gone := &uevent.Event{Action: "add", DevPath: "/devices/virtual/block/hotplugd-gone", Subsystem: "block"}
	d.notePresence(lo)
	d.notePresence(gone)

	d.resync(context.Background())
	d.disp.Drain()
	d.disp.Close()

	if a, ok := got[gone.DevPath]; a != "remove" {
		t.Errorf("vanished device: %q (handled %v), want remove", a, ok)
	}
	if a, ok := got[lo.DevPath]; ok {
		t.Errorf("lo, known and present, got %q", a)
	}
	if a := got["/devices/virtual/mem/null"]; a != "add" {
		t.Errorf("/dev/null's device, present and never heard of, got %q, want add", a)
	}
	if d.resyncs.Load() != 1 {
		t.Errorf("resyncs = %d", d.resyncs.Load())
	}
}
