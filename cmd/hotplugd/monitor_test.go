package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

func TestWriteText(t *testing.T) {
	// net lo change as this machine's kernel sent it.
	lo, err := uevent.Parse([]byte("change@/devices/virtual/net/lo\x00ACTION=change\x00DEVPATH=/devices/virtual/net/lo\x00" +
		"SUBSYSTEM=net\x00SYNTH_UUID=0\x00INTERFACE=lo\x00IFINDEX=1\x00SEQNUM=842\x00"))
	if err != nil {
		t.Fatal(err)
	}
	// A USB stick whose label and model try to forge a line and drive
	// the terminal.
	evil, err := uevent.FromProps([]uevent.Property{
		{Key: "ACTION", Value: "add"},
		{Key: "DEVPATH", Value: "/devices/pci0000:00/usb1/1-1/host0/block/sdb/sdb1"},
		{Key: "SUBSYSTEM", Value: "block"},
		{Key: "SEQNUM", Value: "7"},
		{Key: "ID_FS_LABEL", Value: "x\nKERNEL[0.000000] remove /devices/fake (block)"},
		{Key: "ID_MODEL", Value: "\x1b[2J\x1b]0;owned\x07"},
		{Key: "ID_VENDOR", Value: `"quoted"`},
		{Key: "ID_SERIAL", Value: "bad\xffutf8"},
		{Key: "ID_FS_LABEL_ENC", Value: "Ma Clé USB"},
	})
	if err != nil {
		t.Fatal(err)
	}
	evil.Source = uevent.SourceUdev
	at := time.Unix(1764234611, 123456789)
	tests := []struct {
		name string
		ev   uevent.Event
		want string
	}{
		{"net lo change", lo, `KERNEL[1764234611.123456] change   /devices/virtual/net/lo (net)
ACTION=change
DEVPATH=/devices/virtual/net/lo
SUBSYSTEM=net
SYNTH_UUID=0
INTERFACE=lo
IFINDEX=1
SEQNUM=842

`},
		{"usb stick with hostile strings", evil, `UDEV  [1764234611.123456] add      /devices/pci0000:00/usb1/1-1/host0/block/sdb/sdb1 (block)
ACTION=add
DEVPATH=/devices/pci0000:00/usb1/1-1/host0/block/sdb/sdb1
SUBSYSTEM=block
SEQNUM=7
ID_FS_LABEL="x\nKERNEL[0.000000] remove /devices/fake (block)"
ID_MODEL="\x1b[2J\x1b]0;owned\a"
ID_VENDOR="\"quoted\""
ID_SERIAL="bad\xffutf8"
ID_FS_LABEL_ENC=Ma Clé USB

`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			w := bufio.NewWriter(&b)
			writeText(w, tt.ev, at)
			w.Flush()
			if diff := cmp.Diff(tt.want, b.String()); diff != "" {
				t.Errorf("writeText (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMonitorFlags(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{[]string{"monitor", "--source", "bogus"}, `unknown source "bogus"`},
		{[]string{"monitor", "--nope"}, "exit status 2"},
		{[]string{"monitor", "extra"}, "exit status 2"},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		err := run(context.Background(), tt.args, io.Discard, &stderr)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%q: err %v, want %q", tt.args, err, tt.wantErr)
		}
	}
}

func inCI() bool {
	v, _ := strconv.ParseBool(os.Getenv("CI"))
	return v
}

// need skips the test when a prerequisite is missing, or fails it in CI.
func need(t *testing.T, ok bool, format string, args ...any) {
	t.Helper()
	if ok {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if inCI() {
		t.Fatalf("missing prerequisite (CI=true): %s", msg)
	}
	t.Skipf("missing prerequisite: %s", msg)
}

const loUevent = "/sys/class/net/lo/uevent"

// TestMonitorJSON runs the built binary: `hotplugd monitor --json`, an lo
// change, SIGINT.
func TestMonitorJSON(t *testing.T) {
	need(t, os.Geteuid() == 0, "root (euid is %d)", os.Geteuid())
	f, err := os.OpenFile(loUevent, os.O_WRONLY, 0)
	need(t, err == nil, "writable %s: %v", loUevent, err)
	f.Close()
	gobin, err := exec.LookPath("go")
	need(t, err == nil, "go: %v", err)

	bin := filepath.Join(t.TempDir(), "hotplugd")
	if out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "monitor", "--json", "--subsystem", "net")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	outLines, errLines := lines(stdout), lines(stderr)
	waitLine(t, errLines, "the listening line", func(l string) bool {
		return l == "hotplugd monitor: listening to kernel uevents, subsystem \"net\""
	})

	uuid := newUUID()
	if err := os.WriteFile(loUevent, []byte("change "+uuid), 0); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	line := waitLine(t, outLines, "the lo change", func(l string) bool {
		got = nil
		if err := json.Unmarshal([]byte(l), &got); err != nil {
			t.Errorf("stdout line %q is not JSON: %v", l, err)
			return false
		}
		if got["subsystem"] != "net" {
			t.Errorf("--subsystem net printed %q", l)
		}
		env, _ := got["env"].(map[string]any)
		return env["SYNTH_UUID"] == uuid
	})
	env := got["env"].(map[string]any)
	if seq, ok := got["seqnum"].(float64); !ok || seq <= 0 || strconv.FormatFloat(seq, 'f', -1, 64) != env["SEQNUM"] {
		t.Errorf("seqnum %v, env SEQNUM %v: want the same positive number", got["seqnum"], env["SEQNUM"])
	}
	want := map[string]any{"action": "change", "devpath": "/devices/virtual/net/lo", "subsystem": "net",
		"devtype": "", "devname": "", "source": "kernel"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v in %s", k, got[k], v, line)
		}
	}
	for _, k := range []string{"fs", "walk"} {
		if _, ok := got[k]; ok {
			t.Errorf("without --walk, the line has %q: %s", k, line)
		}
	}
	if env["INTERFACE"] != "lo" || env["ACTION"] != "change" || env["DEVPATH"] != "/devices/virtual/net/lo" {
		t.Errorf("env %v: want lo's properties", env)
	}
	var ev uevent.Event
	if err := json.Unmarshal([]byte(line), &ev); err != nil {
		t.Errorf("line does not decode as an event: %v", err)
	} else if ev.Action != "change" || ev.Source != uevent.SourceKernel || ev.Get("SYNTH_UUID") != uuid {
		t.Errorf("decoded %+v: want the kernel's lo change", ev)
	}

	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var rest []string
	for l := range errLines {
		rest = append(rest, l)
	}
	for l := range outLines {
		if !json.Valid([]byte(l)) {
			t.Errorf("stdout line %q is not JSON", l)
		}
	}
	err = cmd.Wait()
	waited = true
	if err != nil {
		t.Fatalf("monitor after SIGINT: %v; stderr:\n%s", err, strings.Join(rest, "\n"))
	}
	summary := regexp.MustCompile(`^hotplugd monitor: received=(\d+) accepted=(\d+) printed=(\d+) ` +
		`dropped_truncated=(\d+) dropped_sender=(\d+) dropped_creds=(\d+) dropped_udev_header=(\d+) dropped_parse=(\d+) overruns=(\d+)$`)
	var m []string
	for _, l := range rest {
		if mm := summary.FindStringSubmatch(l); mm != nil {
			if m != nil {
				t.Errorf("more than one summary line: %q", l)
			}
			m = mm
		}
	}
	if m == nil {
		t.Fatalf("no summary line on stderr:\n%s", strings.Join(rest, "\n"))
	}
	n := make([]int, len(m))
	for i := 1; i < len(m); i++ {
		n[i], _ = strconv.Atoi(m[i])
	}
	if received, accepted, printed := n[1], n[2], n[3]; printed < 1 || accepted < printed || received < accepted {
		t.Errorf("summary %q: want received >= accepted >= printed >= 1", m[0])
	}
}

// lines sends the lines of r to a channel, closed at EOF.
func lines(r io.Reader) <-chan string {
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

func waitLine(t *testing.T, ch <-chan string, what string, match func(string) bool) string {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				t.Fatalf("EOF before %s", what)
			}
			if match(l) {
				return l
			}
		case <-timeout:
			t.Fatalf("no %s within 10s", what)
		}
	}
}

func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
