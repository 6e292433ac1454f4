//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// qmp is a client of the QEMU Machine Protocol: JSON objects, one per
// line, over a stream socket. Commands carry an id their answer repeats;
// asynchronous events are kept in order so that a wait started after a
// command still sees the event the command caused.
type qmp struct {
	conn net.Conn
	enc  *json.Encoder

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan qmpReply
	events  []qmpEvent
	changed chan struct{} // closed and replaced when events grow or the connection ends
	err     error         // why the connection ended
}

type qmpReply struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// qmpEvent is one asynchronous message, such as DEVICE_DELETED.
type qmpEvent struct {
	Event string          `json:"event"`
	Data  json.RawMessage `json:"data"`
}

// newQMP reads the greeting on conn and negotiates capabilities.
func newQMP(ctx context.Context, conn net.Conn) (*qmp, error) {
	q := &qmp{conn: conn, enc: json.NewEncoder(conn), pending: map[uint64]chan qmpReply{}, changed: make(chan struct{})}
	r := bufio.NewReader(conn)
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetReadDeadline(d)
	}
	line, err := r.ReadBytes('\n')
	if err != nil {
		return nil, fmt.Errorf("qmp greeting: %w", err)
	}
	var greeting struct {
		QMP json.RawMessage `json:"QMP"`
	}
	if err := json.Unmarshal(line, &greeting); err != nil || greeting.QMP == nil {
		return nil, fmt.Errorf("qmp greeting: not a greeting: %q", line)
	}
	_ = conn.SetReadDeadline(time.Time{})
	go q.read(r)
	if _, err := q.do(ctx, "qmp_capabilities", nil); err != nil {
		return nil, err
	}
	return q, nil
}

func (q *qmp) read(r *bufio.Reader) {
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			q.fail(fmt.Errorf("qmp connection: %w", err))
			return
		}
		var msg struct {
			ID *uint64 `json:"id"`
			qmpReply
			qmpEvent
		}
		if err := json.Unmarshal(line, &msg); err != nil {
			q.fail(fmt.Errorf("qmp: bad message %q: %w", line, err))
			return
		}
		q.mu.Lock()
		switch {
		case msg.Event != "":
			q.events = append(q.events, msg.qmpEvent)
			close(q.changed)
			q.changed = make(chan struct{})
		case msg.ID != nil:
			if c := q.pending[*msg.ID]; c != nil {
				c <- msg.qmpReply
				delete(q.pending, *msg.ID)
			}
		}
		q.mu.Unlock()
	}
}

func (q *qmp) fail(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		q.err = err
		close(q.changed)
	}
}

// do runs one command and returns its "return" value.
func (q *qmp) do(ctx context.Context, command string, args any) (json.RawMessage, error) {
	q.mu.Lock()
	if q.err != nil {
		q.mu.Unlock()
		return nil, q.err
	}
	q.nextID++
	id := q.nextID
	c := make(chan qmpReply, 1)
	q.pending[id] = c
	done := q.changed
	q.mu.Unlock()
	msg := map[string]any{"execute": command, "id": id}
	if args != nil {
		msg["arguments"] = args
	}
	if err := q.enc.Encode(msg); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		select {
		case r := <-c:
			if r.Error != nil {
				return nil, fmt.Errorf("qmp %s: %s: %s", command, r.Error.Class, r.Error.Desc)
			}
			return r.Return, nil
		case <-done:
			q.mu.Lock()
			err := q.err
			done = q.changed
			q.mu.Unlock()
			if err != nil {
				return nil, fmt.Errorf("qmp %s: %w", command, err)
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp %s: %w", command, ctx.Err())
		}
	}
}

// mark is the position in the event stream now: waitEvent(mark, ...)
// looks at the events after it.
func (q *qmp) mark() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.events)
}

// waitEvent waits for the first event named name after position from for
// which match (nil: any) is true.
func (q *qmp) waitEvent(ctx context.Context, from int, name string, match func(json.RawMessage) bool) (qmpEvent, error) {
	for {
		q.mu.Lock()
		for ; from < len(q.events); from++ {
			if e := q.events[from]; e.Event == name && (match == nil || match(e.Data)) {
				q.mu.Unlock()
				return e, nil
			}
		}
		err, changed := q.err, q.changed
		q.mu.Unlock()
		if err != nil {
			return qmpEvent{}, fmt.Errorf("waiting for %s: %w", name, err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return qmpEvent{}, fmt.Errorf("waiting for %s: %w", name, ctx.Err())
		}
	}
}

// close ends the connection.
func (q *qmp) close() error {
	err := q.conn.Close()
	q.fail(errors.New("closed"))
	return err
}
