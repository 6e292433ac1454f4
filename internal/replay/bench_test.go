package replay

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/hotplugd/hotplugd/internal/rules"
)

// benchRules are the stick's rules with those of the shipped default and
// of a backup disk: fs.*, attrs, has_parent and templates.
const benchRules = stickRules + `
  - name: usb-automount
    match: >
      action == "add" && subsystem == "block" && fs.usage == "filesystem"
      && (has_parent("usb") || env.ID_BUS == "usb" || attrs("removable") == "1")
    actions:
      - mount: {options: [noatime]}
  - name: backup
    match: action == "add" && fs.uuid == "5E2F-1A3B" && attrs("serial") == "4C530001231219115432"
    actions:
      - run: {argv: [/usr/local/bin/backup, --device, "{{ devnode }}", --label, "{{ fs.label }}"]}
  - name: net
    match: subsystem == "net" && env.INTERFACE != "lo"
`

// manyEvents makes a recording of n events: the loop image's partition
// added and removed over and over, on 64 loop devices, with rising
// sequence numbers.
func manyEvents(b *testing.B, n int) []byte {
	b.Helper()
	f, err := os.Open(loopImage)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var lines []string
	var seqnums []uint64
	for rd := NewReader(f, loopImage); ; {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		line, err := ev.Rec.MarshalJSON()
		if err != nil {
			b.Fatal(err)
		}
		lines, seqnums = append(lines, string(line)), append(seqnums, ev.Rec.Event.Seqnum)
	}
	var buf bytes.Buffer
	for i := range n {
		k := i % len(lines)
		old, seq := strconv.FormatUint(seqnums[k], 10), strconv.Itoa(i+1)
		l := strings.ReplaceAll(lines[k], "loop0", "loop"+strconv.Itoa(i/len(lines)%64))
		l = strings.ReplaceAll(strings.ReplaceAll(l, `"seqnum":`+old+",", `"seqnum":`+seq+","), `"SEQNUM":"`+old+`"`, `"SEQNUM":"`+seq+`"`)
		buf.WriteString(l + "\n")
	}
	return buf.Bytes()
}

// BenchmarkReplay100k replays 100,000 recorded events and reports
// events/s: from-jsonl from the lines of a recording to each event's
// outcome, decoded the same from events already decoded (the rules, the
// device database and the plans alone).
func BenchmarkReplay100k(b *testing.B) {
	const n = 100_000
	data := manyEvents(b, n)
	rs := loadRules(b, benchRules)
	b.Run("from-jsonl", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			rd := NewReader(bytes.NewReader(data), "bench")
			replayBench(b, rs, n, func() (Event, error) { return rd.Next() })
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
	b.Run("decoded", func(b *testing.B) {
		var evs []Event
		for rd := NewReader(bytes.NewReader(data), "bench"); ; {
			ev, err := rd.Next()
			if err != nil {
				break
			}
			evs = append(evs, ev)
		}
		b.ReportAllocs()
		for b.Loop() {
			i := 0
			replayBench(b, rs, n, func() (Event, error) {
				if i == len(evs) {
					return Event{}, io.EOF
				}
				i++
				return evs[i-1], nil
			})
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	})
}

// replayBench replays the n events next returns, checking that two in
// five match a rule (the partition's add and remove).
func replayBench(b *testing.B, rs *rules.RuleSet, n int, next func() (Event, error)) {
	r, err := New(rs)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	matched := 0
	for {
		ev, err := next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if o := r.Replay(context.Background(), ev); len(o.Matched) > 0 {
			matched++
		}
	}
	if matched != 2*n/5 {
		b.Fatalf("%d events matched a rule, want %d", matched, 2*n/5)
	}
}
