package uevent

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
)

// jsonEvent is the `hotplugd monitor --json` object (hotplugd(8)).
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
}

// MarshalJSON encodes the event as one `monitor --json` object. Device
// strings are JSON string values; encoding/json escapes them.
func (e Event) MarshalJSON() ([]byte, error) {
	return json.Marshal(jsonEvent{
		Seqnum:    e.Seqnum,
		Action:    e.Action,
		DevPath:   e.DevPath,
		Subsystem: e.Subsystem,
		DevType:   e.DevType,
		DevName:   e.DevName,
		DevNode:   devNode(e.NodeName()),
		Source:    e.Source,
		Env:       e.Env(),
	})
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
// are present they must agree.
func (e *Event) UnmarshalJSON(b []byte) error {
	var j jsonEvent
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
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
	}
	route := IsRouteAction(cmp.Or(j.Action, env["ACTION"]))
	var props []Property
	for _, p := range top {
		v, ok := env[p.Key]
		switch {
		case route && p.Key == "DEVNAME" && !ok && p.Value == env["INTERFACE"]:
			// A link's devname is its INTERFACE, not a node's DEVNAME.
		case ok && p.Value != "" && v != p.Value && !(p.Key == "DEVNAME" && v == "/dev/"+p.Value):
			return fmt.Errorf("%w: %s %q, env %q", ErrHeaderMismatch, p.Key, p.Value, v)
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
		return fmt.Errorf("%w: %d, limit %d", ErrTooManyProperties, len(props), MaxUdevProperties)
	}
	ev, err := FromProps(props)
	if err != nil {
		return err
	}
	switch j.Source {
	case SourceKernel, SourceUdev, SourceRoute, SourceColdplug, SourceResync, SourceTest:
		ev.Source = j.Source
	case "":
		ev.Source = SourceTest
	default:
		return fmt.Errorf("unknown source %q", j.Source)
	}
	*e = ev
	return nil
}
