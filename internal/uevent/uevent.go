package uevent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Source says where an event came from.
type Source string

// The sources of events. Kernel and udev are the two netlink groups of
// uevents; route is the NETLINK_ROUTE socket, which tells of network
// links and addresses; coldplug and resync are synthesised by the daemon
// from /sys (and coldplug, with the network on, from the links and
// addresses present at start); test is an event fed to `hotplugd test`.
const (
	SourceKernel   Source = "kernel"
	SourceUdev     Source = "udev"
	SourceRoute    Source = "route"
	SourceColdplug Source = "coldplug"
	SourceResync   Source = "resync"
	SourceTest     Source = "test"
)

// Limits of what Parse accepts.
const (
	// MaxMessageSize is the largest message accepted, in bytes. The kernel
	// builds uevents in a 2048-byte environment buffer (UEVENT_BUFFER_SIZE in
	// include/linux/kobject.h) behind an "action@devpath" header; libudev
	// receives its group-2 messages into an 8192-byte buffer, so nothing a
	// real sender emits is larger.
	MaxMessageSize = 8192
	// MaxKernelProperties is UEVENT_NUM_ENVP: the kernel never sends more.
	MaxKernelProperties = 64
	// MaxUdevProperties bounds udev-group messages, which carry the
	// kernel's properties plus udev's ID_* additions (a USB disk has
	// around 60-80 of them).
	MaxUdevProperties = 256
)

// Parse errors. Each rejection wraps exactly one of these, so callers (and
// the listener's drop counters) can tell reasons apart with errors.Is.
var (
	ErrTooLarge          = errors.New("message too large")
	ErrNotTerminated     = errors.New("message not NUL-terminated")
	ErrBadHeader         = errors.New("bad header")
	ErrBadUdevHeader     = errors.New("bad libudev header")
	ErrHeaderMismatch    = errors.New("header disagrees with properties")
	ErrNoEquals          = errors.New("property without '='")
	ErrEmptyKey          = errors.New("property with empty key")
	ErrBadKey            = errors.New("property key not [A-Za-z0-9_]")
	ErrDuplicateKey      = errors.New("duplicate property key")
	ErrTooManyProperties = errors.New("too many properties")
	ErrNoAction          = errors.New("no ACTION")
	ErrNoDevPath         = errors.New("no DEVPATH")
	ErrNoSubsystem       = errors.New("no SUBSYSTEM")
	ErrNoSeqnum          = errors.New("no SEQNUM")
	ErrUnknownAction     = errors.New("unknown ACTION")
	ErrBadDevPath        = errors.New("bad DEVPATH")
	ErrBadSeqnum         = errors.New("non-numeric SEQNUM")
	ErrBadDevName        = errors.New("bad DEVNAME")
)

// Actions lists every ACTION the kernel sends (kobject_actions in
// lib/kobject_uevent.c).
var Actions = []string{"add", "remove", "change", "move", "online", "offline", "bind", "unbind"}

// RouteActions lists the actions of the events of network links and
// addresses, which come from NETLINK_ROUTE and never in a uevent:
// IFF_UP set and cleared, IFF_LOWER_UP (carrier) set and cleared, an
// address added and removed.
var RouteActions = []string{"link-up", "link-down", "carrier", "no-carrier", "address-add", "address-remove"}

// IsRouteAction reports whether action is one of RouteActions: the event
// tells of a link or an address, not of a device appearing or changing.
func IsRouteAction(action string) bool {
	for _, x := range RouteActions {
		if action == x {
			return true
		}
	}
	return false
}

// Property is one KEY=VALUE of an event.
type Property struct {
	Key   string
	Value string
}

// Event is one device event. The named fields are copies of the properties
// of the same name, checked by Parse; Props holds every property, in the
// order the sender wrote them.
type Event struct {
	Action    string
	DevPath   string
	Subsystem string
	DevType   string
	// DevName is relative to /dev ("sdb1", "input/event3"), also for udev
	// events whose DEVNAME property is absolute.
	DevName string
	Seqnum  uint64
	Source  Source
	Props   []Property
}

// Get returns the value of property key, or "".
func (e *Event) Get(key string) string {
	v, _ := e.Lookup(key)
	return v
}

// Lookup returns the value of property key and whether it is present.
func (e *Event) Lookup(key string) (string, bool) {
	for _, p := range e.Props {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// NodeName is the DEVNAME of the event's device node under /dev, "" when
// it has none. The devname of an event of a network link or address is
// the interface's name, which has no node.
func (e *Event) NodeName() string {
	if IsRouteAction(e.Action) {
		return ""
	}
	return e.DevName
}

// MediaChange reports whether e says a removable disk's medium changed:
// a card taken out of a reader, a disc out of a drive. The kernel sends
// "change" with DISK_MEDIA_CHANGE=1, not "remove": the disk stays.
func (e *Event) MediaChange() bool {
	return e.Subsystem == "block" && e.Action == "change" && e.DevType == "disk" && e.Get("DISK_MEDIA_CHANGE") == "1"
}

// Env returns the properties as a new map.
func (e *Event) Env() map[string]string {
	m := make(map[string]string, len(e.Props))
	for _, p := range e.Props {
		m[p.Key] = p.Value
	}
	return m
}

// udevPrefix starts every message udevd sends to group 2.
const udevPrefix = "libudev\x00"

// udevMagic is UDEV_MONITOR_MAGIC, stored big-endian on the wire.
const udevMagic = 0xfeedcafe

// udevHeaderSize is sizeof(struct monitor_netlink_header): the prefix, then
// eight host-endian uint32s (magic, header_size, properties_off,
// properties_len, two filter hashes, two bloom halves).
const udevHeaderSize = 40

// Parse parses one netlink uevent message in either wire format. The
// returned event's Source is SourceKernel or SourceUdev by format.
func Parse(b []byte) (Event, error) {
	if len(b) > MaxMessageSize {
		return Event{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(b), MaxMessageSize)
	}
	if bytes.HasPrefix(b, []byte(udevPrefix)) {
		return parseUdev(b)
	}
	return parseKernel(b)
}

func parseKernel(b []byte) (Event, error) {
	if len(b) == 0 || b[len(b)-1] != 0 {
		return Event{}, ErrNotTerminated
	}
	s := string(b[:len(b)-1]) // one copy; every field is a substring of it
	hdr, rest, _ := strings.Cut(s, "\x00")
	action, devpath, ok := strings.Cut(hdr, "@")
	if !ok || action == "" || devpath == "" {
		return Event{}, fmt.Errorf("%w: %q", ErrBadHeader, hdr)
	}
	e, err := parseProps(rest, MaxKernelProperties)
	if err != nil {
		return Event{}, err
	}
	if e.Action != action || e.DevPath != devpath {
		return Event{}, fmt.Errorf("%w: header %q, ACTION=%q DEVPATH=%q", ErrHeaderMismatch, hdr, e.Action, e.DevPath)
	}
	e.Source = SourceKernel
	return e, nil
}

func parseUdev(b []byte) (Event, error) {
	if len(b) < udevHeaderSize {
		return Event{}, fmt.Errorf("%w: %d bytes", ErrBadUdevHeader, len(b))
	}
	if m := binary.BigEndian.Uint32(b[8:]); m != udevMagic {
		return Event{}, fmt.Errorf("%w: magic %#x", ErrBadUdevHeader, m)
	}
	hsize := binary.NativeEndian.Uint32(b[12:])
	off := binary.NativeEndian.Uint32(b[16:])
	n := binary.NativeEndian.Uint32(b[20:])
	if hsize != udevHeaderSize || off < hsize || uint64(off)+uint64(n) != uint64(len(b)) {
		return Event{}, fmt.Errorf("%w: header_size %d, properties at %d+%d in %d bytes", ErrBadUdevHeader, hsize, off, n, len(b))
	}
	props := b[off:]
	if len(props) == 0 || props[len(props)-1] != 0 {
		return Event{}, ErrNotTerminated
	}
	e, err := parseProps(string(props[:len(props)-1]), MaxUdevProperties)
	if err != nil {
		return Event{}, err
	}
	e.Source = SourceUdev
	return e, nil
}

// parseProps splits NUL-separated KEY=VALUE pairs (without the final NUL)
// and checks the event they make. It is the hot path of the listener, so
// keys are validated in the same pass that finds their end.
func parseProps(s string, limit int) (Event, error) {
	n := strings.Count(s, "\x00") + 1
	if n > limit {
		return Event{}, fmt.Errorf("%w: %d, limit %d", ErrTooManyProperties, n, limit)
	}
	props := make([]Property, 0, n)
	for range n {
		i := 0
		for i < len(s) && keyByte(s[i]) {
			i++
		}
		switch {
		case i == len(s) || s[i] == 0:
			kv, _, _ := strings.Cut(s, "\x00")
			return Event{}, fmt.Errorf("%w: %q", ErrNoEquals, kv)
		case s[i] != '=':
			kv, _, _ := strings.Cut(s, "\x00")
			k, _, _ := strings.Cut(kv, "=")
			return Event{}, fmt.Errorf("%w: %q", ErrBadKey, k)
		case i == 0:
			return Event{}, ErrEmptyKey
		}
		key := s[:i]
		s = s[i+1:]
		end := strings.IndexByte(s, 0)
		if end < 0 {
			end = len(s)
		}
		props = append(props, Property{Key: key, Value: s[:end]})
		s = s[min(end+1, len(s)):]
	}
	return fromProps(props, true)
}

// FromProps builds an event from properties, applying every check Parse
// applies to them, except that the action may also be one of
// RouteActions: a recorded or hand-written event of a link or an
// address. It keeps props as the event's Props.
func FromProps(props []Property) (Event, error) {
	return fromProps(props, false)
}

// fromProps checks props as an event. wire is set for a message read from
// a netlink socket: its keys are checked already, and its action must be
// one the kernel sends.
func fromProps(props []Property, wire bool) (Event, error) {
	var e Event
	var seqnum, iface string
	var haveSeqnum bool
	// Duplicate keys: a 64-bit filter of a cheap hash of each key, so
	// that keys are compared only when two hash alike.
	var seen uint64
	for i, p := range props {
		if !wire {
			if err := checkKey(p.Key); err != nil {
				return Event{}, err
			}
		}
		bit := uint64(1) << ((uint(len(p.Key))*7 + uint(p.Key[0])*3 + uint(p.Key[len(p.Key)-1])) & 63)
		if seen&bit != 0 {
			for _, q := range props[:i] {
				if q.Key == p.Key {
					return Event{}, fmt.Errorf("%w: %s", ErrDuplicateKey, p.Key)
				}
			}
		}
		seen |= bit
		switch p.Key {
		case "ACTION":
			e.Action = p.Value
		case "DEVPATH":
			e.DevPath = p.Value
		case "SUBSYSTEM":
			e.Subsystem = p.Value
		case "DEVTYPE":
			e.DevType = p.Value
		case "DEVNAME":
			e.DevName = p.Value
		case "SEQNUM":
			seqnum, haveSeqnum = p.Value, true
		case "INTERFACE":
			iface = p.Value
		}
	}
	switch {
	case e.Action == "":
		return Event{}, ErrNoAction
	case e.DevPath == "":
		return Event{}, ErrNoDevPath
	case e.Subsystem == "":
		return Event{}, ErrNoSubsystem
	case !haveSeqnum:
		return Event{}, ErrNoSeqnum
	}
	route := !wire && IsRouteAction(e.Action)
	if !knownAction(e.Action) && !route {
		return Event{}, fmt.Errorf("%w: %q", ErrUnknownAction, e.Action)
	}
	if route && e.DevName == "" {
		e.DevName = iface // the devname of a link's event is the interface
	}
	if err := checkDevPath(e.DevPath); err != nil {
		return Event{}, err
	}
	n, err := parseSeqnum(seqnum)
	if err != nil {
		return Event{}, err
	}
	e.Seqnum = n
	if e.DevName, err = cleanDevName(e.DevName); err != nil {
		return Event{}, err
	}
	e.Props = props
	return e, nil
}

func checkKey(k string) error {
	if k == "" {
		return ErrEmptyKey
	}
	for i := 0; i < len(k); i++ {
		if !keyByte(k[i]) {
			return fmt.Errorf("%w: %q", ErrBadKey, k)
		}
	}
	return nil
}

// keyByte reports whether c may appear in a property key. Lower case is
// allowed because the kernel passes the keys of synthetic events verbatim
// ("SYNTH_ARG_key").
func keyByte(c byte) bool { return keyBytes[c] }

var keyBytes = func() (t [256]bool) {
	for c := range t {
		t[c] = 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_'
	}
	return t
}()

func knownAction(a string) bool {
	for _, x := range Actions {
		if a == x {
			return true
		}
	}
	return false
}

// kobjectTops are sysfs's top-level directories, under which the kernel
// has kobjects that send events: devices, but also modules (/module),
// drivers (/bus/usb/drivers/usb-storage) and classes (/class/scsi_host
// when scsi_mod loads).
var kobjectTops = []string{"devices", "module", "bus", "class", "block", "firmware", "fs", "kernel", "power", "hypervisor"}

// checkDevPath accepts a kobject path under one of kobjectTops with no
// empty, "." or ".." segment. Later stages join it to the sysfs root, so
// it must not be able to leave it.
func checkDevPath(p string) error {
	top, _, _ := strings.Cut(strings.TrimPrefix(p, "/"), "/")
	if !strings.HasPrefix(p, "/") || !slices.Contains(kobjectTops, top) {
		return fmt.Errorf("%w: %q not under a sysfs kobject directory (/devices, /module, /bus, /class, ...)", ErrBadDevPath, p)
	}
	if !cleanSegments(p[1:]) {
		return fmt.Errorf("%w: %q", ErrBadDevPath, p)
	}
	return nil
}

// cleanDevName makes a DEVNAME relative to /dev and checks it cannot leave
// /dev once joined to it.
func cleanDevName(n string) (string, error) {
	if n == "" {
		return "", nil
	}
	rel := strings.TrimPrefix(n, "/dev/")
	if strings.HasPrefix(rel, "/") || !cleanSegments(rel) {
		return "", fmt.Errorf("%w: %q", ErrBadDevName, n)
	}
	return rel, nil
}

// cleanSegments reports whether every "/"-separated segment of p is a
// plain name: not empty, ".", or "..".
func cleanSegments(p string) bool {
	start := 0
	for i := 0; i <= len(p); i++ {
		if i < len(p) && p[i] != '/' {
			continue
		}
		switch i - start {
		case 0:
			return false
		case 1:
			if p[start] == '.' {
				return false
			}
		case 2:
			if p[start] == '.' && p[start+1] == '.' {
				return false
			}
		}
		start = i + 1
	}
	return true
}

func parseSeqnum(s string) (uint64, error) {
	if s == "" || len(s) > 20 {
		return 0, fmt.Errorf("%w: %q", ErrBadSeqnum, s)
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		d := uint64(s[i] - '0')
		if d > 9 || n > (math.MaxUint64-d)/10 {
			return 0, fmt.Errorf("%w: %q", ErrBadSeqnum, s)
		}
		n = n*10 + d
	}
	return n, nil
}
