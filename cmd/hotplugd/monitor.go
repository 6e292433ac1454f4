package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hotplugd/hotplugd/internal/device"
	"github.com/hotplugd/hotplugd/internal/listener"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// runMonitor prints live uevents like `udevadm monitor --property`, or as
// one JSON object a line, until ctx is cancelled; then one summary line of
// the listener's counters on stderr.
func runMonitor(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("monitor", "monitor [--json [--walk]] [--source kernel|udev|auto|route] [--subsystem S]",
		"Print live uevents like udevadm monitor --property, or one JSON object\n"+
			"a line; on exit, a summary of what was received and dropped. With --walk,\n"+
			"each line is a recording for hotplugd test --replay.", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object per event and line")
	walk := fs.Bool("walk", false, "with --json, add to each event what rules read of its device: its filesystem\n(fs, probed with blkid) and its attribute walk (walk: the device and each parent)")
	source := fs.String("source", "kernel", "`kernel`, udev, auto (udev when udevd runs) or route (network links and addresses)")
	subsystem := fs.String("subsystem", "", "print only events of this `subsystem`")
	if _, exit, ok := parseFlags(fs, args, false); !ok {
		return exit
	}
	if *walk && !*asJSON {
		fmt.Fprintln(stderr, "hotplugd monitor: --walk needs --json")
		fs.Usage()
		return exitError(2)
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := &printer{
		w:         bufio.NewWriter(stdout),
		json:      *asJSON,
		subsystem: *subsystem,
		ctx:       ctx,
		cancel:    cancel,
	}
	if *walk {
		devs, err := device.New(device.Config{Logger: log})
		if err != nil {
			return err
		}
		defer devs.Close()
		p.devs = devs
	}
	filter := ""
	if p.subsystem != "" {
		filter = ", subsystem " + strconv.Quote(p.subsystem)
	}
	if *source == "route" {
		return monitorRoute(ctx, p, filter, stderr, log)
	}
	l, err := listener.New(listener.Config{Source: *source}, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "hotplugd monitor: listening to %s uevents%s\n", l.Source(), filter)

	err = l.Run(ctx, p)
	s := l.Stats()
	fmt.Fprintf(stderr, "hotplugd monitor: received=%d accepted=%d printed=%d dropped_truncated=%d dropped_sender=%d dropped_creds=%d dropped_udev_header=%d dropped_parse=%d overruns=%d\n",
		s.Received, s.Accepted, p.printed, s.DroppedTruncated, s.DroppedSender, s.DroppedCreds, s.DroppedUdevHeader, s.DroppedParse, s.Overruns)
	if err != nil {
		return err
	}
	if p.err != nil {
		return fmt.Errorf("monitor: write: %w", p.err)
	}
	return nil
}

// printer is the monitor's listener.Handler.
type printer struct {
	w         *bufio.Writer
	json      bool
	subsystem string
	devs      *device.Manager // with --walk: records each event's device
	ctx       context.Context
	cancel    context.CancelFunc
	printed   uint64
	err       error
}

func (p *printer) Event(ev uevent.Event) {
	if p.err != nil || (p.subsystem != "" && ev.Subsystem != p.subsystem) {
		return
	}
	if p.json {
		var v any = ev
		if p.devs != nil {
			v = p.devs.Record(p.ctx, ev)
		}
		b, err := json.Marshal(v)
		if err != nil {
			p.fail(err)
			return
		}
		p.w.Write(b)
		p.w.WriteByte('\n')
	} else {
		writeText(p.w, ev, time.Now())
	}
	// Flushed per event: a monitor is watched live.
	if err := p.w.Flush(); err != nil {
		p.fail(err)
		return
	}
	p.printed++
}

// Overrun needs nothing here: the listener logs it and counts it for the
// summary.
func (p *printer) Overrun() {}

func (p *printer) fail(err error) {
	p.err = err
	p.cancel()
}

// writeText writes ev in the format of `udevadm monitor --property`:
//
//	KERNEL[1764234611.123456] change   /devices/virtual/net/lo (net)
//	ACTION=change
//	...
//
// followed by a blank line. The time is the Unix time of reception (udevadm
// prints CLOCK_MONOTONIC instead). Device strings are escaped by quote.
func writeText(w *bufio.Writer, ev uevent.Event, now time.Time) {
	us := now.UnixMicro()
	fmt.Fprintf(w, "%-6s[%d.%06d] %-8s %s (%s)\n", strings.ToUpper(string(ev.Source)),
		us/1e6, us%1e6, quote(ev.Action), quote(ev.DevPath), quote(ev.Subsystem))
	for _, p := range ev.Props {
		w.WriteString(quote(p.Key))
		w.WriteByte('=')
		w.WriteString(quote(p.Value))
		w.WriteByte('\n')
	}
	w.WriteByte('\n')
}

// quote returns s unchanged when it is valid UTF-8 of printable characters
// (spaces included) and does not start with a double quote; otherwise the
// strconv.Quote form, so that control characters from a device cannot
// forge lines or drive the terminal, and a quoted value is unambiguous.
func quote(s string) string {
	if strings.HasPrefix(s, `"`) {
		return strconv.Quote(s)
	}
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
		i += n
	}
	return s
}
