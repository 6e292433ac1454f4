package uevent

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// jsonEvent is the `monitor --json` object (hotplugd(8)); FS and Walk
// are set only by `monitor --json --walk` (see Recording).
type jsonEvent struct {
	Seqnum    uint64            `json:"seqnum"`
	Action    string            `json:"action"`
	DevPath   string            `json:"devpath"`
	Subsystem string            `json:"subsystem"`
	DevType   string            `json:"devtype"`
	DevName   string            `json:"devname"`
	DevNode   string            `json:"devnode"`
	Source    Source            `json:"source"`
	Env       map[string]string `json:"env"`
	FS        *FS               `json:"fs,omitempty"`
	Walk      []WalkDevice      `json:"walk,omitzero"` // nil: absent; empty: recorded, nothing found
}

func newJSONEvent(e *Event) jsonEvent {
	return jsonEvent{
		Seqnum:    e.Seqnum,
		Action:    e.Action,
		DevPath:   e.DevPath,
		Subsystem: e.Subsystem,
		DevType:   e.DevType,
		DevName:   e.DevName,
		DevNode:   devNode(e.NodeName()),
		Source:    e.Source,
		Env:       e.Env(),
	}
}

// MarshalJSON encodes the event as one `monitor --json` object. Device
// strings are JSON string values; encoding/json escapes them.
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(newJSONEvent(&e))
}

// devNode is the node the kernel's devtmpfs gives a DEVNAME, as udev
// writes it in its own DEVNAME property: a recording names the node of
// the machine it was made on.
func devNode(devname string) string {
	if devname == "" {
		return ""
	}
	return "/dev/" + devname
}

// UnmarshalJSON decodes a `monitor --json` object and applies the checks
// of Parse. Top-level fields fill properties missing from env; where both
// are present they must agree. Fields it does not know are ignored.
func (e *Event) UnmarshalJSON(b []byte) error {
	var j jsonEvent
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	ev, err := j.event(false)
	if err != nil {
		return err
	}
	*e = ev
	return nil
}

// event checks the object and makes its Event. With anySeqnum, an object
// with no sequence number at all (written by hand) gets SEQNUM 0.
func (j *jsonEvent) event(anySeqnum bool) (Event, error) {
	env := j.Env
	if env == nil {
		env = map[string]string{}
	}
	top := []Property{
		{"ACTION", j.Action}, {"DEVPATH", j.DevPath}, {"SUBSYSTEM", j.Subsystem},
		{"DEVTYPE", j.DevType}, {"DEVNAME", j.DevName},
	}
	if j.Seqnum != 0 {
		top = append(top, Property{"SEQNUM", fmt.Sprint(j.Seqnum)})
	} else if _, ok := env["SEQNUM"]; !ok && anySeqnum {
		top = append(top, Property{"SEQNUM", "0"})
	}
	route := IsRouteAction(cmp.Or(j.Action, env["ACTION"]))
	props := make([]Property, 0, len(top)+len(env))
	for _, p := range top {
		v, ok := env[p.Key]
		switch {
		case route && p.Key == "DEVNAME" && !ok && p.Value == env["INTERFACE"]:
			// A link's devname is its INTERFACE, not a node's DEVNAME.
		case ok && p.Value != "" && v != p.Value && !(p.Key == "DEVNAME" && v == "/dev/"+p.Value):
			return Event{}, fmt.Errorf("%w: %s %q, env %q", ErrHeaderMismatch, p.Key, p.Value, v)
		case !ok && p.Value != "":
			props = append(props, p)
		}
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		props = append(props, Property{k, env[k]})
	}
	if len(props) > MaxUdevProperties {
		return Event{}, fmt.Errorf("%w: %d, limit %d", ErrTooManyProperties, len(props), MaxUdevProperties)
	}
	ev, err := FromProps(props)
	if err != nil {
		return Event{}, err
	}
	switch j.Source {
	case SourceKernel, SourceUdev, SourceRoute, SourceColdplug, SourceResync, SourceTest:
		ev.Source = j.Source
	case "":
		ev.Source = SourceTest
	default:
		return Event{}, fmt.Errorf("unknown source %q", j.Source)
	}
	return ev, nil
}

// MarshalJSON encodes the recording as one `monitor --json --walk`
// object: the event's, with fs when it is set and walk when it is not
// nil.
func (r Recording) MarshalJSON() ([]byte, error) {
	j := newJSONEvent(&r.Event)
	j.FS, j.Walk = r.FS, r.Walk
	return json.Marshal(j)
}

// UnmarshalJSON decodes a `monitor --json --walk` object strictly: a
// field it does not know is an error, a name spelled otherwise than the
// field's ("Action") too, and so is anything after the object (b can be
// a line of a recording, not only what json.Unmarshal has checked),
// every check of Event.UnmarshalJSON
// applies, and the walk must lead from the event's device up through its
// parents. An object without a sequence number (written by hand) gets
// SEQNUM 0.
func (r *Recording) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var j jsonEvent
	if err := dec.Decode(&j); errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return errors.New("unexpected end of JSON input: the object is cut short")
	} else if err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the object")
	}
	if err := checkKeys(b, recordingKeys); err != nil {
		return err
	}
	ev, err := j.event(true)
	if err != nil {
		return err
	}
	if err := checkWalk(ev.DevPath, j.Walk); err != nil {
		return err
	}
	*r = Recording{Event: ev, FS: j.FS, Walk: j.Walk}
	return nil
}
