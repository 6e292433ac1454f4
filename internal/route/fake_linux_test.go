package route

import (
	"encoding/binary"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/logtest"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// nlmsg appends one netlink message to b.
func nlmsg(b []byte, typ uint16, flags uint16, seq uint32, body []byte) []byte {
	h := make([]byte, unix.NLMSG_HDRLEN)
	binary.NativeEndian.PutUint32(h[0:], uint32(unix.NLMSG_HDRLEN+len(body)))
	binary.NativeEndian.PutUint16(h[4:], typ)
	binary.NativeEndian.PutUint16(h[6:], flags)
	binary.NativeEndian.PutUint32(h[8:], seq)
	b = append(b, h...)
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func rtattr(b []byte, typ uint16, v []byte) []byte {
	a := make([]byte, 4, 4+len(v)+3)
	binary.NativeEndian.PutUint16(a[0:], uint16(4+len(v)))
	binary.NativeEndian.PutUint16(a[2:], typ)
	a = append(a, v...)
	for len(a)%4 != 0 {
		a = append(a, 0)
	}
	return append(b, a...)
}

// linkBody is the ifinfomsg and attributes the kernel sends for l.
func linkBody(l linkMsg) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(b[4:], uint32(l.index))
	var flags uint32
	if l.up {
		flags |= unix.IFF_UP
	}
	if l.lowerUp {
		flags |= unix.IFF_LOWER_UP | unix.IFF_RUNNING
	}
	binary.NativeEndian.PutUint32(b[8:], flags)
	b = rtattr(b, unix.IFLA_IFNAME, append([]byte(l.name), 0))
	b = rtattr(b, unix.IFLA_MTU, binary.NativeEndian.AppendUint32(nil, l.mtu))
	if mac, err := net.ParseMAC(l.mac); err == nil {
		b = rtattr(b, unix.IFLA_ADDRESS, mac)
	}
	oper := byte(2)
	if l.lowerUp {
		oper = 6
	}
	return rtattr(b, unix.IFLA_OPERSTATE, []byte{oper})
}

// addrBody is the ifaddrmsg and attributes the kernel sends for a.
func addrBody(a addrMsg) []byte {
	b := make([]byte, unix.SizeofIfAddrmsg)
	b[0], b[1] = unix.AF_INET6, a.key.prefixlen
	if a.key.addr.Is4() {
		b[0] = unix.AF_INET
	}
	binary.NativeEndian.PutUint32(b[4:], uint32(a.key.index))
	var flags uint32
	if !a.usable {
		flags = unix.IFA_F_TENTATIVE
	}
	b = rtattr(b, unix.IFA_ADDRESS, a.key.addr.AsSlice())
	if a.key.addr.Is4() {
		b = rtattr(b, unix.IFA_LOCAL, a.key.addr.AsSlice())
	}
	return rtattr(b, unix.IFA_FLAGS, binary.NativeEndian.AppendUint32(nil, flags))
}

// received is one message of a fakeKernel.
type received struct {
	b   []byte
	s   sender
	err error
}

// kernel is what a kernel sends: multicast from port 0 with root's
// credentials.
var kernel = sender{groups: unix.RTMGRP_LINK, hasCreds: true}

// fakeKernel is a conn that answers dumps from its links and addresses
// and delivers what a test queues.
type fakeKernel struct {
	mu    sync.Mutex
	links map[int32]linkMsg
	addrs map[addrKey]addrMsg
	dumps []uint16 // the requests sent, by type
	// dumpFlags are added to the flags of each dump message (NLM_F_DUMP_INTR).
	dumpFlags uint16
	in        chan received
	done      chan struct{}
	once      sync.Once
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{links: map[int32]linkMsg{}, addrs: map[addrKey]addrMsg{},
		in: make(chan received, 1024), done: make(chan struct{})}
}

func (k *fakeKernel) receive() ([]byte, sender, error) {
	select {
	case r := <-k.in:
		return r.b, r.s, r.err
	case <-k.done:
		return nil, sender{}, errClosed
	}
}

func (k *fakeKernel) close() error { k.once.Do(func() { close(k.done) }); return nil }

// send answers a dump request as the kernel does: the objects in
// messages with its seq, then NLMSG_DONE.
func (k *fakeKernel) send(req []byte) error {
	typ, seq := binary.NativeEndian.Uint16(req[4:]), binary.NativeEndian.Uint32(req[8:])
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dumps = append(k.dumps, typ)
	var b []byte
	flags := unix.NLM_F_MULTI | k.dumpFlags
	switch typ {
	case unix.RTM_GETLINK:
		for _, i := range slices.Sorted(maps.Keys(k.links)) {
			b = nlmsg(b, unix.RTM_NEWLINK, flags, seq, linkBody(k.links[i]))
		}
	case unix.RTM_GETADDR:
		for _, a := range k.addrs {
			b = nlmsg(b, unix.RTM_NEWADDR, flags, seq, addrBody(a))
		}
	}
	unicast := sender{hasCreds: true}
	if b != nil {
		k.in <- received{b: b, s: unicast}
	}
	k.in <- received{b: nlmsg(nil, unix.NLMSG_DONE, flags, seq, make([]byte, 4)), s: unicast}
	return nil
}

// setLink changes a link in the kernel; notify also sends the change.
func (k *fakeKernel) setLink(l linkMsg, notify bool) {
	k.mu.Lock()
	k.links[l.index] = l
	k.mu.Unlock()
	if notify {
		k.in <- received{b: nlmsg(nil, unix.RTM_NEWLINK, 0, 0, linkBody(l)), s: kernel}
	}
}

// setAddr adds (or with a.del removes) an address in the kernel; notify
// also sends the change.
func (k *fakeKernel) setAddr(a addrMsg, notify bool) {
	k.mu.Lock()
	typ := uint16(unix.RTM_NEWADDR)
	if a.del {
		delete(k.addrs, a.key)
		typ = unix.RTM_DELADDR
	} else {
		k.addrs[a.key] = a
	}
	k.mu.Unlock()
	if notify {
		k.in <- received{b: nlmsg(nil, typ, 0, 0, addrBody(a)), s: kernel}
	}
}

// requests are the dump requests sent so far.
func (k *fakeKernel) requests() []uint16 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.dumps)
}

// collector is a Handler that keeps the events.
type collector struct {
	ch chan string
}

func (c *collector) Event(ev uevent.Event) { c.ch <- brief(ev) + " " + string(ev.Source) }

// expect waits for the next events and compares them with want.
func (c *collector) expect(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	for range want {
		select {
		case s := <-c.ch:
			got = append(got, s)
		case <-time.After(5 * time.Second):
			t.Fatalf("events %q, then nothing; want %q", got, want)
		}
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// quiet checks that no event comes.
func (c *collector) quiet(t *testing.T) {
	t.Helper()
	select {
	case s := <-c.ch:
		t.Fatalf("unexpected event %s", s)
	case <-time.After(50 * time.Millisecond):
	}
}

// startFake syncs a Listener with k and runs it into a collector until
// the test ends.
func startFake(t *testing.T, k *fakeKernel, initial bool) (*Listener, *collector) {
	t.Helper()
	log, _ := logtest.New(t)
	l := newListener(k, nil, log)
	if err := l.sync(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if initial {
		l.initial = l.st.snapshot()
	}
	c := &collector{ch: make(chan string, 1024)}
	done := make(chan error, 1)
	go func() { done <- l.Run(t.Context(), c) }()
	t.Cleanup(func() {
		l.Close()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return l, c
}
