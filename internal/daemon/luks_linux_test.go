package daemon

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/actions/crypt"
	"github.com/hotplugd/hotplugd/internal/actions/crypt/crypttest"
	"github.com/hotplugd/hotplugd/internal/actions/mount"
	"github.com/hotplugd/hotplugd/internal/control"
	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/keyfile/keytest"
	"github.com/hotplugd/hotplugd/internal/logtest"
	"github.com/hotplugd/hotplugd/internal/looptest"
)

// This machine's kernel has no device-mapper: a luksSeam's daemon runs
// crypttest's fake cryptsetup, whose sysfs and /dev are the daemon's.

const seamKey = "the key of the card"

// luksSeam is a daemon with a disk of two real loop partitions whose
// first it has unlocked as the mapping luks-test; the cleartext the
// fake opens is another loop device, with an ext4 "SECRET". The disk is
// in the fake's sysfs as the kernel shows one (dev/block/<num>), so an
// eject can tell its partitions.
type luksSeam struct {
	*seam
	crypt   *crypttest.Fake
	disk    *looptest.Loop
	devpath string        // the disk's
	mapping mount.Mapping // luks-test, on partition 1
}

func startLUKSSeam(t *testing.T) *luksSeam {
	t.Helper()
	looptest.Require(t, "mkfs.ext4")
	disk := looptest.Attach(t, looptest.Image(t, 32<<20, "label: dos\n,12M,83\n,,83\n"))
	disk.AddPartitions(t, 2)
	looptest.Mkfs(t, "ext4", "PLAIN", disk.Part(2))
	clear := looptest.Attach(t, looptest.Image(t, 16<<20, ""))
	looptest.Mkfs(t, "ext4", "SECRET", clear.Dev)
	fake := crypttest.New(t, seamKey, clear.Dev, blockDevice(t, clear.Dev, "").DevNum())
	l := &luksSeam{crypt: fake, disk: disk, devpath: "/devices/virtual/block/" + disk.Name}
	sysDisk := filepath.Join(fake.Sys, l.devpath)
	if err := os.MkdirAll(filepath.Join(fake.Sys, "dev", "block"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(sysDisk, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(sysDisk, filepath.Join(fake.Sys, "dev", "block", blockDevice(t, disk.Dev, "").DevNum())); err != nil {
		t.Fatal(err)
	}
	l.seam = startSeam(t, `
  coldplug: false
rules:
  - name: card
    match: action == "add" && subsystem == "block" && fs.usage == "filesystem"
    actions:
      - mount: {}
`, func(c *Config) {
		c.Roots = host.Roots{Sys: fake.Sys, Dev: fake.Dev}
		c.crypt = &crypt.Cryptsetup{Path: fake.Path}
	})
	backing := l.partition(t, 1)
	mp, _, err := l.d.deps.Mounter.Unlock(t.Context(), backing, mount.UnlockRequest{Name: "luks-test",
		Keyfile: keytest.Key(t, seamKey), Rule: "card", Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	l.mapping = mp
	return l
}

// blockDevice describes the block device node as the mounter takes it.
func blockDevice(t *testing.T, node, devpath string) mount.Device {
	t.Helper()
	st := looptest.WaitBlockDevice(t, node)
	return mount.Device{Major: unix.Major(st.Rdev), Minor: unix.Minor(st.Rdev), Devnode: node,
		Devname: filepath.Base(node), Devpath: devpath}
}

// partition describes partition n of the disk, with the devpath the
// kernel gives it.
func (l *luksSeam) partition(t *testing.T, n int) mount.Device {
	t.Helper()
	return blockDevice(t, l.disk.Part(n), l.devpath+"/"+l.disk.PartName(n))
}

// mount mounts dev, an ext4 labelled label, as the mount action does.
func (l *luksSeam) mount(t *testing.T, dev mount.Device, label string) mount.Entry {
	t.Helper()
	dev.FSUsage, dev.FSType, dev.Label = "filesystem", "ext4", label
	e, err := l.d.deps.Mounter.Mount(t.Context(), dev, mount.Request{Rule: "card"})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// records are the log records of message msg whose attribute key is
// value.
func (l *luksSeam) records(msg, key, value string) []logtest.Record {
	var out []logtest.Record
	for _, r := range l.recs() {
		if r.Msg == msg && r.Str(key) == value {
			out = append(out, r)
		}
	}
	return out
}

// failures are the "action failed" lines logged.
func (l *luksSeam) failures() []logtest.Record {
	var out []logtest.Record
	for _, r := range l.recs() {
		if r.Msg == "action failed" {
			out = append(out, r)
		}
	}
	return out
}

func (l *luksSeam) metrics(t *testing.T) string {
	t.Helper()
	var b bytes.Buffer
	if err := l.d.metrics.WritePrometheus(&b); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestEjectMappingNotMounted: `hotplugd eject` of the partition, or of
// its disk, whose mapping hotplugd opened but whose cleartext it did not
// mount (a rule with only unlock) closes the mapping and names it; it is
// no "hotplugd mounted nothing there". The disk's eject unmounts the
// plain filesystem of its other partition too.
func TestEjectMappingNotMounted(t *testing.T) {
	for _, whole := range []bool{false, true} {
		t.Run(map[bool]string{false: "partition", true: "disk"}[whole], func(t *testing.T) {
			l := startLUKSSeam(t)
			target, unmounted := l.disk.Part(1), []control.MountStatus{}
			if whole {
				target = l.disk.Dev
				unmounted = append(unmounted, mountStatus(l.mount(t, l.partition(t, 2), "PLAIN")))
			}
			res := controlHandlers{l.d}.Eject(t.Context(), control.EjectRequest{Targets: []string{target}})
			want := control.EjectResult{Targets: []control.EjectTarget{{Target: target, Unmounted: unmounted,
				Closed: []string{"luks-test"}}}}
			if diff := cmp.Diff(want, res); diff != "" {
				t.Errorf("eject %s (-want +got):\n%s", target, diff)
			}
			if calls := l.crypt.Calls(t); len(calls) != 2 || calls[1] != "close -- luks-test" {
				t.Errorf("cryptsetup calls %q, want the open and one close", calls)
			}
			if l.crypt.Open() || len(l.d.deps.Mounter.Mappings())+len(l.d.deps.Mounter.Entries()) != 0 {
				t.Error("the mapping is still open, or something recorded, after the eject")
			}
			if mi := amMountsUnder(t, filepath.Join(l.dir, "media")); len(mi) != 0 {
				t.Errorf("still mounted: %v", amMountpoints(mi))
			}
			if got := metricValue(t, l.metrics(t), `hotplugd_ejects_total{result="ok"}`); got != 1 {
				t.Errorf("ejects ok: %v, want 1", got)
			}
			if recs := l.records("eject", "target", target); len(recs) != 1 || recs[0].Str("result") != "ok" ||
				recs[0].Str("closed") != "[luks-test]" {
				t.Errorf("log of the eject: %+v", recs)
			}
			if f := l.failures(); len(f) != 0 {
				t.Errorf("failures logged: %+v", f)
			}
			res = controlHandlers{l.d}.Eject(t.Context(), control.EjectRequest{Targets: []string{target}})
			if e := res.Targets[0].Error; !strings.Contains(e, mount.ErrNoSuchMount.Error()) {
				t.Errorf("eject again: %q, want %q", e, mount.ErrNoSuchMount)
			}
		})
	}
}
