package route

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func capture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// describe is a decoded message in one line.
func describe(m msg) string {
	switch m.kind {
	case kindLink:
		l := m.link
		s := fmt.Sprintf("link #%d %s up=%v lower=%v mtu=%d mac=%s oper=%s", l.index, l.name, l.up, l.lowerUp, l.mtu, l.mac, l.oper)
		if l.del {
			s = "del" + s
		}
		return s
	case kindAddr:
		a := m.addr
		s := fmt.Sprintf("addr #%d %s/%d", a.key.index, a.key.addr, a.key.prefixlen)
		if a.key.peer.IsValid() {
			s += " peer " + a.key.peer.String()
		}
		s += fmt.Sprintf(" scope=%s usable=%v", a.scope, a.usable)
		if a.del {
			s = "del" + s
		}
		return s
	case kindDone:
		return fmt.Sprintf("done seq=%d", m.seq)
	case kindError:
		return fmt.Sprintf("error seq=%d errno=%d", m.seq, m.errno)
	}
	return "other"
}

// TestDecodeCaptures decodes messages this machine's kernel sent (see
// TestCapture): a veth pair veth0 (#3) and veth1 (#2), in a network
// namespace of their own.
func TestDecodeCaptures(t *testing.T) {
	const veth0 = "mac=ae:9b:55:89:4b:de"
	const veth1 = "mac=ce:6e:5c:31:c9:a2"
	tests := []struct {
		name, file string
		want       []string
	}{
		{"veth1 created, down", "veth-add-0.nl", []string{"link #2 veth1 up=false lower=false mtu=1500 " + veth1 + " oper=down"}},
		{"veth0 up, its peer down: no carrier", "veth0-up-0.nl", []string{"link #3 veth0 up=true lower=false mtu=1500 " + veth0 + " oper=lowerlayerdown"}},
		{"veth1 up: carrier at once", "veth1-up-0.nl", []string{"link #2 veth1 up=true lower=true mtu=1500 " + veth1 + " oper=lowerlayerdown"}},
		{"veth0 gets its carrier from veth1", "veth1-up-2.nl", []string{"link #3 veth0 up=true lower=true mtu=1500 " + veth0 + " oper=up"}},
		{"veth0 mtu 1400: no flag changes", "veth0-mtu-0.nl", []string{"link #3 veth0 up=true lower=true mtu=1400 " + veth0 + " oper=up"}},
		{"192.0.2.10/24 added to veth0", "veth0-ipv4-add-0.nl", []string{"addr #3 192.0.2.10/24 scope=global usable=true"}},
		{"10.9.9.1 peer 10.9.9.2/32 added to veth0", "veth0-ipv4-peer-add-0.nl", []string{"addr #3 10.9.9.1/32 peer 10.9.9.2 scope=global usable=true"}},
		{"2001:db8::10/64 added to veth0, tentative", "veth0-ipv6-add-0.nl", []string{"addr #3 2001:db8::10/64 scope=global usable=false"}},
		{"2001:db8::10/64 after duplicate address detection", "veth0-ipv6-dad-0.nl", []string{"addr #3 2001:db8::10/64 scope=global usable=true"}},
		{"192.0.2.10/24 removed from veth0", "veth0-ipv4-del-0.nl", []string{"deladdr #3 192.0.2.10/24 scope=global usable=true"}},
		{"veth1 joins a bridge: an AF_BRIDGE message", "veth1-bridge-port-3.nl", nil},
		{"veth1 leaves the bridge: AF_BRIDGE RTM_DELLINK, not a link going", "veth1-bridge-leave-2.nl", nil},
		{"veth1 down", "veth1-down-0.nl", []string{"link #2 veth1 up=false lower=false mtu=1500 " + veth1 + " oper=down"}},
		{"veth0 loses its carrier", "veth1-down-1.nl", []string{"link #3 veth0 up=true lower=false mtu=1400 " + veth0 + " oper=lowerlayerdown"}},
		{"veth0 deleted", "veth-del-3.nl", []string{"dellink #3 veth0 up=false lower=false mtu=1400 " + veth0 + " oper=down"}},
		{"dump of links", "dump-links-0.nl", []string{
			"link #1 lo up=false lower=false mtu=65536 mac=00:00:00:00:00:00 oper=down",
			"link #2 veth1 up=true lower=true mtu=1500 " + veth1 + " oper=up",
			"link #3 veth0 up=true lower=true mtu=1400 " + veth0 + " oper=up",
		}},
		{"end of the dump of links", "dump-links-1.nl", []string{"done seq=4242"}},
		{"dump of addresses", "dump-addrs-0.nl", []string{
			"addr #3 10.9.9.1/32 peer 10.9.9.2 scope=global usable=true",
			"addr #3 2001:db8::10/64 scope=global usable=true",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msgs, err := decode(capture(t, tt.file), nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, m := range msgs {
				got = append(got, describe(m))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeEveryCapture(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.nl")
	if len(files) < 20 {
		t.Fatalf("%d captures, want the ones TestCapture makes", len(files))
	}
	for _, f := range files {
		if _, err := decode(capture(t, filepath.Base(f)), nil); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestDecodeMalformed: each corruption of a real message is refused
// whole, never half-used and never a panic.
func TestDecodeMalformed(t *testing.T) {
	link := capture(t, "veth0-up-0.nl")
	addr := capture(t, "veth0-ipv4-add-0.nl")
	// at is the offset of the first attribute of type typ after off.
	at := func(b []byte, off int, typ uint16) int {
		for off+4 <= len(b) {
			n := int(binary.NativeEndian.Uint16(b[off:]))
			if binary.NativeEndian.Uint16(b[off+2:]) == typ {
				return off
			}
			off += max((n+3)&^3, 4)
		}
		t.Fatalf("no attribute %d", typ)
		return 0
	}
	edit := func(b []byte, f func(b []byte)) []byte {
		b = append([]byte(nil), b...)
		f(b)
		return b
	}
	linkAttrs := unix.NLMSG_HDRLEN + unix.SizeofIfInfomsg
	addrAttrs := unix.NLMSG_HDRLEN + unix.SizeofIfAddrmsg
	name := at(link, linkAttrs, unix.IFLA_IFNAME)
	mtu := at(link, linkAttrs, unix.IFLA_MTU)
	local := at(addr, addrAttrs, unix.IFA_LOCAL)
	tests := map[string][]byte{
		"shorter than a header":  link[:10],
		"nlmsg_len past the end": edit(link, func(b []byte) { binary.NativeEndian.PutUint32(b, uint32(len(b)+4)) }),
		"nlmsg_len below header": edit(link, func(b []byte) { binary.NativeEndian.PutUint32(b, 8) }),
		"trailing bytes":         append(append([]byte(nil), link...), 1, 2, 3),
		"ifinfomsg cut":          fixLen(link[:unix.NLMSG_HDRLEN+8]),
		"rta_len past the end":   edit(link, func(b []byte) { binary.NativeEndian.PutUint16(b[name:], 0xfff0) }),
		"rta_len below 4":        edit(link, func(b []byte) { binary.NativeEndian.PutUint16(b[name:], 2) }),
		"IFLA_MTU of 2 bytes":    edit(link, func(b []byte) { binary.NativeEndian.PutUint16(b[mtu:], 6) }),
		"name with a slash":      edit(link, func(b []byte) { b[name+4] = '/' }),
		"name empty":             edit(link, func(b []byte) { b[name+4] = 0 }),
		"ifindex 0":              edit(link, func(b []byte) { binary.NativeEndian.PutUint32(b[unix.NLMSG_HDRLEN+4:], 0) }),
		"ifaddrmsg cut":          fixLen(addr[:unix.NLMSG_HDRLEN+4]),
		"IPv4 prefix length 33":  edit(addr, func(b []byte) { b[unix.NLMSG_HDRLEN+1] = 33 }),
		"IPv4 address of 3":      edit(addr, func(b []byte) { binary.NativeEndian.PutUint16(b[local:], 7) }),
		"address without one":    edit(addr, func(b []byte) { b[local+2], b[at(b, addrAttrs, unix.IFA_ADDRESS)+2] = 99, 98 }),
		"NLMSG_ERROR without errno": fixLen(edit(link[:unix.NLMSG_HDRLEN], func(b []byte) {
			binary.NativeEndian.PutUint16(b[4:], unix.NLMSG_ERROR)
		})),
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			msgs, err := decode(b, nil)
			if !errors.Is(err, errMalformed) {
				t.Errorf("decode: %v (messages %v), want %v", err, msgs, errMalformed)
			}
		})
	}
}

// fixLen sets nlmsg_len to the length of b.
func fixLen(b []byte) []byte {
	b = append([]byte(nil), b...)
	binary.NativeEndian.PutUint32(b, uint32(len(b)))
	return b
}

// FuzzDecode: no input panics, and what is accepted is what the state
// may rely on.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.nl")
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := decode(b, nil)
		if err != nil {
			return
		}
		for _, m := range msgs {
			switch m.kind {
			case kindLink:
				if !validName(m.link.name) || m.link.index <= 0 || strings.Contains(m.link.oper, "/") {
					t.Fatalf("accepted %s", describe(m))
				}
			case kindAddr:
				if !m.addr.key.addr.IsValid() || m.addr.key.index <= 0 || int(m.addr.key.prefixlen) > m.addr.key.addr.BitLen() {
					t.Fatalf("accepted %s", describe(m))
				}
			}
		}
	})
}
