package route

// Integration tests against the real kernel: veth pairs of their own
// (internal/nettest), real links and addresses. They need root; with
// CI=true a missing prerequisite fails them instead of skipping them.

import (
	"encoding/binary"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/logtest"
	"github.com/hotplugd/hotplugd/internal/looptest"
	"github.com/hotplugd/hotplugd/internal/nettest"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// waitEvent bounds waiting for one event; it is no speed requirement.
const waitEvent = 10 * time.Second

// netCollector keeps the events of the interfaces it is told about:
// other programs may change other links meanwhile.
type netCollector struct {
	mu    sync.Mutex
	names map[string]bool
	ch    chan uevent.Event
}

func newNetCollector(names ...string) *netCollector {
	c := &netCollector{names: map[string]bool{}, ch: make(chan uevent.Event, 1<<16)}
	for _, n := range names {
		c.names[n] = true
	}
	return c
}

func (c *netCollector) Event(ev uevent.Event) {
	c.mu.Lock()
	ours := c.names[ev.DevName]
	c.mu.Unlock()
	if ours {
		c.ch <- ev
	}
}

// next waits for the next event.
func (c *netCollector) next(t *testing.T) uevent.Event {
	t.Helper()
	select {
	case ev := <-c.ch:
		return ev
	case <-time.After(waitEvent):
		t.Fatalf("no event within %v", waitEvent)
	}
	return uevent.Event{}
}

// expect waits for len(want) events ("ACTION INTERFACE") and compares
// them per interface: the events of one link come in order, those of two
// links may interleave.
func (c *netCollector) expect(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	for range want {
		ev := c.next(t)
		got = append(got, ev.Action+" "+ev.DevName)
	}
	if diff := cmp.Diff(perLink(want), perLink(got)); diff != "" {
		t.Fatalf("events %q, want %q per link (-want +got):\n%s", got, want, diff)
	}
}

// quiet checks that no event comes for a while.
func (c *netCollector) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case ev := <-c.ch:
		t.Fatalf("unexpected event %s %s", ev.Action, ev.DevName)
	case <-time.After(d):
	}
}

func perLink(evs []string) map[string][]string {
	m := map[string][]string{}
	for _, e := range evs {
		_, name, _ := strings.Cut(e, " ")
		m[name] = append(m[name], e)
	}
	return m
}

func needRoot(t testing.TB) {
	t.Helper()
	looptest.Need(t, os.Geteuid() == 0, "root (NETLINK_ROUTE changes and veth pairs)")
}

// start opens a Listener and runs it into h until the test ends.
func start(t testing.TB, cfg Config, h Handler) *Listener {
	t.Helper()
	needRoot(t)
	log, _ := logtest.New(t)
	l, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	runListener(t, l, h)
	return l
}

func runListener(t testing.TB, l *Listener, h Handler) {
	done := make(chan error, 1)
	go func() { done <- l.Run(t.Context(), h) }()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// TestVethLinksAndCarrier: both ends of a new veth pair come up; the
// carrier follows the peer: on when both ends are up, off when one goes
// down. A repeated RTM_NEWLINK without a flag change (a new MTU, an "up"
// of a link that is up) makes no event.
func TestVethLinksAndCarrier(t *testing.T) {
	p := nettest.Veth(t)
	c := newNetCollector(p.A, p.B)
	l := start(t, Config{}, c)

	nettest.IP(t, "link", "set", p.A, "up")
	ev := c.next(t) // its peer is down: no carrier yet
	want := uevent.Event{Action: "link-up", DevPath: "/devices/virtual/net/" + p.A, Subsystem: "net", DevName: p.A, Source: uevent.SourceRoute}
	mac, _ := os.ReadFile("/sys/class/net/" + p.A + "/address")
	for k, v := range map[string]string{"INTERFACE": p.A, "IFINDEX": fmt.Sprint(nettest.Index(t, p.A)), "MTU": "1500",
		"MAC": strings.TrimSpace(string(mac)), "OPERSTATE": "lowerlayerdown"} {
		if got := ev.Get(k); got != v {
			t.Errorf("%s=%q, want %q", k, got, v)
		}
	}
	ev.Props = nil
	if diff := cmp.Diff(want, ev); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	nettest.IP(t, "link", "set", p.B, "up")
	c.expect(t, "link-up "+p.B, "carrier "+p.B, "carrier "+p.A)

	// Messages without a flag change make no event: the next ones are
	// those of the peer going down.
	before := l.Stats().Accepted
	nettest.IP(t, "link", "set", p.A, "mtu", "1400")
	nettest.IP(t, "link", "set", p.A, "up")
	nettest.IP(t, "link", "set", p.A, "mtu", "1500")
	nettest.IP(t, "link", "set", p.B, "down")
	c.expect(t, "no-carrier "+p.B, "link-down "+p.B, "no-carrier "+p.A)
	if n := l.Stats().Accepted - before; n < 4 {
		t.Errorf("%d messages since the MTU change, want at least 4: the test saw no RTM_NEWLINK without a change", n)
	}

	nettest.IP(t, "link", "set", p.B, "up")
	c.expect(t, "link-up "+p.B, "carrier "+p.B, "carrier "+p.A)
	nettest.IP(t, "link", "del", p.A)
	c.expect(t, "no-carrier "+p.A, "link-down "+p.A, "no-carrier "+p.B, "link-down "+p.B)
	c.quiet(t, 200*time.Millisecond)
}

// TestVethAddresses: an IPv4 and an IPv6 address added and removed; an
// IPv6 address that goes through duplicate address detection is added
// once, when it can be used.
func TestVethAddresses(t *testing.T) {
	p := nettest.Veth(t)
	nettest.IP(t, "link", "set", p.A, "up")
	nettest.IP(t, "link", "set", p.B, "up")
	c := newNetCollector(p.A)
	start(t, Config{}, c)
	c.quiet(t, 100*time.Millisecond) // the carrier came before the listener

	check := func(action, address, prefixlen, family string) {
		t.Helper()
		ev := c.next(t)
		got := []string{ev.Action, ev.Get("ADDRESS"), ev.Get("PREFIXLEN"), ev.Get("FAMILY"), ev.Get("SCOPE"), ev.Get("INTERFACE"), ev.DevPath}
		want := []string{action, address, prefixlen, family, "global", p.A, "/devices/virtual/net/" + p.A}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("(-want +got):\n%s", diff)
		}
	}
	nettest.IP(t, "addr", "add", "192.0.2.10/24", "dev", p.A)
	check("address-add", "192.0.2.10", "24", "inet")
	nettest.IP(t, "addr", "add", "2001:db8::10/64", "dev", p.A, "nodad")
	check("address-add", "2001:db8::10", "64", "inet6")
	added := time.Now()
	nettest.IP(t, "addr", "add", "2001:db8::20/64", "dev", p.A)
	check("address-add", "2001:db8::20", "64", "inet6")
	t.Logf("2001:db8::20 usable after %v of duplicate address detection", time.Since(added))
	nettest.IP(t, "addr", "del", "192.0.2.10/24", "dev", p.A)
	check("address-remove", "192.0.2.10", "24", "inet")
	nettest.IP(t, "addr", "del", "2001:db8::10/64", "dev", p.A)
	check("address-remove", "2001:db8::10", "64", "inet6")
	c.quiet(t, 200*time.Millisecond)
}

// TestDevpathFromSysfs: events carry the devpath of the interface's
// uevents, read from sysfs and checked against its ifindex.
func TestDevpathFromSysfs(t *testing.T) {
	root, err := os.OpenRoot("/sys")
	looptest.Need(t, err == nil, fmt.Sprintf("/sys: %v", err))
	defer root.Close()
	s := sysfs{root}
	entries, _ := os.ReadDir("/sys/class/net")
	looptest.Need(t, len(entries) > 0, "interfaces in /sys/class/net")
	for _, e := range entries {
		target, err := os.Readlink("/sys/class/net/" + e.Name())
		if err != nil {
			continue
		}
		want := "/" + strings.TrimPrefix(target, "../../")
		index := int32(nettest.Index(t, e.Name()))
		if got, sure := s.devpath(e.Name(), index); got != want || !sure {
			t.Errorf("%s: devpath %q (sure %v), want %q", e.Name(), got, sure, want)
		}
		if _, sure := s.devpath(e.Name(), index+1000); sure {
			t.Errorf("%s: sure of the devpath with another ifindex", e.Name())
		}
	}
	if got, sure := s.devpath("hpnothere0", 99999); got != "/devices/virtual/net/hpnothere0" || sure {
		t.Errorf("devpath of an interface not in sysfs: %q, %v", got, sure)
	}
}

// inNewNetns makes a Listener and a plain NETLINK_ROUTE socket in a
// network namespace of their own, where forging messages to the route
// groups reaches no other program of the machine.
func inNewNetns(t *testing.T) (*Listener, int) {
	t.Helper()
	needRoot(t)
	type made struct {
		l   *Listener
		fd  int
		err error
	}
	ch := make(chan made, 1)
	log, _ := logtest.New(t)
	go func() {
		// The thread stays locked to the new namespace and ends with
		// this goroutine; the sockets keep the namespace.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ch <- made{err: fmt.Errorf("unshare CLONE_NEWNET: %w", err)}
			return
		}
		l, err := New(Config{}, log)
		if err != nil {
			ch <- made{err: err}
			return
		}
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
		if err == nil {
			err = unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		}
		ch <- made{l, fd, err}
	}()
	m := <-ch
	looptest.Need(t, m.err == nil, fmt.Sprintf("a network namespace of the test's own: %v", m.err))
	t.Cleanup(func() { unix.Close(m.fd) })
	return m.l, m.fd
}

// portOf returns the netlink port id the kernel gave l's socket.
func portOf(t *testing.T, l *Listener) uint32 {
	t.Helper()
	var sa unix.Sockaddr
	var err error
	if cerr := l.conn.(*netlinkConn).rc.Control(func(fd uintptr) { sa, err = unix.Getsockname(int(fd)) }); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil {
		t.Fatal(err)
	}
	return sa.(*unix.SockaddrNetlink).Pid
}

// TestForgedMessagesDropped: root in a network namespace of its own
// multicasts a new link and an address to the listener's groups, as any
// process with CAP_NET_ADMIN can, and sends a new link to the listener's
// port, as anyone can, each with root's credentials: all are dropped and
// counted, and a real change after them is delivered.
func TestForgedMessagesDropped(t *testing.T) {
	l, fd := inNewNetns(t)
	c := newNetCollector("lo", "evil0")
	runListener(t, l, c)
	// Without NLM_F_REQUEST the kernel, which gets what is sent with
	// port 0 too, ignores them.
	evilLink := nlmsg(nil, unix.RTM_NEWLINK, 0, 0, linkBody(linkMsg{index: 99, name: "evil0", up: true, lowerUp: true, mtu: 1500}))
	evilAddr := nlmsg(nil, unix.RTM_NEWADDR, 0, 0, addrBody(address(1, "203.0.113.66/32", true)))
	root := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid())})
	for _, f := range []struct {
		name string
		b    []byte
		to   unix.SockaddrNetlink
	}{
		{"a link, multicast", evilLink, unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_LINK}},
		{"an address, multicast", evilAddr, unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: unix.RTMGRP_IPV4_IFADDR}},
		{"a link, to the listener's port", evilLink, unix.SockaddrNetlink{Family: unix.AF_NETLINK, Pid: portOf(t, l)}},
	} {
		before := l.Stats().DroppedSender
		if _, err := unix.SendmsgN(fd, f.b, root, &f.to, 0); err != nil {
			t.Fatalf("send %s: %v", f.name, err)
		}
		waitStats(t, l, f.name+" dropped", func(s Stats) bool { return s.DroppedSender == before+1 })
	}

	// A real change, asked of the kernel: lo up.
	up := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(up[4:], 1)
	binary.NativeEndian.PutUint32(up[8:], unix.IFF_UP)
	binary.NativeEndian.PutUint32(up[12:], unix.IFF_UP)
	req := nlmsg(nil, unix.RTM_NEWLINK, unix.NLM_F_REQUEST|unix.NLM_F_ACK, 1, up)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	if ev := c.next(t); ev.Action != "link-up" || ev.DevName != "lo" {
		t.Fatalf("first event %s %s, want link-up lo", ev.Action, ev.DevName)
	}
	deadline := time.After(300 * time.Millisecond)
	for {
		select {
		case ev := <-c.ch:
			if ev.DevName == "evil0" || ev.Get("ADDRESS") == "203.0.113.66" {
				t.Fatalf("forged event delivered: %s %v", ev.Action, ev.Props)
			}
			continue
		case <-deadline:
		}
		break
	}
	if s := l.Stats(); s.DroppedSender != 3 || s.Dropped() != 3 {
		t.Errorf("stats %+v, want 3 dropped for their sender", s)
	}
}

// model applies the address events of one interface to a set, as a rule
// sees them, and counts those that contradict it: an add of an address
// it holds, a remove of one it does not. Its first address event waits
// for gate, so that the listener stops reading meanwhile.
type model struct {
	name  string
	gate  chan struct{}
	once  sync.Once
	mu    sync.Mutex
	addrs map[netip.Addr]bool
	seen  int
	wrong []string
}

func newModel(name string) *model {
	return &model{name: name, gate: make(chan struct{}), addrs: map[netip.Addr]bool{}}
}

func (m *model) Event(ev uevent.Event) {
	if ev.DevName != m.name || !strings.HasPrefix(ev.Action, "address-") {
		return
	}
	m.once.Do(func() { <-m.gate })
	a := netip.MustParseAddr(ev.Get("ADDRESS"))
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seen++
	if m.addrs[a] == (ev.Action == "address-add") {
		m.wrong = append(m.wrong, ev.Action+" "+a.String())
	}
	if ev.Action == "address-add" {
		m.addrs[a] = true
	} else {
		delete(m.addrs, a)
	}
}

// equal reports whether the model holds exactly want.
func (m *model) equal(want map[netip.Addr]bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Equal(m.addrs, want)
}

// TestOverrunShrunkenBuffer: with a receive buffer of a few KiB and a
// reader held up, a storm of address changes overruns it; afterwards
// the rules have seen the final state of every address, and no event
// contradicted what they saw before.
func TestOverrunShrunkenBuffer(t *testing.T) {
	p := nettest.Veth(t)
	nettest.IP(t, "link", "set", p.A, "up")
	m := newModel(p.A)
	l := start(t, Config{RcvBuf: 4096}, m)
	const n = 4000
	keep := func(i int) bool { return i%7 == 3 }
	nettest.Storm(t, nettest.Index(t, p.A), n, keep)
	close(m.gate)

	want := map[netip.Addr]bool{}
	for i := range n {
		if keep(i) {
			want[nettest.StormAddr(i)] = true
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !m.equal(want) || l.Stats().Dumps < 2 {
		if time.Now().After(deadline) {
			m.mu.Lock()
			t.Fatalf("the rules hold %d addresses, want %d; stats %+v", len(m.addrs), len(want), l.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // nothing more may come
	s := l.Stats()
	m.mu.Lock()
	defer m.mu.Unlock()
	if !maps.Equal(m.addrs, want) || len(m.wrong) > 0 {
		t.Errorf("after the storm: %d addresses (want %d), contradicting events %q", len(m.addrs), len(want), m.wrong)
	}
	if s.Overruns == 0 {
		t.Errorf("no overrun with a buffer of 4 KiB: stats %+v", s)
	}
	t.Logf("%d changes, %d address events seen, stats %+v", 2*n-len(want), m.seen, s)
}
