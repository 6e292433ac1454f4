package uevent

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// A loop partition's add as `monitor --json --walk` printed it (shortened).
const loopAddRecording = `{"seqnum":4721,"action":"add","devpath":"/devices/virtual/block/loop0/loop0p1",` +
	`"subsystem":"block","devtype":"partition","devname":"loop0p1","devnode":"/dev/loop0p1","source":"kernel",` +
	`"env":{"ACTION":"add","DEVNAME":"loop0p1","DEVPATH":"/devices/virtual/block/loop0/loop0p1","DEVTYPE":"partition",` +
	`"DISKSEQ":"12","MAJOR":"259","MINOR":"0","PARTN":"1","SEQNUM":"4721","SUBSYSTEM":"block"},` +
	`"fs":{"type":"ext4","label":"STICK","uuid":"3e6be9de-8139-4f3b-9bb4-1a7d2b1b7c55","usage":"filesystem","version":"1.0"},` +
	`"walk":[{"devpath":"/devices/virtual/block/loop0/loop0p1","subsystem":"block","devtype":"partition","driver":"",` +
	`"links":{"holder":"/devices/virtual/block/loop0"},"attrs":{"partition":"1","size":"63488"}},` +
	`{"devpath":"/devices/virtual/block/loop0","subsystem":"block","devtype":"disk","driver":"","attrs":{"removable":"0"}}]}`

func TestRecordingRoundTrip(t *testing.T) {
	var r Recording
	if err := json.Unmarshal([]byte(loopAddRecording), &r); err != nil {
		t.Fatal(err)
	}
	if r.Event.Seqnum != 4721 || r.Event.DevName != "loop0p1" || r.Event.Source != SourceKernel {
		t.Errorf("event %+v", r.Event)
	}
	if r.FS == nil || r.FS.Label != "STICK" || r.FS.Usage != "filesystem" {
		t.Errorf("fs %+v", r.FS)
	}
	if len(r.Walk) != 2 || r.Walk[1].DevType != "disk" || r.Walk[0].Attrs["size"] != "63488" {
		t.Errorf("walk %+v", r.Walk)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(loopAddRecording, string(b)); diff != "" {
		t.Errorf("re-encoded (-want +got):\n%s", diff)
	}
	var ev Event // --event reads a recording as its event
	if err := json.Unmarshal(b, &ev); err != nil || ev.DevPath != r.Event.DevPath {
		t.Errorf("as an event: %v, %+v", err, ev)
	}
}

// TestRecordingWalkPresence: no walk (not recorded) and an empty walk
// (the device was gone) are told apart, both ways.
func TestRecordingWalkPresence(t *testing.T) {
	ev, err := FromProps([]Property{{"ACTION", "remove"}, {"DEVPATH", "/devices/virtual/block/loop0/loop0p1"},
		{"SUBSYSTEM", "block"}, {"SEQNUM", "9"}})
	if err != nil {
		t.Fatal(err)
	}
	ev.Source = SourceKernel
	for _, tt := range []struct {
		walk []WalkDevice
		has  string
	}{{nil, ""}, {[]WalkDevice{}, `"walk":[]`}} {
		b, err := json.Marshal(Recording{Event: ev, Walk: tt.walk})
		if err != nil {
			t.Fatal(err)
		}
		if tt.has == "" && strings.Contains(string(b), `"walk"`) || tt.has != "" && !strings.Contains(string(b), tt.has) {
			t.Errorf("walk %#v encoded as %s", tt.walk, b)
		}
		if strings.Contains(string(b), `"fs"`) {
			t.Errorf("no fs, encoded as %s", b)
		}
		var r Recording
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		if (r.Walk == nil) != (tt.walk == nil) || r.FS != nil {
			t.Errorf("walk %#v decoded as %#v, fs %v", tt.walk, r.Walk, r.FS)
		}
	}
}

func TestRecordingErrors(t *testing.T) {
	const head = `{"action":"add","devpath":"/devices/virtual/block/loop0/loop0p1","subsystem":"block"`
	tests := []struct {
		name, in string
		want     string
		is       error
	}{
		{"unknown field", head + `,"colour":"red"}`, `unknown field "colour"`, nil},
		{"unknown field of a walk device", head + `,"walk":[{"devpath":"/devices/virtual/block/loop0/loop0p1","attrs":{},"x":1}]}`, `unknown field "x"`, nil},
		{"unknown field of fs", head + `,"fs":{"kind":"ext4"}}`, `unknown field "kind"`, nil},
		// encoding/json would take these for action, seqnum, label and
		// driver.
		{"a name in another case", `{"ACtion":"add","devpath":"/devices/virtual/block/loop0/loop0p1","subsystem":"block"}`,
			`unknown field "ACtion": the field is "action"`, nil},
		{"a name twice, in two cases", head + `,"Action":"remove"}`, `unknown field "Action": the field is "action"`, nil},
		{"a name folded", head + `,"ſeqnum":7}`, `unknown field "ſeqnum": the field is "seqnum"`, nil},
		{"a name of fs in another case", head + `,"fs":{"type":"vfat","Label":"X"}}`, `unknown field "Label" in fs: the field is "label"`, nil},
		{"a name of a walk device in another case", head + `,"walk":[{"devpath":"/devices/virtual/block/loop0/loop0p1","attrs":{}},` +
			`{"devpath":"/devices/virtual/block/loop0","attrs":{},"DRIVER":""}]}`, `unknown field "DRIVER" in walk[1]: the field is "driver"`, nil},
		{"truncated", head[:40], "unexpected end of JSON input", nil},
		{"not an event", `{"seqnum":3}`, "no ACTION", ErrNoAction},
		{"walk of another device", head + `,"walk":[{"devpath":"/devices/virtual/block/loop1","attrs":{}}]}`, "not the event's device", ErrBadWalk},
		{"walk going down", head + `,"walk":[{"devpath":"/devices/virtual/block/loop0/loop0p1","attrs":{}},` +
			`{"devpath":"/devices/virtual/block/loop0/loop0p1/x","attrs":{}}]}`, "is not a parent of", ErrBadWalk},
		{"link out of the walk", head + `,"walk":[{"devpath":"/devices/virtual/block/loop0/loop0p1","links":{"device":"/devices/pci0000:00"},"attrs":{}}]}`,
			"not a device of the walk", ErrBadWalk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Recording
			err := json.Unmarshal([]byte(tt.in), &r)
			if err == nil || !strings.Contains(err.Error(), tt.want) || tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
	var r Recording // a hand-written recording has no sequence number
	if err := json.Unmarshal([]byte(head+`}`), &r); err != nil || r.Event.Seqnum != 0 {
		t.Errorf("without seqnum: %v, %+v", err, r.Event)
	}
	// Names written with escapes are their values; the keys of env,
	// links and attrs are the device's, in any case.
	exact := `{"\u0061ction":"add", "devpath":"/devices/virtual/block/loop0/loop0p1", "subsystem":"block",` +
		`"env":{"Action":"x","id_fs_label":"y"}, "fs":{"label":"z"}, "walk":[{"devpath":"/devices/virtual/block/loop0/loop0p1",` +
		`"links":{"Holder":"/devices/virtual/block/loop0"},"attrs":{"Size":"1","queue/Rotational":"0"}},` +
		`{"devpath":"/devices/virtual/block/loop0","attrs":{}}]}`
	if err := json.Unmarshal([]byte(exact), &r); err != nil || r.Event.Env()["Action"] != "x" || r.Walk[0].Attrs["Size"] != "1" || r.FS.Label != "z" {
		t.Errorf("%s: %v, %+v", exact, err, r)
	}
}

// FuzzAttrs: Attrs decodes every JSON object of strings as a
// map[string]string does, and rejects what it rejects.
func FuzzAttrs(f *testing.F) {
	for _, s := range []string{`{}`, `null`, `{"size":"63488","queue/rotational":"1"}`, `{"a":"x","a":"y"}`,
		`{"model":"Cruzer Blade    ","e":"\u00e9\n\"\\","bad":"\xff"}`, ` { "a" : "b" , "c":"d" } `, `{"a":1}`, `[]`, `"x"`,
		`{"a":"b",}`, `{"a" "b"}`, `{"a":"b"`, `{"\ud800":"x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var want map[string]string
		errWant := json.Unmarshal(b, &want)
		var got Attrs
		errGot := json.Unmarshal(b, &got)
		if (errWant == nil) != (errGot == nil) {
			t.Fatalf("%q: map error %v, Attrs error %v", b, errWant, errGot)
		}
		if errWant == nil && !cmp.Equal(want, map[string]string(got)) {
			t.Fatalf("%q: map %q, Attrs %q", b, want, got)
		}
	})
}

// FuzzRecording: what decodes as a recording encodes back to one that
// decodes the same.
func FuzzRecording(f *testing.F) {
	data, err := os.ReadFile("../../configs/examples/testdata/usb-stick.jsonl")
	if err != nil {
		f.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "{") {
			f.Add([]byte(l))
		}
	}
	f.Add([]byte(loopAddRecording))
	f.Add([]byte(`{"ACtion":"add","devpAth":"/devices/x","suBsYstem":"0"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Recording
		if err := json.Unmarshal(b, &r); err != nil {
			return
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var r2 Recording
		if err := json.Unmarshal(again, &r2); err != nil {
			t.Fatalf("re-encoded recording does not decode: %v\n%s", err, again)
		}
		// Properties the object gave outside env come first, then env's
		// by name: the order of the first decoding is not kept.
		byKey := cmpopts.SortSlices(func(a, b Property) bool { return a.Key < b.Key })
		if diff := cmp.Diff(r, r2, cmpopts.EquateEmpty(), byKey); diff != "" {
			t.Fatalf("re-encoded recording differs (-first +again):\n%s", diff)
		}
	})
}
