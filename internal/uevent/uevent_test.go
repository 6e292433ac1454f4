package uevent

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// capture reads a uevent captured from this machine's kernel (or udevd)
// with a netlink socket, byte for byte.
func capture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// captures returns every capture of testdata, as its fuzz targets' seeds:
// the kernel's messages (*.kernel) and udevd's (*.udev). Only those:
// testdata/fuzz holds what go test -fuzz found.
func captures(t testing.TB) [][]byte {
	t.Helper()
	var out [][]byte
	for _, pattern := range []string{"*.kernel", "*.udev"} {
		names, err := filepath.Glob(filepath.Join("testdata", pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			out = append(out, capture(t, filepath.Base(name)))
		}
	}
	if len(out) == 0 {
		t.Fatal("no captures in testdata")
	}
	return out
}

func props(kv ...string) []Property {
	var ps []Property
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		ps = append(ps, Property{k, v})
	}
	return ps
}

func TestParseCaptures(t *testing.T) {
	tests := []struct {
		name string
		file string
		want Event
	}{
		{
			name: "net lo change",
			file: "net-lo-change.kernel",
			want: Event{
				Action: "change", DevPath: "/devices/virtual/net/lo", Subsystem: "net",
				Seqnum: 842, Source: SourceKernel,
				Props: props("ACTION=change", "DEVPATH=/devices/virtual/net/lo", "SUBSYSTEM=net",
					"SYNTH_UUID=0", "INTERFACE=lo", "IFINDEX=1", "SEQNUM=842"),
			},
		},
		{
			name: "loop0 disk change",
			file: "loop0-disk-change.kernel",
			want: Event{
				Action: "change", DevPath: "/devices/virtual/block/loop0", Subsystem: "block",
				DevType: "disk", DevName: "loop0", Seqnum: 834, Source: SourceKernel,
				Props: props("ACTION=change", "DEVPATH=/devices/virtual/block/loop0", "SUBSYSTEM=block",
					"MAJOR=7", "MINOR=0", "DEVNAME=loop0", "DEVTYPE=disk", "DISKSEQ=13", "SEQNUM=834"),
			},
		},
		{
			name: "loop0 media change",
			file: "loop0-media-change.kernel",
			want: Event{
				Action: "change", DevPath: "/devices/virtual/block/loop0", Subsystem: "block",
				DevType: "disk", DevName: "loop0", Seqnum: 841, Source: SourceKernel,
				Props: props("ACTION=change", "DEVPATH=/devices/virtual/block/loop0", "SUBSYSTEM=block",
					"DISK_MEDIA_CHANGE=1", "MAJOR=7", "MINOR=0", "DEVNAME=loop0", "DEVTYPE=disk", "DISKSEQ=13", "SEQNUM=841"),
			},
		},
		{
			name: "loop0p1 partition add",
			file: "loop0p1-partition-add.kernel",
			want: Event{
				Action: "add", DevPath: "/devices/virtual/block/loop0/loop0p1", Subsystem: "block",
				DevType: "partition", DevName: "loop0p1", Seqnum: 835, Source: SourceKernel,
				Props: props("ACTION=add", "DEVPATH=/devices/virtual/block/loop0/loop0p1", "SUBSYSTEM=block",
					"MAJOR=259", "MINOR=0", "DEVNAME=loop0p1", "DEVTYPE=partition", "DISKSEQ=13", "PARTN=1", "SEQNUM=835"),
			},
		},
		{
			name: "loop0p1 partition remove",
			file: "loop0p1-partition-remove.kernel",
			want: Event{
				Action: "remove", DevPath: "/devices/virtual/block/loop0/loop0p1", Subsystem: "block",
				DevType: "partition", DevName: "loop0p1", Seqnum: 838, Source: SourceKernel,
				Props: props("ACTION=remove", "DEVPATH=/devices/virtual/block/loop0/loop0p1", "SUBSYSTEM=block",
					"MAJOR=259", "MINOR=0", "DEVNAME=loop0p1", "DEVTYPE=partition", "DISKSEQ=13", "PARTN=1", "SEQNUM=838"),
			},
		},
		{
			name: "loop0p1 synthetic remove",
			file: "loop0p1-synth-remove.kernel",
			want: Event{
				Action: "remove", DevPath: "/devices/virtual/block/loop0/loop0p1", Subsystem: "block",
				DevType: "partition", DevName: "loop0p1", Seqnum: 837, Source: SourceKernel,
				Props: props("ACTION=remove", "DEVPATH=/devices/virtual/block/loop0/loop0p1", "SUBSYSTEM=block",
					"SYNTH_UUID=0", "MAJOR=259", "MINOR=0", "DEVNAME=loop0p1", "DEVTYPE=partition", "DISKSEQ=13", "PARTN=1", "SEQNUM=837"),
			},
		},
		{
			name: "udev net lo change",
			file: "net-lo-change.udev",
			want: Event{
				Action: "change", DevPath: "/devices/virtual/net/lo", Subsystem: "net",
				Seqnum: 842, Source: SourceUdev,
			},
		},
		{
			name: "udev loop0p1 partition add",
			file: "loop0p1-partition-add.udev",
			want: Event{
				Action: "add", DevPath: "/devices/virtual/block/loop0/loop0p1", Subsystem: "block",
				DevType: "partition", DevName: "loop0p1", Seqnum: 844, Source: SourceUdev,
			},
		},
		{
			name: "udev loop0p1 partition remove",
			file: "loop0p1-partition-remove.udev",
			want: Event{
				Action: "remove", DevPath: "/devices/virtual/block/loop0/loop0p1", Subsystem: "block",
				DevType: "partition", DevName: "loop0p1", Seqnum: 846, Source: SourceUdev,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(capture(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			opts := cmp.Options{}
			if tt.want.Props == nil {
				// udev adds dozens of properties; the named fields and a
				// few of udev's own are checked instead.
				opts = append(opts, cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Props" }, cmp.Ignore()))
				if got.Get("UDEV_DATABASE_VERSION") != "1" {
					t.Errorf("udev event lacks UDEV_DATABASE_VERSION: %v", got.Props)
				}
			}
			if diff := cmp.Diff(tt.want, got, opts); diff != "" {
				t.Errorf("Parse mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseUdevProperties(t *testing.T) {
	e, err := Parse(capture(t, "loop0p1-partition-add.udev"))
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"DEVNAME":              "/dev/loop0p1",
		"ID_PART_TABLE_TYPE":   "dos",
		"ID_PART_ENTRY_NUMBER": "1",
		"DEVLINKS":             "/dev/disk/by-partuuid/b1e76df8-01",
		"TAGS":                 ":systemd:",
	} {
		if got := e.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if e.DevName != "loop0p1" {
		t.Errorf("DevName = %q, want it relative to /dev", e.DevName)
	}
}

// kernelMsg builds a kernel-format message from its parts.
func kernelMsg(hdr string, kv ...string) []byte {
	var b []byte
	b = append(b, hdr...)
	b = append(b, 0)
	for _, s := range kv {
		b = append(b, s...)
		b = append(b, 0)
	}
	return b
}

// udevMsg wraps NUL-terminated properties in a libudev header.
func udevMsg(magic uint32, hsize, off uint32, body []byte) []byte {
	h := make([]byte, udevHeaderSize)
	copy(h, udevPrefix)
	binary.BigEndian.PutUint32(h[8:], magic)
	binary.NativeEndian.PutUint32(h[12:], hsize)
	binary.NativeEndian.PutUint32(h[16:], off)
	binary.NativeEndian.PutUint32(h[20:], uint32(len(body)))
	return append(h, body...)
}

func TestParseRejects(t *testing.T) {
	base := []string{"ACTION=add", "DEVPATH=/devices/virtual/net/x", "SUBSYSTEM=net", "SEQNUM=1"}
	hdr := "add@/devices/virtual/net/x"
	with := func(extra ...string) []string { return append(append([]string{}, base...), extra...) }
	without := func(key string) []string {
		var out []string
		for _, s := range base {
			if !strings.HasPrefix(s, key+"=") {
				out = append(out, s)
			}
		}
		return out
	}
	many := with()
	for i := range MaxKernelProperties {
		many = append(many, "K"+strings.Repeat("X", i%7)+string(rune('A'+i%26))+string(rune('A'+i/26))+"=v")
	}
	goodUdev := []byte(strings.Join(base, "\x00") + "\x00")
	tests := []struct {
		name string
		msg  []byte
		want error
	}{
		{"no ACTION", kernelMsg(hdr, without("ACTION")...), ErrNoAction},
		{"no DEVPATH", kernelMsg(hdr, without("DEVPATH")...), ErrNoDevPath},
		{"no SUBSYSTEM", kernelMsg(hdr, without("SUBSYSTEM")...), ErrNoSubsystem},
		{"no SEQNUM", kernelMsg(hdr, without("SEQNUM")...), ErrNoSeqnum},
		{"header action mismatch", kernelMsg("remove@/devices/virtual/net/x", base...), ErrHeaderMismatch},
		{"header devpath mismatch", kernelMsg("add@/devices/virtual/net/y", base...), ErrHeaderMismatch},
		{"header without @", kernelMsg("add", base...), ErrBadHeader},
		{"unknown action", kernelMsg("explode@/devices/virtual/net/x", "ACTION=explode", "DEVPATH=/devices/virtual/net/x", "SUBSYSTEM=net", "SEQNUM=1"), ErrUnknownAction},
		{"devpath outside sysfs's kobjects", kernelMsg("add@/etc/passwd", "ACTION=add", "DEVPATH=/etc/passwd", "SUBSYSTEM=net", "SEQNUM=1"), ErrBadDevPath},
		{"devpath a bare top", kernelMsg("add@/", "ACTION=add", "DEVPATH=/", "SUBSYSTEM=net", "SEQNUM=1"), ErrBadDevPath},
		{"devpath with dotdot", kernelMsg("add@/devices/../etc", "ACTION=add", "DEVPATH=/devices/../etc", "SUBSYSTEM=net", "SEQNUM=1"), ErrBadDevPath},
		{"devpath with dot", kernelMsg("add@/devices/./x", "ACTION=add", "DEVPATH=/devices/./x", "SUBSYSTEM=net", "SEQNUM=1"), ErrBadDevPath},
		{"devpath with empty segment", kernelMsg("add@/devices//x", "ACTION=add", "DEVPATH=/devices//x", "SUBSYSTEM=net", "SEQNUM=1"), ErrBadDevPath},
		{"devpath trailing slash", kernelMsg("add@/devices/x/", "ACTION=add", "DEVPATH=/devices/x/", "SUBSYSTEM=net", "SEQNUM=1"), ErrBadDevPath},
		{"property without =", kernelMsg(hdr, with("JUNK")...), ErrNoEquals},
		{"empty property", kernelMsg(hdr, with("")...), ErrNoEquals},
		{"empty key", kernelMsg(hdr, with("=v")...), ErrEmptyKey},
		{"key with dash", kernelMsg(hdr, with("BAD-KEY=v")...), ErrBadKey},
		{"key with space", kernelMsg(hdr, with("BAD KEY=v")...), ErrBadKey},
		{"key with dot", kernelMsg(hdr, with("LD.PRELOAD=v")...), ErrBadKey},
		{"duplicate key", kernelMsg(hdr, with("SUBSYSTEM=block")...), ErrDuplicateKey},
		{"not terminated", bytes.TrimSuffix(kernelMsg(hdr, base...), []byte{0}), ErrNotTerminated},
		{"empty message", nil, ErrNotTerminated},
		{"seqnum not numeric", kernelMsg(hdr, "ACTION=add", "DEVPATH=/devices/virtual/net/x", "SUBSYSTEM=net", "SEQNUM=12a"), ErrBadSeqnum},
		{"seqnum negative", kernelMsg(hdr, "ACTION=add", "DEVPATH=/devices/virtual/net/x", "SUBSYSTEM=net", "SEQNUM=-1"), ErrBadSeqnum},
		{"seqnum empty", kernelMsg(hdr, "ACTION=add", "DEVPATH=/devices/virtual/net/x", "SUBSYSTEM=net", "SEQNUM="), ErrBadSeqnum},
		{"seqnum overflow", kernelMsg(hdr, "ACTION=add", "DEVPATH=/devices/virtual/net/x", "SUBSYSTEM=net", "SEQNUM=99999999999999999999"), ErrBadSeqnum},
		{"devname escaping dev", kernelMsg(hdr, with("DEVNAME=../etc/shadow")...), ErrBadDevName},
		{"devname absolute elsewhere", kernelMsg(hdr, with("DEVNAME=/etc/shadow")...), ErrBadDevName},
		{"too many properties", kernelMsg(hdr, many...), ErrTooManyProperties},
		{"too large", append(kernelMsg(hdr, base...), make([]byte, MaxMessageSize)...), ErrTooLarge},
		{"udev bad magic", udevMsg(0xdeadbeef, udevHeaderSize, udevHeaderSize, goodUdev), ErrBadUdevHeader},
		{"udev short header", []byte(udevPrefix + "\xfe\xed"), ErrBadUdevHeader},
		{"udev wrong header size", udevMsg(udevMagic, 32, udevHeaderSize, goodUdev), ErrBadUdevHeader},
		{"udev offset past end", udevMsg(udevMagic, udevHeaderSize, 4000, goodUdev), ErrBadUdevHeader},
		{"udev offset inside header", udevMsg(udevMagic, udevHeaderSize, 8, goodUdev), ErrBadUdevHeader},
		{"udev trailing garbage", append(udevMsg(udevMagic, udevHeaderSize, udevHeaderSize, goodUdev), 'x'), ErrBadUdevHeader},
		{"udev not terminated", udevMsg(udevMagic, udevHeaderSize, udevHeaderSize, bytes.TrimSuffix(goodUdev, []byte{0})), ErrNotTerminated},
		{"udev no properties", udevMsg(udevMagic, udevHeaderSize, udevHeaderSize, nil), ErrNotTerminated},
		{"udev duplicate key", udevMsg(udevMagic, udevHeaderSize, udevHeaderSize, append(goodUdev, "ACTION=remove\x00"...)), ErrDuplicateKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Parse(tt.msg)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse error = %v, want %v (event %+v)", err, tt.want, e)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name string
		msg  []byte
		key  string
		want string
	}{
		{"value with equals", kernelMsg("add@/devices/x", "ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=net", "SEQNUM=1", "MODALIAS=a=b=c"), "MODALIAS", "a=b=c"},
		{"empty value", kernelMsg("add@/devices/x", "ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=net", "SEQNUM=1", "DEVTYPE="), "DEVTYPE", ""},
		{"synthetic lower-case argument", kernelMsg("change@/devices/x", "ACTION=change", "DEVPATH=/devices/x", "SUBSYSTEM=net", "SEQNUM=7", "SYNTH_ARG_tag=t1"), "SYNTH_ARG_tag", "t1"},
		// This kernel has no loadable modules, so module events are built
		// in the kernel's format rather than captured.
		{"module add", kernelMsg("add@/module/loop", "ACTION=add", "DEVPATH=/module/loop", "SUBSYSTEM=module", "SEQNUM=900"), "SUBSYSTEM", "module"},
		{"driver bind", kernelMsg("add@/bus/usb/drivers/usb-storage", "ACTION=add", "DEVPATH=/bus/usb/drivers/usb-storage", "SUBSYSTEM=drivers", "SEQNUM=901"), "DEVPATH", "/bus/usb/drivers/usb-storage"},
		// As Debian's kernel sends them when a USB stick makes scsi_mod
		// and sd_mod load (seen in the real-machine suite).
		{"scsi_host class add", kernelMsg("add@/class/scsi_host", "ACTION=add", "DEVPATH=/class/scsi_host", "SUBSYSTEM=class", "SEQNUM=1423"), "SUBSYSTEM", "class"},
		{"scsi_disk class add", kernelMsg("add@/class/scsi_disk", "ACTION=add", "DEVPATH=/class/scsi_disk", "SUBSYSTEM=class", "SEQNUM=1431"), "DEVPATH", "/class/scsi_disk"},
		{"exactly the property limit", kernelMsg("add@/devices/x", append([]string{"ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=net", "SEQNUM=1"}, manyProps(MaxKernelProperties-4)...)...), "P0", "v"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Parse(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.Get(tt.key); got != tt.want {
				t.Errorf("%s = %q, want %q", tt.key, got, tt.want)
			}
		})
	}
}

func manyProps(n int) []string {
	var out []string
	for i := range n {
		out = append(out, "P"+strings.Repeat("Q", i)+"=v")
	}
	out[0] = "P0=v"
	return out
}

func TestJSONRoundTrip(t *testing.T) {
	for _, f := range []string{"loop0p1-partition-add.kernel", "loop0p1-partition-add.udev", "net-lo-change.kernel"} {
		t.Run(f, func(t *testing.T) {
			e, err := Parse(capture(t, f))
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"seqnum", "action", "devpath", "subsystem", "devtype", "devname", "env", "source"} {
				if _, ok := m[k]; !ok {
					t.Errorf("JSON lacks %q: %s", k, b)
				}
			}
			var back Event
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(e.Env(), back.Env()); diff != "" {
				t.Errorf("env mismatch (-want +got):\n%s", diff)
			}
			e.Props, back.Props = nil, nil
			if diff := cmp.Diff(e, back); diff != "" {
				t.Errorf("event mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestJSONRejects(t *testing.T) {
	for name, in := range map[string]string{
		"bad devpath":        `{"action":"add","devpath":"/../x","subsystem":"net","seqnum":1}`,
		"disagreeing action": `{"action":"add","devpath":"/devices/x","subsystem":"net","seqnum":1,"env":{"ACTION":"remove"}}`,
		"unknown source":     `{"action":"add","devpath":"/devices/x","subsystem":"net","seqnum":1,"source":"mars"}`,
		"bad key":            `{"action":"add","devpath":"/devices/x","subsystem":"net","seqnum":1,"env":{"LD PRELOAD":"x"}}`,
		"not an object":      `[1,2]`,
	} {
		t.Run(name, func(t *testing.T) {
			var e Event
			if err := json.Unmarshal([]byte(in), &e); err == nil {
				t.Fatalf("accepted %s as %+v", in, e)
			}
		})
	}
}

func TestJSONEscapesDeviceStrings(t *testing.T) {
	e, err := FromProps(props("ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=block", "SEQNUM=3",
		`ID_FS_LABEL="},"admin":true,"x":"`+"\r\n<b>"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Admin any               `json:"admin"`
		Env   map[string]string `json:"env"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.Admin != nil || m.Env["ID_FS_LABEL"] != `"},"admin":true,"x":"`+"\r\n<b>" {
		t.Errorf("label not kept as one string value: %s", b)
	}
}

func FuzzParse(f *testing.F) {
	for _, b := range captures(f) {
		f.Add(b)
	}
	f.Add(kernelMsg("add@/devices/x", "ACTION=add", "DEVPATH=/devices/x", "SUBSYSTEM=net", "SEQNUM=1", "A=b=c"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := Parse(b)
		if err != nil {
			return
		}
		again, err := Parse(e.appendKernel(nil))
		if err != nil {
			t.Fatalf("re-encoded event does not parse: %v\n%q", err, e.appendKernel(nil))
		}
		again.Source = e.Source
		if diff := cmp.Diff(e, again); diff != "" {
			t.Fatalf("re-encoded event differs (-first +again):\n%s", diff)
		}
	})
}

func BenchmarkParse(b *testing.B) {
	msg := capture(b, "loop0p1-partition-add.kernel")
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := Parse(msg); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseUdev(b *testing.B) {
	msg := capture(b, "loop0p1-partition-add.udev")
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		if _, err := Parse(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// appendKernel appends the event in the kernel's wire format.
func (e *Event) appendKernel(b []byte) []byte {
	b = append(b, e.Action...)
	b = append(b, '@')
	b = append(b, e.DevPath...)
	b = append(b, 0)
	for _, p := range e.Props {
		b = append(b, p.Key...)
		b = append(b, '=')
		b = append(b, p.Value...)
		b = append(b, 0)
	}
	return b
}
