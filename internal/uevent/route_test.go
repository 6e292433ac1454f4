package uevent

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// vethCarrier is a carrier event of veth0 as the route listener makes
// it: no SEQNUM, no DEVNAME, the devname from INTERFACE.
func vethCarrier() Event {
	const devpath = "/devices/virtual/net/veth0"
	return Event{
		Action: "carrier", DevPath: devpath, Subsystem: "net", DevName: "veth0", Source: SourceRoute,
		Props: []Property{
			{"ACTION", "carrier"}, {"DEVPATH", devpath}, {"SUBSYSTEM", "net"}, {"INTERFACE", "veth0"},
			{"IFINDEX", "7"}, {"OPERSTATE", "up"}, {"MTU", "1500"}, {"MAC", "3a:2e:c1:0b:5d:17"},
		},
	}
}

// TestRouteActionsNotOnTheWire: no uevent has a route action, so Parse
// refuses one, while a recorded or hand-written event may have it.
func TestRouteActionsNotOnTheWire(t *testing.T) {
	const devpath = "/devices/virtual/net/veth0"
	msg := kernelMsg("carrier@"+devpath, "ACTION=carrier", "DEVPATH="+devpath, "SUBSYSTEM=net", "SEQNUM=1")
	if _, err := Parse(msg); !errors.Is(err, ErrUnknownAction) {
		t.Errorf("Parse of a uevent with ACTION=carrier: %v, want %v", err, ErrUnknownAction)
	}
	ev, err := FromProps(props("ACTION=carrier", "DEVPATH="+devpath, "SUBSYSTEM=net", "INTERFACE=veth0", "SEQNUM=0"))
	if err != nil {
		t.Fatalf("FromProps of a carrier event: %v", err)
	}
	if ev.DevName != "veth0" || ev.NodeName() != "" {
		t.Errorf("devname %q, node name %q; want the interface veth0 and no node", ev.DevName, ev.NodeName())
	}
	if _, err := FromProps(props("ACTION=carier", "DEVPATH="+devpath, "SUBSYSTEM=net", "SEQNUM=0")); !errors.Is(err, ErrUnknownAction) {
		t.Errorf("FromProps with ACTION=carier: %v, want %v", err, ErrUnknownAction)
	}
	for _, a := range RouteActions {
		if !IsRouteAction(a) || knownAction(a) {
			t.Errorf("%s: IsRouteAction %v, a kernel action %v", a, IsRouteAction(a), knownAction(a))
		}
	}
	for _, a := range Actions {
		if IsRouteAction(a) {
			t.Errorf("kernel action %s is a route action", a)
		}
	}
}

// TestRouteJSONRoundTrip: what `monitor --json --source route` prints,
// `test --event` reads back as the same event.
func TestRouteJSONRoundTrip(t *testing.T) {
	ev := vethCarrier()
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["source"] != "route" || m["devname"] != "veth0" || m["devnode"] != "" || m["seqnum"] != 0.0 {
		t.Errorf("JSON %s: want source route, devname veth0, no devnode, seqnum 0", b)
	}
	back, err := ParseText(b)
	if err != nil {
		t.Fatalf("ParseText(%s): %v", b, err)
	}
	want := ev.Env()
	want["SEQNUM"] = "0" // a recording without a sequence number gets 0
	if diff := cmp.Diff(want, back.Env()); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	ev.Props, back.Props = nil, nil
	if diff := cmp.Diff(ev, back); diff != "" {
		t.Errorf("event (-want +got):\n%s", diff)
	}
}
