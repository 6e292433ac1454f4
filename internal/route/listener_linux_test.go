package route

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// waitStats waits until cond holds for l's counters.
func waitStats(t *testing.T, l *Listener, what string, cond func(Stats) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond(l.Stats()) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: stats %+v", what, l.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestSenderChecks: messages that do not come from the kernel, or come
// cut, or do not parse, are dropped and counted one reason each; a
// real one after them is delivered.
func TestSenderChecks(t *testing.T) {
	k := newFakeKernel()
	k.setLink(veth(3, "veth0", false, false), false)
	l, c := startFake(t, k, false)
	up := nlmsg(nil, unix.RTM_NEWLINK, 0, 0, linkBody(veth(3, "veth0", true, true)))
	steps := []struct {
		name string
		s    sender
		b    []byte
		n    func(Stats) uint64
	}{
		{"from a userspace port, multicast", sender{port: 4242, groups: unix.RTMGRP_LINK, hasCreds: true}, up, func(s Stats) uint64 { return s.DroppedSender }},
		{"from a userspace port, unicast", sender{port: 4242, hasCreds: true}, up, func(s Stats) uint64 { return s.DroppedSender }},
		{"without credentials", sender{groups: unix.RTMGRP_LINK}, up, func(s Stats) uint64 { return s.DroppedCreds }},
		{"claiming uid 1000", sender{groups: unix.RTMGRP_LINK, hasCreds: true, uid: 1000}, up, func(s Stats) uint64 { return s.DroppedCreds }},
		{"truncated", sender{groups: unix.RTMGRP_LINK, hasCreds: true, truncated: true}, up, func(s Stats) uint64 { return s.DroppedTruncated }},
		{"malformed", kernel, up[:20], func(s Stats) uint64 { return s.DroppedParse }},
	}
	for _, st := range steps {
		before := st.n(l.Stats())
		k.in <- received{b: st.b, s: st.s}
		waitStats(t, l, st.name, func(s Stats) bool { return st.n(s) == before+1 })
	}
	c.quiet(t)
	k.in <- received{b: up, s: kernel}
	c.expect(t, "link-up veth0 route", "carrier veth0 route")
	s := l.Stats()
	if s.Received != s.Accepted+s.Dropped() || s.Dropped() != uint64(len(steps)) {
		t.Errorf("stats %+v: want received = accepted + dropped, %d dropped", s, len(steps))
	}
}

// TestOverrunRedumps: after ENOBUFS the listener lists links and
// addresses again and emits what changed while messages were lost, and
// nothing else.
func TestOverrunRedumps(t *testing.T) {
	k := newFakeKernel()
	k.setLink(veth(2, "veth1", true, true), false)
	k.setLink(veth(3, "veth0", true, true), false)
	k.setAddr(address(3, "192.0.2.10/24", true), false)
	k.setAddr(address(3, "192.0.2.11/24", true), false)
	l, c := startFake(t, k, false)

	// Lost: veth1 deleted (veth0 loses its carrier), 192.0.2.10 removed,
	// 2001:db8::10 added; and an address added and removed again, of
	// which nothing is left to tell.
	delete(k.links, 2)
	k.setLink(veth(3, "veth0", true, false), false)
	k.setAddr(del(address(3, "192.0.2.10/24", true)), false)
	k.setAddr(address(3, "2001:db8::10/64", true), false)
	k.in <- received{err: errOverrun}
	c.expect(t,
		"no-carrier veth0 route",
		"no-carrier veth1 route", "link-down veth1 route",
		"address-add veth0 2001:db8::10/64 route",
		"address-remove veth0 192.0.2.10/24 route")
	c.quiet(t)
	want := []uint16{unix.RTM_GETLINK, unix.RTM_GETADDR, unix.RTM_GETLINK, unix.RTM_GETADDR}
	if diff := cmp.Diff(want, k.requests()); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
	if s := l.Stats(); s.Overruns != 1 || s.Dumps != 2 {
		t.Errorf("stats %+v, want 1 overrun and 2 dumps", s)
	}
}

// TestInconsistentDumpNotSwept: a dump the kernel flags as interrupted
// may lack an object, so nothing is removed for its sake; the listener
// dumps again.
func TestInconsistentDumpNotSwept(t *testing.T) {
	k := newFakeKernel()
	k.setLink(veth(3, "veth0", true, true), false)
	k.setAddr(address(3, "192.0.2.10/24", true), false)
	l, c := startFake(t, k, false)

	k.mu.Lock()
	k.dumpFlags = unix.NLM_F_DUMP_INTR
	delete(k.addrs, address(3, "192.0.2.10/24", true).key) // as if the dump missed it
	k.mu.Unlock()
	k.in <- received{err: errOverrun}
	// One dump for the overrun, then maxRedumps more, then it waits.
	waitStats(t, l, "the dumps again", func(s Stats) bool { return s.Dumps == 2+maxRedumps })
	c.quiet(t)
	time.Sleep(50 * time.Millisecond)
	if n := l.Stats().Dumps; n != 2+maxRedumps {
		t.Errorf("%d dumps, want %d", n, 2+maxRedumps)
	}
}

// TestAddressOfUnknownLink: an address of a link whose RTM_NEWLINK was
// lost makes the listener dump, which finds the link and the address.
func TestAddressOfUnknownLink(t *testing.T) {
	k := newFakeKernel()
	_, c := startFake(t, k, false)
	k.setLink(veth(5, "usb0", true, true), false)
	k.setAddr(address(5, "192.0.2.20/24", true), true)
	c.expect(t, "link-up usb0 route", "carrier usb0 route", "address-add usb0 192.0.2.20/24 route")
}

// TestInitialState: with Config.Initial, what is there at start is
// announced first, with source coldplug; only changes follow.
func TestInitialState(t *testing.T) {
	k := newFakeKernel()
	k.setLink(veth(1, "lo", true, true), false)
	k.setLink(veth(3, "veth0", true, false), false)
	k.setAddr(address(1, "127.0.0.1/8", true), false)
	_, c := startFake(t, k, true)
	c.expect(t, "link-up lo coldplug", "carrier lo coldplug", "link-up veth0 coldplug", "address-add lo 127.0.0.1/8 coldplug")
	k.setLink(veth(3, "veth0", true, false), true)
	k.setLink(veth(3, "veth0", true, true), true)
	c.expect(t, "carrier veth0 route")
}
