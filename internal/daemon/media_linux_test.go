package daemon

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/device"
	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/looptest"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// TestMediaChange: a card reader or an optical drive says a medium went
// with "change" and DISK_MEDIA_CHANGE=1, not "remove". The stale mount is
// undone; a medium in the drive then goes through the rules as an add,
// and is mounted; an empty drive is left empty. A real loop device plays
// the drive (its capacity set to 0 is the medium taken out); the kernel's
// event is built as a reader sends it.
func TestMediaChange(t *testing.T) {
	looptest.Require(t, "mkfs.ext4")
	img := looptest.Image(t, 16<<20, "")
	loop := looptest.Attach(t, img)
	looptest.Mkfs(t, "ext4", "CARD", loop.Dev)
	s := startSeam(t, `
  coldplug: false
rules:
  - name: card
    match: action == "add" && devname == "`+loop.Name+`" && fs.usage == "filesystem"
    actions:
      - mount: {}
`, func(c *Config) { c.Roots = host.Roots{} })
	m, err := device.New(device.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	add, err := m.EventAt("/sys/class/block/" + loop.Name)
	if err != nil {
		t.Fatal(err)
	}
	add.Source = uevent.SourceKernel
	feed(t, s, add)
	path := filepath.Join(s.dir, "media", "CARD")
	waitMounts(t, s, path)
	first := s.d.deps.Mounter.Entries()[0].MountedAt

	change := mediaEvent(t, add, 9001)
	feed(t, s, change)
	deadline := time.Now().Add(15 * time.Second)
	for {
		es := s.d.deps.Mounter.Entries()
		if len(es) == 1 && es[0].MountPoint == path && es[0].MountedAt.After(first) {
			break // unmounted, and the medium in the drive mounted again
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a media change with a medium in: mounts %+v", es)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Take the medium out: the disk's capacity drops to 0.
	if err := os.Truncate(img, 0); err != nil {
		t.Fatal(err)
	}
	looptest.Run(t, "losetup", "-c", loop.Dev)
	feed(t, s, mediaEvent(t, add, 9002))
	waitMounts(t, s)
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("the mount point of the medium taken out is left: %v", err)
	}
}

// mediaEvent is the change a reader's disk sends when its medium changes.
func mediaEvent(t *testing.T, add uevent.Event, seqnum int) uevent.Event {
	t.Helper()
	var props []uevent.Property
	for _, p := range add.Props {
		switch p.Key {
		case "ACTION", "SEQNUM":
		default:
			props = append(props, p)
		}
	}
	props = append(props, uevent.Property{Key: "ACTION", Value: "change"}, uevent.Property{Key: "DISK_MEDIA_CHANGE", Value: "1"},
		uevent.Property{Key: "SEQNUM", Value: strconv.Itoa(seqnum)})
	ev, err := uevent.FromProps(props)
	if err != nil {
		t.Fatal(err)
	}
	ev.Source = uevent.SourceKernel
	return ev
}

func feed(t *testing.T, s *seam, ev uevent.Event) {
	t.Helper()
	select {
	case s.src.events <- ev:
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon does not take events")
	}
}

// waitMounts waits until the daemon's mounts are exactly paths.
func waitMounts(t *testing.T, s *seam, paths ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		es := s.d.deps.Mounter.Entries()
		ok := len(es) == len(paths)
		for i := range es {
			ok = ok && es[i].MountPoint == paths[i]
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("mounts %+v, want %q", es, paths)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
