package mount

import (
	"context"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// BenchmarkMountExt4 measures one Mount and one Unmount of an ext4 loop
// partition, each with its directory, mountinfo checks and two atomic
// state writes: the latency an add event pays before the mount is
// visible, plus its removal.
func BenchmarkMountExt4(b *testing.B) {
	looptest.Require(b, "mkfs.ext4")
	disk := newDisk(b, "ext4", "BENCH", diskOptions{})
	fx := newMountFixture(b, nil)
	ctx := context.Background()
	var mount, unmount time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := fx.m.Mount(ctx, disk.dev, Request{}); err != nil {
			b.Fatal(err)
		}
		mid := time.Now()
		if _, err := fx.m.Unmount(ctx, disk.dev); err != nil {
			b.Fatal(err)
		}
		mount += mid.Sub(start)
		unmount += time.Since(mid)
	}
	b.ReportMetric(float64(mount.Nanoseconds())/float64(b.N), "mount-ns/op")
	b.ReportMetric(float64(unmount.Nanoseconds())/float64(b.N), "unmount-ns/op")
}

// BenchmarkMountPlan measures the dry run of `hotplugd test`.
func BenchmarkMountPlan(b *testing.B) {
	fx := newMountFixture(b, nil)
	dev := Device{Major: 8, Minor: 17, Devnode: "/dev/sdb1", Devname: "sdb1", FSUsage: "filesystem", FSType: "ext4", Label: "BACKUP"}
	for b.Loop() {
		if _, err := fx.m.Plan(dev, Request{Options: []string{"noatime"}}); err != nil {
			b.Fatal(err)
		}
	}
}
