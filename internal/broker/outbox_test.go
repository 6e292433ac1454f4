package broker

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/logtest"
)

func testOutbox(t *testing.T, dir string, max int) (*outbox, *drops) {
	t.Helper()
	d := new(drops)
	log, _ := logtest.New(t)
	o, err := openOutbox(dir, max, d, log)
	if err != nil {
		t.Fatal(err)
	}
	return o, d
}

func msg(i int) message {
	return message{topic: fmt.Sprintf("p/h/events/net/change/%d", i), contentType: cloudEventType,
		payload: []byte(fmt.Sprintf(`{"n":%d}`, i)), qos: 1, retain: i%2 == 0}
}

// take reads n messages, acknowledging each, and checks they are want+i.
func take(t *testing.T, o *outbox, n, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range n {
		m, err := o.next(ctx)
		if err != nil {
			t.Fatalf("message %d of %d: %v", i, n, err)
		}
		w := msg(want + i)
		if m.topic != w.topic || !bytes.Equal(m.payload, w.payload) || m.qos != 1 || m.retain != w.retain || m.contentType != cloudEventType {
			t.Fatalf("message %d: %+v, want %+v", i, m, w)
		}
		o.ack(m.seq)
	}
}

func empty(t *testing.T, o *outbox) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if m, err := o.next(ctx); err == nil {
		t.Fatalf("outbox not empty: %+v", m)
	}
}

func TestOutboxInOrder(t *testing.T) {
	o, d := testOutbox(t, t.TempDir(), 1000)
	defer o.close()
	for i := range 500 {
		o.push(msg(i))
	}
	take(t, o, 500, 0)
	empty(t, o)
	if n := o.depth(); n != 0 || d.total() != 0 {
		t.Errorf("depth %d, dropped %d; want 0, 0", n, d.total())
	}
}

// TestOutboxSurvivesRestart: what was not acknowledged is there after a
// close and an open, in order; what was is not.
func TestOutboxSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	o, _ := testOutbox(t, dir, 1000)
	for i := range 300 {
		o.push(msg(i))
	}
	take(t, o, 100, 0)
	o.close()
	o, _ = testOutbox(t, dir, 1000)
	if n := o.depth(); n != 200 {
		t.Errorf("depth after reopen %d, want 200", n)
	}
	take(t, o, 200, 100)
	for i := 300; i < 310; i++ {
		o.push(msg(i))
	}
	take(t, o, 10, 300)
	o.close()
	o, _ = testOutbox(t, dir, 1000)
	defer o.close()
	empty(t, o)
}

// TestOutboxTornWrite: a record cut short by a crash is cut off at open;
// the whole ones before it are kept and new ones follow them.
func TestOutboxTornWrite(t *testing.T) {
	dir := t.TempDir()
	o, _ := testOutbox(t, dir, 1000)
	for i := range 10 {
		o.push(msg(i))
	}
	o.close()
	seg := filepath.Join(dir, segName(0))
	good, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	torn := appendRecord(nil, &message{seq: 10, topic: "x", payload: []byte("lost")})
	if err := os.WriteFile(seg, append(good, torn[:len(torn)-2]...), 0o600); err != nil {
		t.Fatal(err)
	}
	o, _ = testOutbox(t, dir, 1000)
	defer o.close()
	o.push(msg(10))
	take(t, o, 11, 0)
	empty(t, o)
}

// TestOutboxQueueMax: beyond max the oldest go, counted, on the disk
// and across a restart with a smaller max.
func TestOutboxQueueMax(t *testing.T) {
	dir := t.TempDir()
	o, d := testOutbox(t, dir, 100)
	for i := range 1000 {
		o.push(msg(i))
	}
	waitDepth(t, o, 100)
	if n := d.queueFull.Load(); n != 900 {
		t.Errorf("dropped %d, want 900", n)
	}
	take(t, o, 50, 900)
	o.close()
	o, d = testOutbox(t, dir, 10)
	defer o.close()
	if n := d.queueFull.Load(); n != 40 {
		t.Errorf("dropped at open %d, want 40", n)
	}
	take(t, o, 10, 990)
	empty(t, o)
}

// waitWritten waits until the writer has written all handed over.
func waitWritten(t *testing.T, o *outbox) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Microsecond) {
		o.mu.Lock()
		n := len(o.staged) + o.writing
		o.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages not written", n)
		}
	}
}

func waitDepth(t *testing.T, o *outbox, want int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); o.depth() != want; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("depth %d, want %d", o.depth(), want)
		}
	}
}

// TestOutboxSegments: the log rolls over to new segment files and
// removes those wholly sent; a corrupt one is skipped and counted.
func TestOutboxSegments(t *testing.T) {
	dir := t.TempDir()
	o, _ := testOutbox(t, dir, 1000)
	big := strings.Repeat("x", 100<<10)
	for i := range 100 {
		m := msg(i)
		m.payload = append(m.payload, big...)
		o.push(m)
		waitWritten(t, o) // one write each: segments end where they fill
	}
	o.close()
	segs := segFiles(t, dir)
	if len(segs) < 3 {
		t.Fatalf("segments %v, want the 10 MB in at least 3", segs)
	}
	// Spoil the first record of the first segment.
	f, err := os.OpenFile(filepath.Join(dir, segs[0]), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{0xff}, recordHeader+20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	o, d := testOutbox(t, dir, 1000)
	defer o.close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := o.next(ctx)
	if err != nil {
		t.Fatalf("%v: segments %v, head %d, tail %d, committed %d, cursor at %d+%d next %d", err, o.segs, o.head, o.tail,
			o.committed, o.r.seg, o.r.off, o.r.next)
	}
	lost := d.corrupt.Load()
	if lost == 0 || m.seq != lost {
		t.Fatalf("after a corrupt segment: seq %d, %d counted corrupt", m.seq, lost)
	}
	o.ack(m.seq)
	for range 100 - lost - 1 {
		m, err := o.next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		o.ack(m.seq)
	}
	o.close()
	if segs := segFiles(t, dir); len(segs) != 1 {
		t.Errorf("segments left after all was sent: %v", segs)
	}
	o, _ = testOutbox(t, dir, 1000)
	empty(t, o)
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), segSuffix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestOutboxTooLarge(t *testing.T) {
	o, d := testOutbox(t, t.TempDir(), 10)
	defer o.close()
	o.push(message{topic: "t", payload: make([]byte, maxMessage+1)})
	if d.tooLarge.Load() != 1 || o.depth() != 0 {
		t.Errorf("a message over %d bytes: dropped %d, depth %d", maxMessage, d.tooLarge.Load(), o.depth())
	}
}

// TestOutboxUnsafeDir: a queue directory others may write is refused.
func TestOutboxUnsafeDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "q")
	if err := os.Mkdir(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	log, _ := logtest.New(t)
	if _, err := openOutbox(dir, 10, new(drops), log); err == nil || !strings.Contains(err.Error(), "writable") {
		t.Errorf("open of a 0777 queue_dir: %v", err)
	}
}

// BenchmarkOutbox: handing over, writing and reading back one event-sized
// message.
func BenchmarkOutbox(b *testing.B) {
	d := new(drops)
	o, err := openOutbox(b.TempDir(), 1<<20, d, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer o.close()
	m := msg(0)
	m.payload = bytes.Repeat([]byte("x"), 1200)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		o.push(m)
		got, err := o.next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		o.ack(got.seq)
	}
}
