package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/listener"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

func TestTriggerDryRun(t *testing.T) {
	_, err := os.Stat(loUevent)
	need(t, err == nil, "%s: %v", loUevent, err)
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"trigger", "--subsystem", "net", "--dry-run"}, &out, &errb); err != nil {
		t.Fatalf("trigger --dry-run: %v; stderr %s", err, errb.String())
	}
	if !strings.Contains(out.String(), "/devices/virtual/net/lo (net)\n") {
		t.Errorf("dry run does not list lo:\n%s", out.String())
	}
	if strings.Contains(out.String(), "(block)") {
		t.Errorf("dry run for net lists block devices:\n%s", out.String())
	}
}

func TestTriggerFlags(t *testing.T) {
	var errb bytes.Buffer
	err := run(context.Background(), []string{"trigger", "--subsystem", "net", "--action", "explode"}, &bytes.Buffer{}, &errb)
	need(t, os.Geteuid() == 0, "root")
	if err == nil || !strings.Contains(errb.String(), `unknown action "explode"`) {
		t.Errorf("bad action: err %v, stderr %q", err, errb.String())
	}
	if err := run(context.Background(), []string{"trigger", "extra"}, &bytes.Buffer{}, &errb); err != exitError(2) {
		t.Errorf("extra argument: %v", err)
	}
}

// TestTriggerEmitsRealEvents: the kernel re-emits "change" for lo, and
// the listener receives it.
func TestTriggerEmitsRealEvents(t *testing.T) {
	need(t, os.Geteuid() == 0, "root")
	l, err := listener.New(listener.Config{Source: "kernel"}, nil)
	need(t, err == nil, "netlink socket: %v", err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan uevent.Event, 64)
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, eventsTo(got)) }()

	var out, errb bytes.Buffer
	if err := run(ctx, []string{"trigger", "--subsystem", "net", "--action", "change"}, &out, &errb); err != nil {
		t.Fatalf("trigger: %v; stderr %s", err, errb.String())
	}
	if !strings.Contains(out.String(), `triggered "change" for`) {
		t.Errorf("output %q", out.String())
	}
	for {
		select {
		case ev := <-got:
			if ev.DevPath == "/devices/virtual/net/lo" && ev.Action == "change" && ev.Get("SYNTH_UUID") == "0" {
				cancel()
				<-done
				return
			}
		case <-ctx.Done():
			t.Fatal("no change event for lo after trigger")
		}
	}
}

type eventsTo chan uevent.Event

func (c eventsTo) Event(ev uevent.Event) {
	select {
	case c <- ev:
	default:
	}
}

func (eventsTo) Overrun() {}
