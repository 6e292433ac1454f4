package replay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// maxLine bounds one line of a recording: an event with the walk of a
// deep device is tens of KiB.
const maxLine = 4 << 20

// InputError is a problem of an input file at a line: a recording that
// is not one, an expectation that cannot be read.
type InputError struct {
	File string
	Line int
	Err  error
}

func (e *InputError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }

func (e *InputError) Unwrap() error { return e.Err }

// Event is one recorded event and where it is: its position among the
// events (from 1), its file and line.
type Event struct {
	Index int
	File  string
	Line  int
	Rec   uevent.Recording
}

// Reader reads a recording: one JSON object a line, as `hotplugd
// monitor --json --walk` prints them. Blank lines and lines starting
// with '#' (a comment saying what was recorded) are skipped.
type Reader struct {
	sc    *bufio.Scanner
	name  string
	line  int
	index int
}

// NewReader reads the recording r, called name in errors.
func NewReader(r io.Reader, name string) *Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	return &Reader{sc: sc, name: name}
}

// Next returns the next event, io.EOF after the last, or an
// *InputError naming the line that is not a recorded event.
func (r *Reader) Next() (Event, error) {
	for r.sc.Scan() {
		r.line++
		b := bytes.TrimSpace(r.sc.Bytes())
		if len(b) == 0 || b[0] == '#' {
			continue
		}
		r.index++
		ev := Event{Index: r.index, File: r.name, Line: r.line}
		// UnmarshalJSON checks the whole line itself: json.Unmarshal would
		// scan it once more first.
		if err := ev.Rec.UnmarshalJSON(b); err != nil {
			return Event{}, &InputError{File: r.name, Line: r.line, Err: fmt.Errorf("not a recorded event: %w", err)}
		}
		return ev, nil
	}
	if err := r.sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			err = fmt.Errorf("line longer than %d bytes", maxLine)
		}
		return Event{}, &InputError{File: r.name, Line: r.line + 1, Err: err}
	}
	return Event{}, io.EOF
}
