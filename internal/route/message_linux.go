package route

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"golang.org/x/sys/unix"
)

// errMalformed is wrapped by every decoding error.
var errMalformed = errors.New("malformed rtnetlink message")

// decode splits one datagram into its netlink messages and appends those
// the listener uses to out. One malformed message rejects the datagram.
func decode(b []byte, out []msg) ([]msg, error) {
	for len(b) > 0 {
		if len(b) < unix.NLMSG_HDRLEN {
			return out, fmt.Errorf("%w: %d bytes after the last message", errMalformed, len(b))
		}
		n := int(binary.NativeEndian.Uint32(b[0:4]))
		if n < unix.NLMSG_HDRLEN || n > len(b) {
			return out, fmt.Errorf("%w: nlmsg_len %d of %d bytes", errMalformed, n, len(b))
		}
		typ := binary.NativeEndian.Uint16(b[4:6])
		flags := binary.NativeEndian.Uint16(b[6:8])
		m := msg{seq: binary.NativeEndian.Uint32(b[8:12]), intr: flags&unix.NLM_F_DUMP_INTR != 0}
		if err := decodeBody(&m, typ, b[unix.NLMSG_HDRLEN:n]); err != nil {
			return out, err
		}
		if m.kind != kindOther {
			out = append(out, m)
		}
		b = b[min(align(n), len(b)):]
	}
	return out, nil
}

// align rounds n up to NLMSG_ALIGNTO, which is also RTA_ALIGNTO.
func align(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

func decodeBody(m *msg, typ uint16, body []byte) error {
	switch typ {
	case unix.RTM_NEWLINK, unix.RTM_DELLINK:
		ok, err := decodeLink(&m.link, typ == unix.RTM_DELLINK, body)
		if ok {
			m.kind = kindLink
		}
		return err
	case unix.RTM_NEWADDR, unix.RTM_DELADDR:
		ok, err := decodeAddr(&m.addr, typ == unix.RTM_DELADDR, body)
		if ok {
			m.kind = kindAddr
		}
		return err
	case unix.NLMSG_DONE:
		m.kind = kindDone
	case unix.NLMSG_ERROR:
		if len(body) < 4 {
			return fmt.Errorf("%w: NLMSG_ERROR of %d bytes", errMalformed, len(body))
		}
		m.kind, m.errno = kindError, int32(binary.NativeEndian.Uint32(body))
	}
	return nil
}

// attrs calls f with each route attribute of b.
func attrs(b []byte, f func(typ uint16, v []byte) error) error {
	for len(b) > 0 {
		if len(b) < unix.SizeofRtAttr {
			return fmt.Errorf("%w: %d bytes after the last attribute", errMalformed, len(b))
		}
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		if n < unix.SizeofRtAttr || n > len(b) {
			return fmt.Errorf("%w: rta_len %d of %d bytes", errMalformed, n, len(b))
		}
		typ := binary.NativeEndian.Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if err := f(typ, b[unix.SizeofRtAttr:n]); err != nil {
			return err
		}
		b = b[min(align(n), len(b)):]
	}
	return nil
}

// decodeLink decodes struct ifinfomsg and its attributes. It reports
// false for a message of another family: AF_BRIDGE messages tell of
// bridge ports, and an RTM_DELLINK among them is a port leaving its
// bridge, not a link going away.
func decodeLink(l *linkMsg, del bool, b []byte) (bool, error) {
	if len(b) < unix.SizeofIfInfomsg {
		return false, fmt.Errorf("%w: ifinfomsg of %d bytes", errMalformed, len(b))
	}
	if b[0] != unix.AF_UNSPEC {
		return false, nil
	}
	flags := binary.NativeEndian.Uint32(b[8:12])
	*l = linkMsg{
		del:     del,
		index:   int32(binary.NativeEndian.Uint32(b[4:8])),
		up:      flags&unix.IFF_UP != 0,
		lowerUp: flags&unix.IFF_LOWER_UP != 0,
		oper:    operState(0),
	}
	err := attrs(b[unix.SizeofIfInfomsg:], func(typ uint16, v []byte) error {
		switch typ {
		case unix.IFLA_IFNAME:
			l.name = cString(v)
		case unix.IFLA_MTU:
			if len(v) != 4 {
				return fmt.Errorf("%w: IFLA_MTU of %d bytes", errMalformed, len(v))
			}
			l.mtu = binary.NativeEndian.Uint32(v)
		case unix.IFLA_ADDRESS:
			l.mac = net.HardwareAddr(v).String()
		case unix.IFLA_OPERSTATE:
			if len(v) != 1 {
				return fmt.Errorf("%w: IFLA_OPERSTATE of %d bytes", errMalformed, len(v))
			}
			l.oper = operState(v[0])
		}
		return nil
	})
	switch {
	case err != nil:
		return false, err
	case l.index <= 0:
		return false, fmt.Errorf("%w: ifindex %d", errMalformed, l.index)
	case !validName(l.name):
		return false, fmt.Errorf("%w: interface name %q", errMalformed, l.name)
	}
	return true, nil
}

// cString is v up to its first NUL.
func cString(v []byte) string {
	for i, c := range v {
		if c == 0 {
			return string(v[:i])
		}
	}
	return string(v)
}

// operState names an IFLA_OPERSTATE (RFC 2863, linux/if.h) as
// /sys/class/net/*/operstate does.
func operState(s uint8) string {
	names := [...]string{"unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up"}
	if int(s) < len(names) {
		return names[s]
	}
	return strconv.Itoa(int(s))
}

// decodeAddr decodes struct ifaddrmsg and its attributes. It reports
// false for a family other than IPv4 and IPv6.
func decodeAddr(a *addrMsg, del bool, b []byte) (bool, error) {
	if len(b) < unix.SizeofIfAddrmsg {
		return false, fmt.Errorf("%w: ifaddrmsg of %d bytes", errMalformed, len(b))
	}
	size, bits := 4, 32
	switch b[0] {
	case unix.AF_INET:
	case unix.AF_INET6:
		size, bits = 16, 128
	default:
		return false, nil
	}
	*a = addrMsg{del: del, scope: scopeName(b[3])}
	a.key.prefixlen, a.key.index = b[1], int32(binary.NativeEndian.Uint32(b[4:8]))
	flags := uint32(b[2])
	var local, address netip.Addr
	err := attrs(b[unix.SizeofIfAddrmsg:], func(typ uint16, v []byte) error {
		switch typ {
		case unix.IFA_ADDRESS, unix.IFA_LOCAL:
			ip, ok := netip.AddrFromSlice(v)
			if !ok || len(v) != size {
				return fmt.Errorf("%w: address of %d bytes in family %d", errMalformed, len(v), b[0])
			}
			if typ == unix.IFA_LOCAL {
				local = ip
			} else {
				address = ip
			}
		case unix.IFA_FLAGS: // all 32 bits; ifa_flags holds the low 8
			if len(v) != 4 {
				return fmt.Errorf("%w: IFA_FLAGS of %d bytes", errMalformed, len(v))
			}
			flags = binary.NativeEndian.Uint32(v)
		}
		return nil
	})
	switch {
	case err != nil:
		return false, err
	case a.key.index <= 0 || int(a.key.prefixlen) > bits:
		return false, fmt.Errorf("%w: ifindex %d, prefix length %d", errMalformed, a.key.index, a.key.prefixlen)
	case !local.IsValid() && !address.IsValid():
		return false, fmt.Errorf("%w: address without IFA_ADDRESS or IFA_LOCAL", errMalformed)
	}
	a.key.addr = address
	if local.IsValid() {
		a.key.addr = local
		if address.IsValid() && address != local {
			a.key.peer = address
		}
	}
	a.usable = flags&unix.IFA_F_DADFAILED == 0 && (flags&unix.IFA_F_TENTATIVE == 0 || flags&unix.IFA_F_OPTIMISTIC != 0)
	return true, nil
}

// scopeName names an ifa_scope as ip(8) does.
func scopeName(s uint8) string {
	switch s {
	case unix.RT_SCOPE_UNIVERSE:
		return "global"
	case unix.RT_SCOPE_SITE:
		return "site"
	case unix.RT_SCOPE_LINK:
		return "link"
	case unix.RT_SCOPE_HOST:
		return "host"
	case unix.RT_SCOPE_NOWHERE:
		return "nowhere"
	}
	return strconv.Itoa(int(s))
}

// dumpRequest is RTM_GETLINK or RTM_GETADDR with NLM_F_DUMP, for every
// family (AF_UNSPEC: IPv4 and IPv6 addresses alike).
func dumpRequest(k dumpKind, seq uint32) []byte {
	typ, size := uint16(unix.RTM_GETLINK), unix.SizeofIfInfomsg
	if k == dumpAddrs {
		typ, size = unix.RTM_GETADDR, unix.SizeofIfAddrmsg
	}
	b := make([]byte, unix.NLMSG_HDRLEN+size)
	binary.NativeEndian.PutUint32(b[0:4], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:6], typ)
	binary.NativeEndian.PutUint16(b[6:8], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	binary.NativeEndian.PutUint32(b[8:12], seq)
	return b
}
