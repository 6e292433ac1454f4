package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/hotplugd/hotplugd/internal/looptest"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// buildBinary builds hotplugd into a new temporary directory.
func buildBinary(t *testing.T) string {
	t.Helper()
	gobin := looptest.ToolPath("go")
	looptest.Need(t, gobin != "", "go")
	bin := filepath.Join(t.TempDir(), "hotplugd")
	if out, err := exec.Command(gobin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestMonitorWalk records the plug and pull of a partition of a loop
// device with `monitor --json --walk`: its add has the filesystem and
// the walk up to the loop disk, its remove an empty walk.
func TestMonitorWalk(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	bin := buildBinary(t)
	loop := looptest.Attach(t, looptest.Image(t, 32<<20, "label: dos\nstart=2048, type=83\n"))
	loop.AddPartitions(t, 1)
	looptest.Mkfs(t, "ext4", "WALKED", loop.Part(1))
	looptest.Run(t, "partx", "-d", loop.Dev)

	cmd := exec.Command(bin, "monitor", "--json", "--walk", "--subsystem", "block")
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
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	outLines, errLines := lines(stdout), lines(stderr)
	waitLine(t, errLines, "the listening line", func(l string) bool { return strings.Contains(l, "listening to kernel uevents") })

	part := "/devices/virtual/block/" + loop.Name + "/" + loop.PartName(1)
	recorded := func(action string) uevent.Recording {
		var r uevent.Recording
		waitLine(t, outLines, action+" of "+part, func(l string) bool {
			if err := json.Unmarshal([]byte(l), &r); err != nil {
				t.Fatalf("line %q is not a recording: %v", l, err)
			}
			return r.Event.Action == action && r.Event.DevPath == part
		})
		return r
	}
	looptest.Run(t, "partx", "-a", loop.Dev)
	add := recorded("add")
	if add.FS == nil || add.FS.Label != "WALKED" || add.FS.Type != "ext4" || add.FS.Usage != "filesystem" {
		t.Errorf("add: fs %+v, want the ext4 labelled WALKED", add.FS)
	}
	if len(add.Walk) != 2 || add.Walk[0].DevPath != part || add.Walk[0].Attrs["partition"] != "1" ||
		add.Walk[1].DevType != "disk" || add.Walk[1].Attrs["removable"] != "0" || add.Walk[0].Subsystem != "block" {
		t.Errorf("add: walk %+v, want the partition and the loop disk", add.Walk)
	}
	looptest.Run(t, "partx", "-d", loop.Dev)
	remove := recorded("remove")
	if remove.FS != nil || remove.Walk == nil || len(remove.Walk) != 0 {
		t.Errorf("remove: fs %v, walk %#v: want none, and an empty walk", remove.FS, remove.Walk)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("monitor after SIGINT: %v", err)
	}
}

func TestMonitorWalkNeedsJSON(t *testing.T) {
	got, code := runCmd(t, "monitor", "--walk")
	if code != 2 || !strings.Contains(got, "--walk needs --json") {
		t.Errorf("monitor --walk: exit %d\n%s", code, got)
	}
}
