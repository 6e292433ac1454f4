package rules

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// allActions is every action an event can have: the kernel's and those
// of links and addresses.
func allActions() []string {
	return append(slices.Clone(uevent.Actions), uevent.RouteActions...)
}

func TestNetworkSetting(t *testing.T) {
	if DefaultSettings().Network {
		t.Error("network is on by default")
	}
	rs := mustParse(t, "settings:\n  network: true\n")
	if !rs.Settings.Network {
		t.Error("network: true did not set Network")
	}
	_, err := parseTest(t, "settings:\n  network: yes please\n")
	want := []string{`t.yaml:2:12: network must be true or false`}
	if diff := cmp.Diff(want, errLines(err)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

// TestActionTypo: a match that compares action with a name no event has
// can never be true; like an unknown key, it is an error.
func TestActionTypo(t *testing.T) {
	_, err := parseTest(t, "rules:\n  - name: a\n    match: action == \"carier\" && subsystem == \"net\"\n")
	want := []string{`t.yaml:3:12: rule "a": match: no event has action "carier" (want add, remove, change, move, online, offline, bind, unbind, link-up, link-down, carrier, no-carrier, address-add or address-remove)`}
	if diff := cmp.Diff(want, errLines(err)); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
	_, err = parseTest(t, "rules:\n  - name: a\n    match: action in [\"add\", \"chnage\"]\n")
	if got := errLines(err); len(got) != 1 {
		t.Errorf("action in [\"add\", \"chnage\"]: errors %q, want one", got)
	}
	mustParse(t, "rules:\n  - name: a\n    match: action in [\"carrier\", \"no-carrier\", \"address-add\"] && action != \"whatever\"\n")
}

// TestRouteActionsPrefiltered: the per-action index holds the actions of
// links and addresses too, so a carrier rule is looked at for carrier
// events only.
func TestRouteActionsPrefiltered(t *testing.T) {
	if n := numActions(); n > len(RuleSet{}.byAction) {
		t.Fatalf("%d actions, but the index has room for %d", n, len(RuleSet{}.byAction))
	}
	seen := map[uint16]string{}
	for _, a := range allActions() {
		bit := actionBit(a)
		if bit == 0 || seen[bit] != "" {
			t.Errorf("action %s: bit %#x (also %q)", a, bit, seen[bit])
		}
		seen[bit] = a
	}
	rs := mustParse(t, `
rules:
  - name: carrier
    match: action == "carrier" && subsystem == "net"
  - name: addresses
    match: action in ["address-add", "address-remove"] && env.FAMILY == "inet"
  - name: any
    match: devname == "veth0"
`)
	for _, tt := range []struct {
		action string
		want   []string
	}{
		{"carrier", []string{"carrier", "any"}},
		{"no-carrier", []string{"any"}},
		{"address-add", []string{"addresses", "any"}},
		{"link-up", []string{"any"}},
		{"change", []string{"any"}},
	} {
		ev, err := uevent.FromProps([]uevent.Property{
			{Key: "ACTION", Value: tt.action}, {Key: "DEVPATH", Value: "/devices/virtual/net/veth0"},
			{Key: "SUBSYSTEM", Value: "net"}, {Key: "INTERFACE", Value: "veth0"}, {Key: "FAMILY", Value: "inet"},
			{Key: "DEVNAME", Value: "veth0"}, {Key: "SEQNUM", Value: "0"},
		})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range rs.AppendMatched(nil, &ev, nil) {
			got = append(got, r.Name)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tt.action, diff)
		}
		if n := len(rs.byAction[bitIndex(actionBit(tt.action))]); n != len(tt.want) {
			t.Errorf("%s: %d rules indexed, want %d", tt.action, n, len(tt.want))
		}
	}
}

func bitIndex(bit uint16) int {
	for i := range 16 {
		if bit == 1<<i {
			return i
		}
	}
	return -1
}
