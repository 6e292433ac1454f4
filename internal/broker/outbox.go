package broker

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hotplugd/hotplugd/internal/rules"
)

// The outbox is a log of messages in segment files under the queue
// directory, each record
//
//	length uint32 | crc32c(body) uint32 | body
//	body: seq uint64 | qos<<0 | retain<<2 uint8 | len(content type) uint8 | content type
//	      | len(topic) uint16 | topic | payload
//
// (little endian), appended by one writer, read in order by one sender.
// A file "head" holds the sequence number of the oldest record not yet
// acknowledged by the broker, replaced atomically (rename). A crash
// loses nothing written: on open the last segment is cut after its last
// whole record (a torn write fails its length or checksum), and records
// acknowledged since head was last saved are sent again, at least once
// as QoS 1 promises. Segments are fsynced when full and at most a second
// after a write; a power cut may lose that second.
const (
	recordHeader  = 8
	segmentMax    = 4 << 20 // a segment is closed once it is this large
	maxMessage    = 1 << 20 // topic and payload of one message
	maxRecord     = maxMessage + 512
	stagedMax     = 8192     // messages handed over, not yet written
	stagedMaxSize = 32 << 20 // and their bytes
	headSaveEvery = 100 * time.Millisecond
	syncEvery     = time.Second
	segSuffix     = ".seg"
	headFile      = "head"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// message is one publish in the outbox.
type message struct {
	seq         uint64
	topic       string
	contentType string
	payload     []byte
	qos         byte
	retain      bool
}

func (m *message) size() int { return len(m.topic) + len(m.payload) + len(m.contentType) }

// appendRecord appends m's record to b.
func appendRecord(b []byte, m *message) []byte {
	start := len(b)
	b = append(b, make([]byte, recordHeader)...)
	b = binary.LittleEndian.AppendUint64(b, m.seq)
	flags := m.qos & 3
	if m.retain {
		flags |= 4
	}
	b = append(b, flags, byte(len(m.contentType)))
	b = append(b, m.contentType...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(m.topic)))
	b = append(b, m.topic...)
	b = append(b, m.payload...)
	body := b[start+recordHeader:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(body, castagnoli))
	return b
}

var errCorrupt = errors.New("corrupt record")

// parseRecord decodes a record's body, whose checksum was checked.
func parseRecord(body []byte) (message, error) {
	var m message
	if len(body) < 12 {
		return m, errCorrupt
	}
	m.seq = binary.LittleEndian.Uint64(body)
	m.qos, m.retain = body[8]&3, body[8]&4 != 0
	ct := int(body[9])
	rest := body[10:]
	if len(rest) < ct+2 {
		return m, errCorrupt
	}
	m.contentType, rest = string(rest[:ct]), rest[ct:]
	tl := int(binary.LittleEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) < tl {
		return m, errCorrupt
	}
	m.topic, m.payload = string(rest[:tl]), slices.Clone(rest[tl:])
	return m, nil
}

// segment is one file of the outbox: its records start at seq first.
type segment struct {
	first uint64
	path  string
}

func segName(first uint64) string { return fmt.Sprintf("%020d%s", first, segSuffix) }

// drops counts messages that never reached the broker, by reason.
type drops struct {
	queueFull, tooLarge, refused, disk, corrupt atomic.Uint64
}

// DropReasons are the reasons of hotplugd_broker_messages_dropped_total.
var DropReasons = []string{"queue_full", "too_large", "refused", "disk", "corrupt"}

func (d *drops) byReason() map[string]uint64 {
	return map[string]uint64{"queue_full": d.queueFull.Load(), "too_large": d.tooLarge.Load(),
		"refused": d.refused.Load(), "disk": d.disk.Load(), "corrupt": d.corrupt.Load()}
}

func (d *drops) total() uint64 {
	var n uint64
	for _, v := range d.byReason() {
		n += v
	}
	return n
}

// outbox is the on-disk queue of messages for the broker. push never
// waits for the disk: a writer goroutine appends what was handed over.
type outbox struct {
	dir   string
	max   int
	log   *slog.Logger
	drops *drops

	mu          sync.Mutex
	staged      []message
	stagedBytes int
	writing     int  // taken from staged, not yet written
	headDue     bool // the writer is to save the head
	closed      bool
	head        uint64 // oldest record neither acknowledged nor dropped
	tail        uint64 // the next record's seq
	segs        []segment
	committed   int64 // bytes of the last segment wholly written

	wakeWriter chan struct{}
	wakeReader chan struct{}
	stop       chan struct{}
	done       chan struct{}

	// The writer's own.
	w         *os.File
	wbuf      []byte
	dirty     bool // written since the last fsync
	lastSync  time.Time
	savedHead uint64
	lastSave  time.Time

	// The reader's own (the sender goroutine).
	r cursor
}

// cursor is where the reader is: the open segment and the next record.
type cursor struct {
	f    *os.File
	seg  uint64 // first seq of the open segment
	off  int64
	next uint64
	buf  []byte
}

// openOutbox opens (or creates, mode 0700) the outbox in dir and starts
// its writer. A record of a crashed write is cut off; a head beyond the
// records (a power cut lost them) is moved back to them.
func openOutbox(dir string, max int, d *drops, log *slog.Logger) (*outbox, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mqtt outbox: %w", err)
	}
	if err := rules.UnsafeDir(dir, os.Geteuid()); err != nil {
		return nil, fmt.Errorf("mqtt outbox: %w", err)
	}
	o := &outbox{dir: dir, max: max, log: log, drops: d, wakeWriter: make(chan struct{}, 1),
		wakeReader: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if err := o.load(); err != nil {
		if o.w != nil {
			o.w.Close()
		}
		return nil, fmt.Errorf("mqtt outbox %s: %w", dir, err)
	}
	go o.run()
	return o, nil
}

// load reads the segments and the head, and opens the last segment for
// appending.
func (o *outbox) load() error {
	ents, err := os.ReadDir(o.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), segSuffix)
		first, err := strconv.ParseUint(name, 10, 64)
		if ok && err == nil && e.Type().IsRegular() {
			o.segs = append(o.segs, segment{first, filepath.Join(o.dir, e.Name())})
		}
	}
	slices.SortFunc(o.segs, func(a, b segment) int { return compareU64(a.first, b.first) })
	if b, err := os.ReadFile(filepath.Join(o.dir, headFile)); err == nil {
		o.head, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	if len(o.segs) == 0 {
		o.tail = o.head
		return o.newSegment()
	}
	last := o.segs[len(o.segs)-1]
	end, tail, err := scanSegment(last)
	if err != nil {
		return err
	}
	o.head = min(max(o.head, o.segs[0].first), tail)
	if excess := int64(tail-o.head) - int64(o.max); excess > 0 { // queue_max is smaller now
		o.head += uint64(excess)
		o.drops.queueFull.Add(uint64(excess))
	}
	o.tail, o.committed, o.savedHead = tail, end, o.head
	o.removeSegments(o.trimLocked())
	if o.w, err = os.OpenFile(last.path, os.O_WRONLY, 0); err != nil {
		return err
	}
	if err := o.w.Truncate(end); err != nil {
		return err
	}
	_, err = o.w.Seek(end, 0)
	return err
}

func compareU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// scanSegment returns the size of the whole records of s and the seq
// after the last one.
func scanSegment(s segment) (end int64, next uint64, err error) {
	f, err := os.Open(s.path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	c := cursor{f: f, seg: s.first, next: s.first}
	fi, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	for {
		m, n, err := c.read(fi.Size())
		if err != nil || m.seq != c.next {
			return c.off, c.next, nil
		}
		c.off += int64(n)
		c.next = m.seq + 1
	}
}

// newSegment starts a segment whose first record is tail.
func (o *outbox) newSegment() error {
	s := segment{o.tail, filepath.Join(o.dir, segName(o.tail))}
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if o.w != nil {
		if err := o.w.Sync(); err != nil {
			o.log.Warn("mqtt outbox: fsync", "err", err)
		}
		o.w.Close()
	}
	o.w, o.dirty = f, false
	o.mu.Lock()
	o.segs = append(o.segs, s)
	o.committed = 0
	o.mu.Unlock()
	return nil
}

// push hands m over; it never waits for the disk. What does not fit is
// dropped and counted: m itself when it is too large, else the oldest
// message handed over.
func (o *outbox) push(m message) {
	if m.size() > maxMessage {
		o.drops.tooLarge.Add(1)
		return
	}
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		o.drops.queueFull.Add(1)
		return
	}
	for len(o.staged) > 0 && (len(o.staged) >= min(stagedMax, o.max) || o.stagedBytes+m.size() > stagedMaxSize) {
		o.stagedBytes -= o.staged[0].size()
		o.staged[0] = message{}
		o.staged = o.staged[1:]
		o.drops.queueFull.Add(1)
	}
	o.staged = append(o.staged, m)
	o.stagedBytes += m.size()
	o.mu.Unlock()
	signal(o.wakeWriter)
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// depth is how many messages wait: written and handed over.
func (o *outbox) depth() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return int(o.tail-o.head) + len(o.staged) + o.writing
}

// ack records that the broker has the message seq: it and everything
// before it leave the outbox.
func (o *outbox) ack(seq uint64) {
	o.mu.Lock()
	if seq+1 > o.head {
		o.head = seq + 1
	}
	wake := !o.headDue
	o.headDue = true
	o.mu.Unlock()
	if wake { // once per save of the head, not once per message
		signal(o.wakeWriter)
	}
}

// gone reports whether seq left the outbox (dropped as the oldest).
func (o *outbox) gone(seq uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return seq < o.head
}
