package uevent

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseText(t *testing.T) {
	tests := []struct {
		name, in, action string
		want             string // ACTION DEVPATH SUBSYSTEM SEQNUM, or the error
	}{
		{"newline", "ACTION=add\nDEVPATH=/devices/a\nSUBSYSTEM=block\n", "", "add /devices/a block 0"},
		{"crlf and comments", "# x\r\nACTION=add\r\n\r\nDEVPATH=/devices/a\r\nSUBSYSTEM=block\r\nSEQNUM=7\r\n", "", "add /devices/a block 7"},
		{"kernel header", "add@/devices/a\x00ACTION=add\x00DEVPATH=/devices/a\x00SUBSYSTEM=block\x00SEQNUM=3\x00", "", "add /devices/a block 3"},
		{"header only", "remove@/devices/a\nSUBSYSTEM=usb\n", "", "remove /devices/a usb 0"},
		{"action override", "remove@/devices/a\nSUBSYSTEM=usb\n", "bind", "bind /devices/a usb 0"},
		{"header mismatch", "add@/devices/a\nACTION=remove\nDEVPATH=/devices/a\nSUBSYSTEM=usb\n", "", `header disagrees with properties: header ACTION "add", property "remove"`},
		{"value with = and @", "ACTION=add\nDEVPATH=/devices/a\nSUBSYSTEM=net\nX=a=b@c\n", "", "add /devices/a net 0"},
		{"udevadm monitor", "UDEV  [1234.567890] add      /devices/a (block)\nACTION=add\nDEVPATH=/devices/a\nSUBSYSTEM=block\nSEQNUM=12\n", "", "add /devices/a block 12"},
		{"json", `{"action":"change","devpath":"/devices/b","subsystem":"net","env":{"INTERFACE":"lo"}}`, "", "change /devices/b net 0"},
		{"json override", `{"action":"change","devpath":"/devices/b","subsystem":"net","env":{"INTERFACE":"lo"}}`, "remove", "remove /devices/b net 0"},
		{"no devpath", "ACTION=add\nSUBSYSTEM=block\n", "", "no DEVPATH"},
		{"devpath escape", "ACTION=add\nDEVPATH=/devices/../etc\nSUBSYSTEM=block\n", "", `bad DEVPATH: "/devices/../etc"`},
		{"not key=value", "ACTION=add\nwhat\n", "", `line 2: "what" is not KEY=VALUE`},
		{"bad override", "ACTION=add\nDEVPATH=/devices/a\nSUBSYSTEM=block\n", "plug", `unknown ACTION: "plug"`},
	}
	for _, tt := range tests {
		ev, err := ParseText([]byte(tt.in))
		if err == nil && tt.action != "" {
			ev, err = ev.WithAction(tt.action)
		}
		got := fmt.Sprintf("%s %s %s %d", ev.Action, ev.DevPath, ev.Subsystem, ev.Seqnum)
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestFromArgs(t *testing.T) {
	ev, err := FromArgs([]string{"DEVPATH=/devices/a", "SUBSYSTEM=block", "X=a=b"})
	if err != nil {
		t.Fatal(err)
	}
	want := []Property{{"ACTION", "add"}, {"DEVPATH", "/devices/a"}, {"SUBSYSTEM", "block"}, {"X", "a=b"}, {"SEQNUM", "0"}}
	if diff := cmp.Diff(want, ev.Props); diff != "" {
		t.Errorf("props (-want +got):\n%s", diff)
	}
	if _, err := FromArgs([]string{"DEVPATH=/devices/a", "nope"}); err == nil {
		t.Error("an argument without = was accepted")
	}
}

// FuzzParseText: whatever ParseText accepts is an event Parse accepts in
// the kernel's format (when it fits one), with the same properties.
func FuzzParseText(f *testing.F) {
	for _, b := range captures(f) {
		f.Add(b)
	}
	f.Add([]byte("# hand-written\nremove@/devices/a\nSUBSYSTEM=usb\nX=a=b@c\n"))
	f.Add([]byte(`{"action":"change","devpath":"/devices/b","subsystem":"net","env":{"INTERFACE":"lo"}}`))
	f.Add([]byte("UDEV  [1234.567890] add      /devices/a (block)\nACTION=add\nDEVPATH=/devices/a\nSUBSYSTEM=block\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseText(b)
		if err != nil || len(e.Props) > MaxKernelProperties || len(e.appendKernel(nil)) > MaxMessageSize {
			return // a recording may hold udev's properties, more than a kernel message
		}
		again, err := Parse(e.appendKernel(nil))
		if err != nil {
			t.Fatalf("accepted event does not parse in the kernel's format: %v\n%q", err, e.appendKernel(nil))
		}
		again.Source = e.Source
		if diff := cmp.Diff(e, again); diff != "" {
			t.Fatalf("re-encoded event differs (-first +again):\n%s", diff)
		}
	})
}
