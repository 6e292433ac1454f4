//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// The recording of a USB stick: `hotplugd monitor --json --walk` in a
// shell-mode guest, alone on the kernel's events, while a stick is
// plugged in and pulled out; configs/examples/testdata/usb-stick.jsonl
// is one.
const (
	recordJSON = "/run/e2e/stick.jsonl"
	recordErr  = "/run/e2e/stick.err"
	// stickID is the stick's QEMU device id and USB serial number.
	stickID = "stick"
	// recordQuiet is how long the recording must not grow before a plug
	// or a pull is taken as finished.
	recordQuiet = 3 * time.Second
)

// TestStickRecording records a vfat stick (a DOS partition table, one
// partition labelled STICK) plugged into the guest's xHCI bus and pulled
// out again, and replays the recording on the host with `hotplugd test
// --replay` and the shipped configs/rules.yaml: the automount rule mounts
// the partition on its add, and its remove, when sysfs no longer has the
// device, sees the label the add saw.
//
// With HOTPLUGD_E2E_RECORD=FILE the recording is also written to FILE,
// after a comment saying how it was made (`make record-stick` writes
// configs/examples/testdata/usb-stick.jsonl).
func TestStickRecording(t *testing.T) {
	out := os.Getenv("HOTPLUGD_E2E_RECORD")
	g := bootGuest(t, shellMode)
	lines := recordStick(t, g)
	recs := decodeRecording(t, lines)
	part := checkStickRecording(t, recs)
	file := filepath.Join(t.TempDir(), "usb-stick.jsonl")
	writeFile(t, file, strings.Join(lines, "\n")+"\n", 0o644)
	replayStick(t, g, file, part)
	if out == "" || t.Failed() {
		return
	}
	header := recordingHeader(t, g, len(recs))
	writeFile(t, out, header+strings.Join(lines, "\n")+"\n", 0o644)
	t.Logf("wrote %s: %d events", out, len(recs))
}

// recordStick runs the monitor while a stick is plugged in and pulled
// out, and returns the lines it printed.
func recordStick(t *testing.T, g *guest) []string {
	t.Helper()
	img := makeImage(t, g.dir, stickID, stickSpec{size: 64 * mib,
		parts: []fsSpec{{fs: "vfat", label: "STICK", args: []string{"-i", "1A2B3C4D"}}}})
	// The drivers udevd would load on the first plug: the recording is
	// of the stick's events, not of modules being loaded.
	g.sh(t, "modprobe -a usb_storage sd_mod")
	monitor := g.startBackground(t, "exec "+shq(g.bin)+" monitor --json --walk >"+recordJSON+" 2>"+recordErr)
	g.eventually(t, 30*time.Second, "the monitor to listen", "grep -q 'listening to kernel uevents' "+recordErr)

	s := g.plug(t, stickID, img)
	g.eventually(t, plugTimeout, "the partition's add",
		`grep -Eq '"action":"add","devpath":"[^"]*/block/sd[a-z]+/sd[a-z]+1","subsystem":"block","devtype":"partition"' `+recordJSON)
	g.waitQuiet(t, recordJSON)
	s.pull(t)
	g.eventually(t, pullTimeout, "the USB device's remove",
		`grep -Eq '"action":"remove","devpath":"[^"]*","subsystem":"usb","devtype":"usb_device"' `+recordJSON)
	g.waitQuiet(t, recordJSON)

	g.sh(t, fmt.Sprintf("kill -INT %d", monitor))
	line := strings.TrimSpace(g.eventually(t, 30*time.Second, "the monitor's summary", "grep '^hotplugd monitor: received=' "+recordErr))
	summary := parseLogfmt(strings.TrimPrefix(line, "hotplugd monitor: "))
	for k, v := range summary {
		if strings.HasPrefix(k, "dropped_") && v != "0" || k == "overruns" && v != "0" {
			t.Errorf("the monitor counted %s=%s: %s", k, v, line)
		}
	}
	if e := strings.TrimSpace(g.sh(t, "grep -v '^hotplugd monitor: ' "+recordErr+" || true")); e != "" {
		t.Errorf("the monitor said:\n%s", e)
	}
	size := strings.TrimSpace(g.sh(t, "wc -c <"+recordJSON))
	data := g.sh(t, "cat "+recordJSON)
	if strconv.Itoa(len(data)) != size {
		t.Fatalf("the recording is %s bytes, %d came back (the agent returns at most 4 MiB)", size, len(data))
	}
	lines := strings.Split(strings.TrimSuffix(data, "\n"), "\n")
	if summary["printed"] != strconv.Itoa(len(lines)) {
		t.Errorf("the monitor printed %s events, the recording has %d lines", summary["printed"], len(lines))
	}
	t.Logf("%s; %d bytes", line, len(data))
	return lines
}

// waitQuiet waits until file has not grown for recordQuiet.
func (g *guest) waitQuiet(t testing.TB, file string) {
	t.Helper()
	last, since := "", time.Now()
	for deadline := time.Now().Add(plugTimeout); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		size := strings.TrimSpace(g.sh(t, "wc -c <"+shq(file)))
		if size != last {
			last, since = size, time.Now()
		} else if time.Since(since) >= recordQuiet {
			return
		}
	}
	t.Fatalf("%s still grew after %v", file, plugTimeout)
}

// decodeRecording decodes each line as `hotplugd test --replay` does.
func decodeRecording(t *testing.T, lines []string) []uevent.Recording {
	t.Helper()
	recs := make([]uevent.Recording, len(lines))
	for i, l := range lines {
		if err := recs[i].UnmarshalJSON([]byte(l)); err != nil {
			t.Fatalf("line %d of the recording: %v\n%.300s", i+1, err, l)
		}
	}
	return recs
}

// checkStickRecording checks that the recording is of a USB stick on a
// real bus: the USB device comes and goes, its partition's add has the
// probe of its vfat filesystem and a walk up through the disk (removable)
// and the USB device (QEMU's, with the stick's serial number), and the
// partition's remove has an empty walk. It returns the partition's add.
func checkStickRecording(t *testing.T, recs []uevent.Recording) *uevent.Recording {
	t.Helper()
	var part, partGone, usbAdd, usbGone *uevent.Recording
	for i := range recs {
		r := &recs[i]
		ev := &r.Event
		switch {
		case ev.Subsystem == "block" && ev.DevType == "partition" && ev.Action == "add":
			if part != nil {
				t.Errorf("two partitions added: %s and %s", part.Event.DevPath, ev.DevPath)
			}
			part = r
		case ev.Subsystem == "block" && ev.DevType == "partition" && ev.Action == "remove":
			partGone = r
		case ev.Subsystem == "usb" && ev.DevType == "usb_device" && ev.Action == "add":
			usbAdd = r
		case ev.Subsystem == "usb" && ev.DevType == "usb_device" && ev.Action == "remove":
			usbGone = r
		}
	}
	if part == nil || partGone == nil || usbAdd == nil || usbGone == nil {
		t.Fatalf("the recording lacks the add or remove of the partition (%v, %v) or of the USB device (%v, %v)",
			part != nil, partGone != nil, usbAdd != nil, usbGone != nil)
	}
	if usbAdd != &recs[0] || usbGone != &recs[len(recs)-1] {
		t.Errorf("the recording starts with %s %s and ends with %s %s, want the USB device's add and remove",
			recs[0].Event.Action, recs[0].Event.DevPath, recs[len(recs)-1].Event.Action, recs[len(recs)-1].Event.DevPath)
	}
	if want := (uevent.FS{Type: "vfat", Label: "STICK", UUID: "1A2B-3C4D", Usage: "filesystem", Version: "FAT16"}); part.FS == nil || *part.FS != want {
		t.Errorf("the partition's add has fs %+v, want %+v", part.FS, want)
	}
	if partGone.Event.DevPath != part.Event.DevPath || partGone.Walk == nil || len(partGone.Walk) != 0 || partGone.FS != nil {
		t.Errorf("the partition's remove (%s) has walk %v and fs %v, want an empty walk and no fs of %s",
			partGone.Event.DevPath, partGone.Walk, partGone.FS, part.Event.DevPath)
	}
	var disk, usb *uevent.WalkDevice
	for i := range part.Walk {
		d := &part.Walk[i]
		switch {
		case d.Subsystem == "block" && d.DevType == "disk":
			disk = d
		case d.Subsystem == "usb" && d.DevType == "usb_device" && usb == nil:
			usb = d
		}
	}
	switch {
	case disk == nil || disk.Attrs["removable"] != "1":
		t.Errorf("the partition's walk has no removable disk: %+v", disk)
	case usb == nil || usb.Attrs["serial"] != stickID || usb.DevPath != usbAdd.Event.DevPath:
		t.Errorf("the partition's walk has no USB device %s with serial %s: %+v", usbAdd.Event.DevPath, stickID, usb)
	default:
		t.Logf("%d events; the partition %s; its walk: %d devices, the stick %s:%s %q",
			len(recs), part.Event.DevPath, len(part.Walk), usb.Attrs["idVendor"], usb.Attrs["idProduct"], usb.Attrs["product"])
	}
	return part
}

// replayStick replays file with the shipped rules through the hotplugd
// under test, on the host, and checks what it prints for the
// partition's add and remove; then that --update writes expectations
// that --expect agrees with.
func replayStick(t *testing.T, g *guest, file string, part *uevent.Recording) {
	t.Helper()
	rules := filepath.Join(moduleRoot(t), "configs", "rules.yaml")
	out := runHost(t, g.bin, "test", "--config", rules, "--replay", file)
	blocks := replayBlocks(out)
	node := "/dev/" + part.Event.DevName
	for _, c := range []struct {
		action string
		want   []string
	}{
		{"add", []string{"fs.label=STICK ", "rule usb-automount (" + rules + ":", "mount " + node + " at /media/STICK\n"}},
		{"remove", []string{"fs.label=STICK ", "removal: what hotplugd mounted or unlocked from a removed block device is always undone", "unmount " + node + " from /media/STICK\n"}},
	} {
		b, ok := blocks[c.action+" "+part.Event.DevPath]
		if !ok {
			t.Errorf("hotplugd test --replay printed no %s of %s:\n%s", c.action, part.Event.DevPath, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(b, w) {
				t.Errorf("the replay of the partition's %s lacks %q:\n%s", c.action, w, b)
			}
		}
	}
	// The shipped rules have no rule for a removal: the unmount is the
	// daemon's own.
	if !regexp.MustCompile(`\n\d+ events, 1 matched a rule; nothing was run, mounted or written\n$`).MatchString(out) {
		t.Errorf("the replay does not end with N events, 1 matched a rule (the partition's add):\n%s", out[max(0, len(out)-300):])
	}
	expect := filepath.Join(t.TempDir(), "rules--usb-stick.expect.yaml")
	runHost(t, g.bin, "test", "--config", rules, "--replay", file, "--expect", expect, "--update")
	runHost(t, g.bin, "test", "--config", rules, "--replay", file, "--expect", expect)
	x, err := os.ReadFile(expect)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("expectations of the shipped rules:\n%s", x)
}

// replayBlocks splits what `hotplugd test --replay` printed by event:
// "ACTION DEVPATH" to the event's lines (the last event of each).
func replayBlocks(out string) map[string]string {
	head := regexp.MustCompile(`^event \d+ \(line \d+\): (\S+) (\S+) \(`)
	blocks := map[string]string{}
	for b := range strings.SplitSeq(out, "\n\n") {
		if m := head.FindStringSubmatch(b); m != nil {
			blocks[m[1]+" "+m[2]] = b + "\n"
		}
	}
	return blocks
}

// runHost runs a command on the host and returns its standard output;
// it fails the test unless the command exits 0.
func runHost(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n--- stdout\n%s--- stderr\n%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// recordingHeader is the comment a written recording starts with.
func recordingHeader(t *testing.T, g *guest, events int) string {
	t.Helper()
	kernel := strings.TrimSpace(g.sh(t, "uname -r"))
	ctx, cancel := qmpCtx()
	defer cancel()
	raw, err := g.qmp.do(ctx, "query-version", nil)
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		QEMU struct{ Major, Minor, Micro int } `json:"qemu"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("query-version: %v: %s", err, raw)
	}
	return fmt.Sprintf(`# A USB stick plugged in and pulled out, as `+"`hotplugd monitor --json --walk`"+`
# recorded it (kernel events), for `+"`hotplugd test --replay`"+`.
#
# Recorded in the real-machine suite's guest (internal/e2e,
# TestStickRecording): Linux %s, QEMU %d.%d.%d's usb-storage on its
# xHCI bus, no udevd, usb-storage and sd_mod already loaded. The stick is
# a 64 MiB image with a DOS partition table and one vfat partition
# (mkfs.vfat -n STICK -i 1A2B3C4D), plugged in with QMP's device_add and
# pulled out with device_del while the monitor ran: %d events, from the
# USB device's add to its remove. Serial numbers, vendor and product
# strings are QEMU's.
#
# The default rules mount the partition (rules--usb-stick.expect.yaml);
# the disk-image example leaves it alone (disk-image--usb-stick.expect.yaml).
# Re-record it, and rewrite those, with `+"`make record-stick`"+` (root and QEMU).
`, kernel, v.QEMU.Major, v.QEMU.Minor, v.QEMU.Micro, events)
}
