package route

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// newState is a state whose devpaths are those of virtual interfaces.
func newState() *state {
	s := &state{}
	s.init(func(name string, _ int32) (string, bool) { return "/devices/virtual/net/" + name, true })
	return s
}

// brief is an event in one line: ACTION INTERFACE[ ADDRESS/PREFIXLEN].
func brief(ev uevent.Event) string {
	s := ev.Action + " " + ev.Get("INTERFACE")
	if a := ev.Get("ADDRESS"); a != "" {
		s += " " + a + "/" + ev.Get("PREFIXLEN")
	}
	return s
}

func briefs(evs []uevent.Event) []string {
	out := []string{}
	for _, ev := range evs {
		out = append(out, brief(ev))
	}
	return out
}

// take returns the events made so far and forgets them.
func take(s *state) []string {
	out := briefs(s.out)
	s.out = s.out[:0]
	return out
}

func veth(index int32, name string, up, lower bool) linkMsg {
	return linkMsg{index: index, name: name, up: up, lowerUp: lower, mtu: 1500, mac: "ae:9b:55:89:4b:de", oper: "up"}
}

func address(index int32, a string, usable bool) addrMsg {
	p := netip.MustParsePrefix(a)
	return addrMsg{key: addrKey{index: index, addr: p.Addr(), prefixlen: uint8(p.Bits())}, scope: "global", usable: usable}
}

// TestStateEvents applies sequences of messages as the kernel sends them
// and checks that only changes become events.
func TestStateEvents(t *testing.T) {
	type step struct {
		link *linkMsg
		addr *addrMsg
		want []string
	}
	L := func(m linkMsg, want ...string) step { return step{link: &m, want: want} }
	A := func(m addrMsg, want ...string) step { return step{addr: &m, want: want} }
	gone := func(m linkMsg) linkMsg { m.del = true; return m }
	mtu := func(m linkMsg, n uint32) linkMsg { m.mtu = n; return m }
	tests := []struct {
		name  string
		steps []step
	}{
		{"veth pair created and brought up", []step{
			L(veth(3, "veth0", false, false)),
			L(veth(2, "veth1", false, false)),
			L(veth(3, "veth0", true, false), "link-up veth0"),
			L(veth(2, "veth1", true, true), "link-up veth1", "carrier veth1"),
			L(veth(3, "veth0", true, true), "carrier veth0"),
		}},
		{"repeated RTM_NEWLINK without a flag change", []step{
			L(veth(3, "veth0", true, true), "link-up veth0", "carrier veth0"),
			L(veth(3, "veth0", true, true)),
			L(mtu(veth(3, "veth0", true, true), 1400)),
		}},
		{"veth1 down: the carrier goes first", []step{
			L(veth(3, "veth0", true, true), "link-up veth0", "carrier veth0"),
			L(veth(2, "veth1", true, true), "link-up veth1", "carrier veth1"),
			L(veth(2, "veth1", false, false), "no-carrier veth1", "link-down veth1"),
			L(veth(3, "veth0", true, false), "no-carrier veth0"),
		}},
		{"addresses added and removed", []step{
			L(veth(3, "veth0", false, false)),
			A(address(3, "192.0.2.10/24", true), "address-add veth0 192.0.2.10/24"),
			A(address(3, "192.0.2.10/24", true)), // a lifetime update
			A(address(3, "192.0.2.10/16", true), "address-add veth0 192.0.2.10/16"),
			A(del(address(3, "192.0.2.10/24", true)), "address-remove veth0 192.0.2.10/24"),
			A(del(address(3, "192.0.2.10/24", true))),
		}},
		{"IPv6 address usable after duplicate address detection", []step{
			L(veth(3, "veth0", true, true), "link-up veth0", "carrier veth0"),
			A(address(3, "2001:db8::10/64", false)),
			A(address(3, "2001:db8::10/64", true), "address-add veth0 2001:db8::10/64"),
			A(address(3, "2001:db8::10/64", false), "address-remove veth0 2001:db8::10/64"),
		}},
		{"link deleted: down, then its addresses", []step{
			L(veth(3, "veth0", true, true), "link-up veth0", "carrier veth0"),
			A(address(3, "192.0.2.10/24", true), "address-add veth0 192.0.2.10/24"),
			A(address(3, "2001:db8::10/64", true), "address-add veth0 2001:db8::10/64"),
			L(gone(veth(3, "veth0", true, true)), "no-carrier veth0", "link-down veth0",
				"address-remove veth0 192.0.2.10/24", "address-remove veth0 2001:db8::10/64"),
			L(gone(veth(3, "veth0", false, false))),
		}},
		{"a link that appears up", []step{
			L(veth(7, "usb0", true, true), "link-up usb0", "carrier usb0"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newState()
			for i, st := range tt.steps {
				if st.link != nil {
					s.applyLink(*st.link)
				} else if !s.applyAddr(*st.addr) {
					t.Fatalf("step %d: address of an unknown link", i)
				}
				want := st.want
				if want == nil {
					want = []string{}
				}
				if diff := cmp.Diff(want, take(s)); diff != "" {
					t.Errorf("step %d (-want +got):\n%s", i, diff)
				}
			}
		})
	}
}

func TestStateAddressOfUnknownLink(t *testing.T) {
	s := newState()
	if s.applyAddr(address(9, "192.0.2.1/24", true)) {
		t.Error("a new address of a link not heard of was taken")
	}
	if !s.applyAddr(del(address(9, "192.0.2.1/24", true))) {
		t.Error("the removal of an address of a link not heard of asks for a dump")
	}
	if got := take(s); len(got) != 0 {
		t.Errorf("events %q, want none", got)
	}
}

func del(m addrMsg) addrMsg { m.del = true; return m }

// TestStateSweep: at the end of a dump, what neither the dump nor a
// change meanwhile mentioned is gone; what they mentioned stays.
func TestStateSweep(t *testing.T) {
	s := newState()
	s.gen = 1
	s.applyLink(veth(2, "veth1", true, true))
	s.applyLink(veth(3, "veth0", true, true))
	s.applyLink(veth(4, "veth2", true, false))
	s.applyAddr(address(3, "192.0.2.10/24", true))
	s.applyAddr(address(3, "192.0.2.11/24", true))
	s.applyAddr(address(2, "192.0.2.12/24", true))
	take(s)

	s.gen = 2 // the dump after an overrun: veth1 went, veth0 lost its carrier
	s.applyLink(veth(3, "veth0", true, false))
	s.applyLink(veth(4, "veth2", true, false))
	s.sweepLinks()
	s.applyAddr(address(3, "192.0.2.11/24", true))
	s.applyAddr(address(3, "192.0.2.13/24", true))
	s.sweepAddrs()
	want := []string{
		"no-carrier veth0",
		"no-carrier veth1", "link-down veth1", "address-remove veth1 192.0.2.12/24",
		"address-add veth0 192.0.2.13/24",
		"address-remove veth0 192.0.2.10/24",
	}
	if diff := cmp.Diff(want, take(s)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestStateSnapshot(t *testing.T) {
	s := newState()
	s.applyLink(veth(3, "veth0", true, true))
	s.applyLink(veth(1, "lo", false, false))
	s.applyLink(veth(2, "veth1", true, false))
	s.applyAddr(address(3, "2001:db8::10/64", true))
	s.applyAddr(address(3, "192.0.2.10/24", true))
	s.applyAddr(address(3, "2001:db8::1/64", false)) // tentative: not there yet
	take(s)
	snap := s.snapshot()
	want := []string{"link-up veth1", "link-up veth0", "carrier veth0",
		"address-add veth0 192.0.2.10/24", "address-add veth0 2001:db8::10/64"}
	if diff := cmp.Diff(want, briefs(snap)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, ev := range snap {
		if ev.Source != uevent.SourceColdplug {
			t.Errorf("%s: source %s, want coldplug", brief(ev), ev.Source)
		}
	}
	if len(s.out) != 0 {
		t.Errorf("the snapshot left %d events to deliver", len(s.out))
	}
}

// TestEventProperties: an event has what hotplugd.rules(5) promises.
func TestEventProperties(t *testing.T) {
	s := newState()
	s.applyLink(linkMsg{index: 3, name: "veth0", up: true, mtu: 1400, mac: "ae:9b:55:89:4b:de", oper: "lowerlayerdown"})
	s.applyAddr(address(3, "2001:db8::10/64", true))
	want := []uevent.Event{
		{Action: "link-up", DevPath: "/devices/virtual/net/veth0", Subsystem: "net", DevName: "veth0", Source: uevent.SourceRoute,
			Props: props("ACTION=link-up DEVPATH=/devices/virtual/net/veth0 SUBSYSTEM=net INTERFACE=veth0 IFINDEX=3 OPERSTATE=lowerlayerdown MTU=1400 MAC=ae:9b:55:89:4b:de")},
		{Action: "address-add", DevPath: "/devices/virtual/net/veth0", Subsystem: "net", DevName: "veth0", Source: uevent.SourceRoute,
			Props: props("ACTION=address-add DEVPATH=/devices/virtual/net/veth0 SUBSYSTEM=net INTERFACE=veth0 IFINDEX=3 OPERSTATE=lowerlayerdown MTU=1400 MAC=ae:9b:55:89:4b:de " +
				"ADDRESS=2001:db8::10 PREFIXLEN=64 FAMILY=inet6 SCOPE=global")},
	}
	if diff := cmp.Diff(want, s.out); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// What the listener makes passes the checks of a recorded event.
	for _, ev := range s.out {
		if _, err := uevent.FromProps(append(ev.Props, uevent.Property{Key: "SEQNUM", Value: "0"})); err != nil {
			t.Errorf("%s: %v", brief(ev), err)
		}
	}
}

func props(s string) []uevent.Property {
	var out []uevent.Property
	for _, kv := range strings.Fields(s) {
		k, v, _ := strings.Cut(kv, "=")
		out = append(out, uevent.Property{Key: k, Value: v})
	}
	return out
}

func TestValidName(t *testing.T) {
	for name, want := range map[string]bool{
		"veth0": true, "enp0s31f6": true, "wlp3s0": true, "a": true, "123456789012345": true,
		"": false, ".": false, "..": false, "1234567890123456": false, "a/b": false, "eth0:1": false,
		"a b": false, "a\nb": false, "a\x00": false,
	} {
		if got := validName(name); got != want {
			t.Errorf("validName(%q) = %v, want %v", name, got, want)
		}
	}
}
