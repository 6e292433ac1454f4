package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/device"
	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/looptest"
)

// TestFstabPartitionTagsKernelSource: with source kernel (no udev, so no
// ID_PART_ENTRY_* and no /dev/disk links) a GPT partition that fstab
// lists by PARTUUID=, one listed by PARTLABEL= and one by its
// /dev/disk/by-partlabel link are left alone (noauto means noauto); an
// unlisted one is mounted. Real partitions, real kernel properties.
func TestFstabPartitionTagsKernelSource(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	const uuidA = "0b3e6e3c-8d3c-4a57-9f2e-2f6a1c1d9c11"
	img := looptest.Image(t, 64<<20, "label: gpt\n"+
		"size=12M, name=\"sys a\", uuid="+uuidA+"\n"+
		"size=12M, name=\"backup b\"\n"+
		"size=12M, name=\"media/c\"\n"+
		"size=12M, name=\"free d\"\n")
	loop := looptest.Attach(t, img)
	loop.AddPartitions(t, 4)
	for i, label := range []string{"A", "B", "C", "D"} {
		looptest.Mkfs(t, "ext4", "FS"+label, loop.Part(i+1))
	}
	etc := t.TempDir()
	fstab := "PARTUUID=" + strings.ToUpper(uuidA) + " /srv/a ext4 noauto 0 2\n" +
		`PARTLABEL=backup\040b /srv/b ext4 noauto 0 2` + "\n" +
		`/dev/disk/by-partlabel/media\x2fc /srv/c ext4 noauto 0 2` + "\n"
	if err := os.WriteFile(filepath.Join(etc, "fstab"), []byte(fstab), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startSeam(t, `
  coldplug: false
rules:
  - name: mount
    match: action == "add" && devtype == "partition" && glob("`+loop.Name+`p*", devname)
    actions:
      - mount: {}
`, func(c *Config) { c.Roots = host.Roots{Etc: etc} })
	m, err := device.New(device.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i := 1; i <= 4; i++ {
		ev, err := m.EventAt("/sys/class/block/" + loop.PartName(i))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := ev.Lookup("ID_PART_ENTRY_UUID"); ok {
			t.Fatalf("the kernel's event has udev's ID_PART_ENTRY_UUID: %v", ev.Props)
		}
		ev.Source = "kernel"
		select {
		case s.src.events <- ev:
		case <-time.After(10 * time.Second):
			t.Fatal("the daemon does not take events")
		}
	}
	media := filepath.Join(s.dir, "media")
	deadline := time.Now().Add(20 * time.Second)
	for s.d.handled.Load() < 4 || s.d.actionsOK.Load()+s.d.actionsFailed.Load() < 4 {
		if time.Now().After(deadline) {
			t.Fatalf("handled %d events, %d actions", s.d.handled.Load(), s.d.actionsOK.Load()+s.d.actionsFailed.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	entries := s.d.deps.Mounter.Entries()
	if len(entries) != 1 || entries[0].MountPoint != filepath.Join(media, "FSD") {
		t.Errorf("mounts %+v, want only the unlisted partition at %s", entries, filepath.Join(media, "FSD"))
	}
	skipped := 0
	for _, r := range s.recs() {
		if r.Msg == "action skipped" && strings.Contains(r.Str("reason"), "listed in fstab") {
			skipped++
		}
	}
	if skipped != 3 {
		t.Errorf("%d mounts skipped as listed in fstab, want 3", skipped)
	}
	for _, e := range entries {
		if _, err := s.d.deps.Mounter.Unmount(t.Context(), e.Device); err != nil {
			t.Errorf("unmount %s: %v", e.MountPoint, err)
		}
	}
}
