package daemon

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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

// TestMediaChangeMapping: the medium of a disk taken out while the
// cleartext of a LUKS partition on it is mounted, and the plain ext4 of
// its other partition. Both are unmounted and their directories
// removed, each once, and the mapping is closed, as the removal of its
// partition would close it: left open, it would read and write the next
// medium. In use, the cleartext is detached lazily and the mapping
// closed deferred.
func TestMediaChangeMapping(t *testing.T) {
	for _, busy := range []bool{false, true} {
		t.Run(map[bool]string{false: "idle", true: "busy"}[busy], func(t *testing.T) {
			l := startLUKSSeam(t)
			secret := l.mount(t, l.mapping.Cleartext, "SECRET")
			plain := l.mount(t, l.partition(t, 2), "PLAIN")
			if busy {
				sleeper := exec.Command("sleep", "600")
				sleeper.Dir = secret.MountPoint
				if err := sleeper.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
				l.crypt.SetBusy(t, true)
			}
			l.send(t, "change", l.devpath, "block", 9001, "DEVTYPE=disk", "DEVNAME="+l.disk.Name, "DISK_MEDIA_CHANGE=1")
			deadline := time.Now().Add(15 * time.Second)
			for l.d.handled.Load() < 1 {
				if time.Now().After(deadline) {
					t.Fatal("the media change was not handled")
				}
				time.Sleep(10 * time.Millisecond)
			}
			m := l.d.deps.Mounter
			if len(m.Entries())+len(m.Mappings()) != 0 {
				t.Errorf("after the media change: mounts %+v, mappings %+v", m.Entries(), m.Mappings())
			}
			for _, p := range []string{secret.MountPoint, plain.MountPoint} {
				if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s is left: %v", p, err)
				}
			}
			if mi := amMountsUnder(t, filepath.Join(l.dir, "media")); len(mi) != 0 {
				t.Errorf("still mounted: %v", amMountpoints(mi))
			}
			closeCall, closed, unmounted := "close -- luks-test", "medium changed: mapping closed", "medium changed: unmounted"
			if busy {
				closeCall, unmounted = "close --deferred -- luks-test", "medium changed while in use: lazily unmounted"
				closed = "medium changed while its mapping was in use: the kernel removes it once its last user lets go"
			}
			if calls := l.crypt.Calls(t); !cmp.Equal(calls[1:], []string{closeCall}) {
				t.Errorf("cryptsetup calls %q, want the open and %q", calls, closeCall)
			}
			if l.crypt.Open() != busy {
				t.Errorf("the fake's kernel has the mapping: %v, want %v", l.crypt.Open(), busy)
			}
			if n := len(l.records(closed, "mapping", "luks-test")); n != 1 {
				t.Errorf("%d lines %q, want 1", n, closed)
			}
			if n := len(l.records(unmounted, "path", secret.MountPoint)); n != 1 {
				t.Errorf("%d lines %q of %s, want 1", n, unmounted, secret.MountPoint)
			}
			if n := len(l.records("medium changed: unmounted", "path", plain.MountPoint)); n != 1 {
				t.Errorf("%d lines of the unmount of %s, want 1", n, plain.MountPoint)
			}
			if f := l.failures(); len(f) != 0 {
				t.Errorf("failures logged: %+v", f)
			}
			if got := metricValue(t, l.metrics(t), `hotplugd_actions_total{rule="(removal)",kind="unmount",result="ok"}`); got != 2 {
				t.Errorf("the removal's unmounts: %v, want 2 (the plain mount, and the mapping with its cleartext)", got)
			}
		})
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
