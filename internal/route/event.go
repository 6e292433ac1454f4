package route

import (
	"strconv"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// emitLink appends the event action of link l.
func (s *state) emitLink(action string, l *link) {
	s.out = append(s.out, l.event(action, make([]uevent.Property, 0, 8)))
}

// emitAddr appends the event action of address k of link l.
func (s *state) emitAddr(action string, l *link, k addrKey, scope string) {
	family := "inet6"
	if k.addr.Is4() {
		family = "inet"
	}
	ev := l.event(action, make([]uevent.Property, 0, 12))
	ev.Props = append(ev.Props,
		uevent.Property{Key: "ADDRESS", Value: k.addr.String()},
		uevent.Property{Key: "PREFIXLEN", Value: strconv.Itoa(int(k.prefixlen))},
		uevent.Property{Key: "FAMILY", Value: family},
		uevent.Property{Key: "SCOPE", Value: scope})
	s.out = append(s.out, ev)
}

// event is an event of link l, its properties appended to props
// (hotplugd.rules(5), NETWORK).
func (l *link) event(action string, props []uevent.Property) uevent.Event {
	props = append(props,
		uevent.Property{Key: "ACTION", Value: action},
		uevent.Property{Key: "DEVPATH", Value: l.devpath},
		uevent.Property{Key: "SUBSYSTEM", Value: "net"},
		uevent.Property{Key: "INTERFACE", Value: l.name},
		uevent.Property{Key: "IFINDEX", Value: strconv.Itoa(int(l.index))},
		uevent.Property{Key: "OPERSTATE", Value: l.oper},
		uevent.Property{Key: "MTU", Value: strconv.FormatUint(uint64(l.mtu), 10)},
		uevent.Property{Key: "MAC", Value: l.mac})
	return uevent.Event{
		Action:    action,
		DevPath:   l.devpath,
		Subsystem: "net",
		DevName:   l.name,
		Source:    uevent.SourceRoute,
		Props:     props,
	}
}
