package route

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// msgKind is what a decoded netlink message is.
type msgKind uint8

const (
	kindOther msgKind = iota // nothing the listener uses
	kindLink                 // RTM_NEWLINK, RTM_DELLINK
	kindAddr                 // RTM_NEWADDR, RTM_DELADDR
	kindDone                 // NLMSG_DONE: the end of a dump
	kindError                // NLMSG_ERROR: a request failed
)

// msg is one decoded netlink message.
type msg struct {
	kind  msgKind
	seq   uint32 // nlmsg_seq: a dump's messages carry its request's
	intr  bool   // NLM_F_DUMP_INTR: the dump is inconsistent
	errno int32  // kindError: the kernel's negative errno
	link  linkMsg
	addr  addrMsg
}

// linkMsg is what an RTM_NEWLINK or RTM_DELLINK says of a link.
type linkMsg struct {
	del     bool
	index   int32
	name    string
	up      bool   // IFF_UP
	lowerUp bool   // IFF_LOWER_UP: the carrier
	mtu     uint32 // 0 when not given
	mac     string // "aa:bb:..", "" when the link has no address
	oper    string // IFLA_OPERSTATE as /sys/class/net/*/operstate names it
}

// addrKey is what tells two addresses apart, as the kernel does.
type addrKey struct {
	index     int32
	addr      netip.Addr // IFA_LOCAL, else IFA_ADDRESS
	peer      netip.Addr // IFA_ADDRESS of a point-to-point address, else invalid
	prefixlen uint8
}

// addrMsg is what an RTM_NEWADDR or RTM_DELADDR says of an address.
type addrMsg struct {
	del    bool
	key    addrKey
	scope  string // global, site, link, host, nowhere or a number
	usable bool   // not tentative (still in duplicate address detection) nor failed
}

// link is a link the listener knows of.
type link struct {
	linkMsg
	devpath string
	sure    bool   // sysfs confirmed devpath
	gen     uint64 // the dump that last saw it
}

// addr is an address the listener knows of.
type addr struct {
	scope string
	gen   uint64
}

// state is what the listener knows of the links and addresses; applying
// a message to it appends the events of what changed to out.
//
// Only usable addresses are known: an IPv6 address in duplicate address
// detection cannot be used yet, so it is added when detection ends (and
// never, when it fails).
type state struct {
	links   map[int32]*link
	addrs   map[addrKey]*addr
	gen     uint64 // the current or last dump
	devpath func(name string, index int32) (devpath string, sure bool)
	out     []uevent.Event
}

func (s *state) init(devpath func(string, int32) (string, bool)) {
	s.links = make(map[int32]*link)
	s.addrs = make(map[addrKey]*addr)
	s.devpath = devpath
}

// applyLink applies an RTM_NEWLINK or RTM_DELLINK. A link first heard of
// is taken to have been down before: one that appears up is link-up.
func (s *state) applyLink(m linkMsg) {
	l := s.links[m.index]
	if m.del {
		if l != nil {
			s.gone(l)
		}
		return
	}
	if l == nil {
		l = &link{}
		s.links[m.index] = l
	}
	wasUp, wasLower := l.up, l.lowerUp
	if l.name != m.name || !l.sure {
		l.devpath, l.sure = s.devpath(m.name, m.index)
	}
	l.linkMsg, l.gen = m, s.gen
	s.flagEvents(l, wasUp, wasLower)
}

// flagEvents emits the changes of IFF_UP and IFF_LOWER_UP, in the order
// a link goes down (carrier, then the link) or comes up (the reverse).
func (s *state) flagEvents(l *link, wasUp, wasLower bool) {
	if wasLower && !l.lowerUp {
		s.emitLink("no-carrier", l)
	}
	if wasUp && !l.up {
		s.emitLink("link-down", l)
	}
	if !wasUp && l.up {
		s.emitLink("link-up", l)
	}
	if !wasLower && l.lowerUp {
		s.emitLink("carrier", l)
	}
}

// gone forgets a link as the kernel unregisters one: it goes down, its
// addresses go, then the link.
func (s *state) gone(l *link) {
	wasUp, wasLower := l.up, l.lowerUp
	l.up, l.lowerUp = false, false
	s.flagEvents(l, wasUp, wasLower)
	for _, k := range s.sortedAddrs(func(k addrKey, _ *addr) bool { return k.index == l.index }) {
		s.removeAddr(k)
	}
	delete(s.links, l.index)
}

// applyAddr applies an RTM_NEWADDR or RTM_DELADDR. It reports false for
// a new address of a link not heard of, which it ignores.
func (s *state) applyAddr(m addrMsg) bool {
	l := s.links[m.key.index]
	if l == nil {
		return m.del
	}
	a := s.addrs[m.key]
	switch {
	case m.del || !m.usable:
		if a != nil {
			s.removeAddr(m.key)
		}
	case a == nil:
		s.addrs[m.key] = &addr{scope: m.scope, gen: s.gen}
		s.emitAddr("address-add", l, m.key, m.scope)
	default:
		a.scope, a.gen = m.scope, s.gen
	}
	return true
}

func (s *state) removeAddr(k addrKey) {
	a := s.addrs[k]
	delete(s.addrs, k)
	s.emitAddr("address-remove", s.links[k.index], k, a.scope)
}

// sweepLinks forgets the links the dump that just ended did not list.
func (s *state) sweepLinks() {
	for _, i := range slices.Sorted(maps.Keys(s.links)) {
		if l := s.links[i]; l.gen < s.gen {
			s.gone(l)
		}
	}
}

// sweepAddrs removes the addresses the dump that just ended did not list.
func (s *state) sweepAddrs() {
	for _, k := range s.sortedAddrs(func(_ addrKey, a *addr) bool { return a.gen < s.gen }) {
		s.removeAddr(k)
	}
}

func (s *state) sortedAddrs(keep func(addrKey, *addr) bool) []addrKey {
	var out []addrKey
	for k, a := range s.addrs {
		if keep(k, a) {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b addrKey) int {
		return cmp.Or(cmp.Compare(a.index, b.index), a.addr.Compare(b.addr),
			cmp.Compare(a.prefixlen, b.prefixlen), a.peer.Compare(b.peer))
	})
	return out
}

// snapshot is the events that announce the state as it is: each link
// that is up and has a carrier, then each address, with source coldplug.
func (s *state) snapshot() []uevent.Event {
	out := s.out
	s.out = nil
	for _, i := range slices.Sorted(maps.Keys(s.links)) {
		s.flagEvents(s.links[i], false, false)
	}
	for _, k := range s.sortedAddrs(func(addrKey, *addr) bool { return true }) {
		s.emitAddr("address-add", s.links[k.index], k, s.addrs[k].scope)
	}
	snap := s.out
	s.out = out
	for i := range snap {
		snap[i].Source = uevent.SourceColdplug
	}
	return snap
}
