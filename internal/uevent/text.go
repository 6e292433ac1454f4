package uevent

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
)

// udevadmHeader is the first line of an event printed by `udevadm
// monitor --property` ("KERNEL[123.4] add /devices/... (block)"), which
// ParseText skips so such output can be pasted into a file.
var udevadmHeader = regexp.MustCompile(`^(KERNEL|UDEV) *\[[0-9.]+\] `)

// ParseText reads an event in any of the forms a person or a recording
// gives one (`hotplugd test --event`): a `monitor --json` object; a
// message captured from the udev netlink group; or KEY=VALUE properties
// separated by NULs (a kernel message, with its action@devpath header) or
// by newlines (a hand-written file, where '#' starts a comment line, or
// pasted `udevadm monitor --property` output). SEQNUM may be left out; it
// is then 0. Every check of Parse applies.
func ParseText(data []byte) (Event, error) {
	if bytes.HasPrefix(data, []byte(udevPrefix)) {
		return Parse(data)
	}
	if t := bytes.TrimSpace(data); len(t) > 0 && t[0] == '{' {
		var ev Event
		if err := json.Unmarshal(withSeqnum(t), &ev); err != nil {
			return Event{}, fmt.Errorf("JSON event: %w", err)
		}
		return ev, nil
	}
	props, err := textProps(data)
	if err != nil {
		return Event{}, err
	}
	return fromText(props)
}

// textProps splits NUL- or newline-separated properties, taking ACTION
// and DEVPATH from an action@devpath header when there is one.
func textProps(data []byte) ([]Property, error) {
	sep, text := "\n", string(data)
	if bytes.IndexByte(data, 0) >= 0 {
		sep, text = "\x00", strings.TrimSuffix(text, "\x00")
	}
	var props []Property
	var header string
	for i, line := range strings.Split(text, sep) {
		line = strings.TrimSuffix(line, "\r")
		if sep == "\n" && (strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#")) {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if len(props) == 0 && header == "" {
			if at := strings.IndexByte(line, '@'); at > 0 && (!ok || at < len(k)) {
				header = line
				continue
			}
			if udevadmHeader.MatchString(line) {
				header = "-"
				continue
			}
		}
		if !ok {
			return nil, fmt.Errorf("line %d: %q is not KEY=VALUE", i+1, line)
		}
		props = append(props, Property{Key: k, Value: v})
	}
	if h, d, ok := strings.Cut(header, "@"); ok {
		var err error
		if props, err = fromHeader(props, "ACTION", h); err == nil {
			props, err = fromHeader(props, "DEVPATH", d)
		}
		if err != nil {
			return nil, err
		}
	}
	return props, nil
}

// FromArgs builds an event from KEY=VALUE arguments, as `hotplugd test`
// takes them: ACTION defaults to add, SEQNUM to 0.
func FromArgs(args []string) (Event, error) {
	var props []Property
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return Event{}, fmt.Errorf("argument %q is not KEY=VALUE", a)
		}
		props = append(props, Property{Key: k, Value: v})
	}
	if !hasKey(props, "ACTION") {
		props = append([]Property{{Key: "ACTION", Value: "add"}}, props...)
	}
	return fromText(props)
}

// WithAction returns the event with its ACTION replaced by action.
func (e Event) WithAction(action string) (Event, error) {
	out := make([]Property, 0, len(e.Props)+1)
	out = append(out, Property{Key: "ACTION", Value: action})
	for _, p := range e.Props {
		if p.Key != "ACTION" {
			out = append(out, p)
		}
	}
	ev, err := FromProps(out)
	ev.Source = e.Source
	return ev, err
}

// fromText checks props as an event, adding SEQNUM=0 when it is missing.
func fromText(props []Property) (Event, error) {
	if !hasKey(props, "SEQNUM") {
		props = append(props, Property{Key: "SEQNUM", Value: "0"})
	}
	if len(props) > MaxUdevProperties {
		return Event{}, fmt.Errorf("%w: %d, limit %d", ErrTooManyProperties, len(props), MaxUdevProperties)
	}
	return FromProps(props)
}

// withSeqnum gives a `monitor --json` object without a sequence number
// SEQNUM 0, since a hand-written event has none. Anything it cannot
// read it leaves to the decoder to reject.
func withSeqnum(obj []byte) []byte {
	var raw map[string]json.RawMessage
	if json.Unmarshal(obj, &raw) != nil {
		return obj
	}
	env := map[string]string{}
	if e, ok := raw["env"]; ok && json.Unmarshal(e, &env) != nil {
		return obj
	}
	var seqnum uint64
	if s, ok := raw["seqnum"]; ok && json.Unmarshal(s, &seqnum) != nil {
		return obj
	}
	if _, ok := env["SEQNUM"]; ok || seqnum != 0 {
		return obj
	}
	env["SEQNUM"] = "0"
	raw["env"], _ = json.Marshal(env)
	out, err := json.Marshal(raw)
	if err != nil {
		return obj
	}
	return out
}

// fromHeader adds key=value from the action@devpath header when the
// properties lack it, and checks they agree when they have it.
func fromHeader(props []Property, key, value string) ([]Property, error) {
	for _, p := range props {
		if p.Key == key {
			if p.Value != value {
				return nil, fmt.Errorf("%w: header %s %q, property %q", ErrHeaderMismatch, key, value, p.Value)
			}
			return props, nil
		}
	}
	return append([]Property{{Key: key, Value: value}}, props...), nil
}

func hasKey(props []Property, key string) bool {
	for _, p := range props {
		if p.Key == key {
			return true
		}
	}
	return false
}
