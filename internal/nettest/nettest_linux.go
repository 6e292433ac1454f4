package nettest

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// Pair is a veth pair: A and B are the names of its ends.
type Pair struct {
	A, B string
}

// Veth creates a veth pair with fresh names (hp + 6 hex digits + a or
// b), both ends down and without IPv6 link-local addresses, so that
// only what the test does changes them; t.Cleanup deletes it.
func Veth(t testing.TB) Pair {
	t.Helper()
	looptest.Need(t, os.Geteuid() == 0, "root (veth pairs)")
	looptest.Need(t, looptest.ToolPath("ip") != "", "ip (iproute2)")
	var b [3]byte
	_, _ = rand.Read(b[:])
	p := Pair{A: "hp" + hex.EncodeToString(b[:]) + "a", B: "hp" + hex.EncodeToString(b[:]) + "b"}
	_, err := looptest.RunErr("ip", "link", "add", p.A, "type", "veth", "peer", "name", p.B)
	looptest.Need(t, err == nil, fmt.Sprintf("veth pairs: %v", err))
	t.Cleanup(func() {
		if _, err := looptest.RunErr("ip", "link", "del", p.A); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			t.Errorf("delete veth %s: %v", p.A, err)
		}
	})
	for _, name := range []string{p.A, p.B} {
		IP(t, "link", "set", "dev", name, "addrgenmode", "none")
	}
	return p
}

// IP runs ip(8) with args and fails the test if it fails.
func IP(t testing.TB, args ...string) string {
	t.Helper()
	return looptest.Run(t, "ip", args...)
}

// Index is the ifindex of interface name.
func Index(t testing.TB, name string) int {
	t.Helper()
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return ifi.Index
}

// StormAddr is the i-th address of a storm: 198.18.0.0/15, the range
// kept for benchmarks (RFC 2544), holds 131072 of them.
func StormAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)})
}

// Storm sends, as fast as the kernel takes them, one RTM_NEWADDR (a /32
// of StormAddr) and then one RTM_DELADDR request for each i in [0, n)
// to the interface index, leaving out the delete of each i for which
// keep(i) is true (keep may be nil). Then it checks that the kernel
// refused none of them. Each request makes one notification.
func Storm(t testing.TB, index, n int, keep func(i int) bool) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// Errors come back whether or not an ack is asked for; a buffer for
	// all of them keeps the kernel from dropping one.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	kernel := &unix.SockaddrNetlink{Family: unix.AF_NETLINK}
	seq := uint32(0)
	for i := range n {
		for _, typ := range []uint16{unix.RTM_NEWADDR, unix.RTM_DELADDR} {
			if typ == unix.RTM_DELADDR && keep != nil && keep(i) {
				continue
			}
			seq++
			if err := unix.Sendto(fd, addrRequest(typ, seq, index, StormAddr(i)), 0, kernel); err != nil {
				t.Fatalf("request %d: %v", seq, err)
			}
		}
	}
	checkNoErrors(t, fd)
}

// addrRequest is an RTM_NEWADDR or RTM_DELADDR request for a /32.
func addrRequest(typ uint16, seq uint32, index int, a netip.Addr) []byte {
	const size = unix.NLMSG_HDRLEN + unix.SizeofIfAddrmsg + 2*(unix.SizeofRtAttr+4)
	b := make([]byte, size)
	flags := uint16(unix.NLM_F_REQUEST)
	if typ == unix.RTM_NEWADDR {
		flags |= unix.NLM_F_CREATE | unix.NLM_F_EXCL
	}
	binary.NativeEndian.PutUint32(b[0:], size)
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], seq)
	h := b[unix.NLMSG_HDRLEN:]
	h[0], h[1] = unix.AF_INET, 32 // family, prefix length
	binary.NativeEndian.PutUint32(h[4:], uint32(index))
	ip := a.As4()
	for i, typ := range []uint16{unix.IFA_LOCAL, unix.IFA_ADDRESS} {
		at := h[unix.SizeofIfAddrmsg+i*8:]
		binary.NativeEndian.PutUint16(at[0:], unix.SizeofRtAttr+4)
		binary.NativeEndian.PutUint16(at[2:], typ)
		copy(at[4:], ip[:])
	}
	return b
}

// checkNoErrors reads what the kernel answered: only errors, since no
// ack was asked for.
func checkNoErrors(t testing.TB, fd int) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		if err == unix.EAGAIN {
			return
		}
		if err != nil {
			t.Fatalf("storm socket: %v", err)
		}
		for b := buf[:n]; len(b) >= unix.NLMSG_HDRLEN+4; {
			l := int(binary.NativeEndian.Uint32(b))
			if binary.NativeEndian.Uint16(b[4:]) == unix.NLMSG_ERROR {
				if errno := int32(binary.NativeEndian.Uint32(b[unix.NLMSG_HDRLEN:])); errno != 0 {
					t.Fatalf("the kernel refused request %d: %v", binary.NativeEndian.Uint32(b[8:]), unix.Errno(-errno))
				}
			}
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				break
			}
			b = b[min((l+3)&^3, len(b)):]
		}
	}
}
