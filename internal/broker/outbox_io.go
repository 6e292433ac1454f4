package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// errEnd: the cursor is at the end of what its segment holds (so far).
var errEnd = errors.New("end of segment")

// read reads the record at the cursor, not past limit, and returns it
// with its size on disk.
func (c *cursor) read(limit int64) (message, int, error) {
	var h [recordHeader]byte
	if c.off+recordHeader > limit {
		return message{}, 0, errEnd
	}
	if n, err := c.f.ReadAt(h[:], c.off); n < recordHeader {
		return message{}, 0, endOr(err)
	}
	l := int64(binary.LittleEndian.Uint32(h[:]))
	switch {
	case l > maxRecord:
		return message{}, 0, errCorrupt
	case c.off+recordHeader+l > limit:
		return message{}, 0, errEnd
	}
	if int64(cap(c.buf)) < l {
		c.buf = make([]byte, l)
	}
	body := c.buf[:l]
	if n, err := c.f.ReadAt(body, c.off+recordHeader); int64(n) < l {
		return message{}, 0, endOr(err)
	}
	if crc32.Checksum(body, castagnoli) != binary.LittleEndian.Uint32(h[4:]) {
		return message{}, 0, errCorrupt
	}
	m, err := parseRecord(body)
	return m, recordHeader + int(l), err
}

func endOr(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return errEnd
	}
	return err
}

// view is what the reader needs to know of the writer's progress.
type view struct {
	head, tail uint64
	active     uint64 // first seq of the segment being written
	committed  int64  // its bytes wholly written
}

func (o *outbox) view() view {
	o.mu.Lock()
	defer o.mu.Unlock()
	return view{o.head, o.tail, o.segs[len(o.segs)-1].first, o.committed}
}

// segFor returns the segment that holds seq (or would).
func (o *outbox) segFor(seq uint64) segment {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.segs[0]
	for _, x := range o.segs {
		if x.first <= seq {
			s = x
		}
	}
	return s
}

// next returns the oldest message not acknowledged nor dropped, waiting
// for one until ctx ends. The sender alone calls it, and sends what it
// returns until it is acknowledged or gone.
func (o *outbox) next(ctx context.Context) (message, error) {
	c := &o.r
	for {
		v := o.view()
		if c.f == nil || c.next < v.head && o.segFor(v.head).first != c.seg {
			if err := o.reopen(max(v.head, c.next)); err != nil {
				return message{}, err
			}
		}
		if c.next >= v.tail {
			select {
			case <-o.wakeReader:
				continue
			case <-ctx.Done():
				return message{}, ctx.Err()
			}
		}
		limit := int64(math.MaxInt64)
		if c.seg == v.active {
			limit = v.committed
		}
		m, n, err := c.read(limit)
		switch {
		case errors.Is(err, errEnd) && c.seg != v.active:
			err = o.reopen(c.next) // the next segment starts where this one ended
		case errors.Is(err, errEnd):
			select { // not written yet: wait for the writer
			case <-o.wakeReader:
				continue
			case <-ctx.Done():
				return message{}, ctx.Err()
			}
		case err != nil:
			err = o.skipCorrupt(err)
		}
		if err != nil {
			return message{}, err
		}
		if n == 0 {
			continue
		}
		c.off += int64(n)
		c.next = m.seq + 1
		if m.seq >= v.head {
			return m, nil
		}
	}
}

// reopen points the cursor at the start of the segment holding seq; the
// records before seq are skipped by next.
func (o *outbox) reopen(seq uint64) error {
	c := &o.r
	s := o.segFor(seq)
	if c.f != nil && s.first == c.seg {
		return o.skipCorrupt(errors.New("segment ends early"))
	}
	f, err := os.Open(s.path)
	if err != nil {
		return err
	}
	if c.f != nil {
		c.f.Close()
	}
	c.f, c.seg, c.off, c.next = f, s.first, 0, s.first
	return nil
}

// skipCorrupt moves past a segment that cannot be read on, to the next
// one, and counts the records lost.
func (o *outbox) skipCorrupt(why error) error {
	c := &o.r
	o.mu.Lock()
	var next *segment
	for i := range o.segs {
		if o.segs[i].first > c.seg {
			next = &o.segs[i]
			break
		}
	}
	o.mu.Unlock()
	if next == nil {
		return why // the segment being written: nothing to skip to
	}
	if from := max(c.next, o.view().head); next.first > from {
		o.drops.corrupt.Add(next.first - from)
	}
	o.log.Error("mqtt outbox: segment unreadable; skipping the rest of it", "segment", segName(c.seg), "err", why)
	f, err := os.Open(next.path)
	if err != nil {
		return err
	}
	c.f.Close()
	c.f, c.seg, c.off, c.next = f, next.first, 0, next.first
	return nil
}

// run is the writer: it appends what was handed over, keeps the head
// file and the segments in step, and fsyncs.
func (o *outbox) run() {
	defer close(o.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		stopping := false
		select {
		case <-o.wakeWriter:
		case <-timer.C:
		case <-o.stop:
			stopping = true
		}
		o.flush()
		due := o.housekeep(time.Now(), stopping)
		if stopping {
			o.w.Close()
			return
		}
		if due > 0 {
			timer.Reset(due)
		}
	}
}

// flush writes the messages handed over, in one write, and drops the
// oldest beyond max.
func (o *outbox) flush() {
	o.mu.Lock()
	batch, seq, committed := o.staged, o.tail, o.committed
	o.staged, o.stagedBytes, o.writing = nil, 0, len(batch)
	o.mu.Unlock()
	if len(batch) == 0 {
		return
	}
	o.wbuf = o.wbuf[:0]
	for i := range batch {
		batch[i].seq = seq + uint64(i)
		o.wbuf = appendRecord(o.wbuf, &batch[i])
	}
	if _, err := o.w.Write(o.wbuf); err != nil {
		o.mu.Lock()
		o.writing = 0
		o.mu.Unlock()
		o.drops.disk.Add(uint64(len(batch)))
		o.log.Error("mqtt outbox: write failed; messages dropped", "dropped", len(batch), "err", err)
		_ = o.w.Truncate(committed)
		_, _ = o.w.Seek(committed, 0)
		return
	}
	o.mu.Lock()
	o.writing = 0
	o.tail += uint64(len(batch))
	o.committed += int64(len(o.wbuf))
	if excess := int64(o.tail-o.head) - int64(o.max); excess > 0 {
		o.head += uint64(excess)
		o.drops.queueFull.Add(uint64(excess))
	}
	full := o.committed >= segmentMax
	o.mu.Unlock()
	o.dirty = true
	if cap(o.wbuf) > segmentMax {
		o.wbuf = nil
	}
	signal(o.wakeReader)
	if full {
		if err := o.newSegment(); err != nil {
			o.log.Error("mqtt outbox: new segment", "err", err)
		}
	}
}

// housekeep saves the head, removes segments wholly behind it and
// fsyncs, each at most as often as it is due; it returns when it
// should run again (0: nothing pending). final does everything now.
func (o *outbox) housekeep(now time.Time, final bool) time.Duration {
	o.mu.Lock()
	head, old := o.head, o.trimLocked()
	saveNow := head != o.savedHead && (final || now.Sub(o.lastSave) >= headSaveEvery)
	if saveNow || head == o.savedHead {
		o.headDue = false // acks from now on wake the writer again
	}
	o.mu.Unlock()
	o.removeSegments(old)
	var due time.Duration
	switch {
	case saveNow:
		o.saveHead(head, now)
	case head != o.savedHead:
		due = headSaveEvery - now.Sub(o.lastSave)
	}
	if o.dirty {
		if wait := syncEvery - now.Sub(o.lastSync); final || wait <= 0 {
			if err := o.w.Sync(); err != nil {
				o.log.Warn("mqtt outbox: fsync", "err", err)
			}
			o.dirty, o.lastSync = false, now
		} else if due == 0 || wait < due {
			due = wait
		}
	}
	return due
}

// trimLocked takes the segments wholly before head off the list and
// returns them; the last segment always stays.
func (o *outbox) trimLocked() []segment {
	i := 0
	for i+1 < len(o.segs) && o.segs[i+1].first <= o.head {
		i++
	}
	old := o.segs[:i:i]
	o.segs = o.segs[i:]
	return old
}

func (o *outbox) removeSegments(segs []segment) {
	for _, s := range segs {
		if err := os.Remove(s.path); err != nil {
			o.log.Warn("mqtt outbox: removing a sent segment", "err", err)
		}
	}
}

// saveHead replaces the head file atomically.
func (o *outbox) saveHead(head uint64, now time.Time) {
	tmp := filepath.Join(o.dir, headFile+".tmp")
	err := os.WriteFile(tmp, []byte(strconv.FormatUint(head, 10)+"\n"), 0o600)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(o.dir, headFile))
	}
	if err != nil {
		o.log.Warn("mqtt outbox: saving the head", "err", err)
		return
	}
	o.savedHead, o.lastSave = head, now
}

// close writes what was handed over, saves the head and stops the
// writer. The sender must have stopped.
func (o *outbox) close() {
	o.mu.Lock()
	was := o.closed
	o.closed = true
	o.mu.Unlock()
	if was {
		return
	}
	close(o.stop)
	<-o.done
	if o.r.f != nil {
		o.r.f.Close()
	}
}
