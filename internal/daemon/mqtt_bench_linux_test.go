package daemon

import (
	"encoding/json"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/mqtttest"
)

// BenchmarkMQTTPublish: one op is a storm of 10,000 real uevents (tagged
// changes of lo, written as fast as one writer can) through the built
// daemon with events: all and a local mosquitto, and a subscriber that
// counts them. Reported: events/s published (from the first write to the
// last event arriving at the subscriber), lost (written and not
// received), the daemon's CPU time per event and its peak RSS.
func BenchmarkMQTTPublish(b *testing.B) {
	const storm = 10_000
	bin := needBinary(b)
	broker := mqtttest.Start(b, mqtttest.Options{})
	sub := mqtttest.Dial(b, broker, nil)
	sub.Subscribe(mqttPrefix + "/events/#")
	dir, tag := b.TempDir(), newTag()
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeRules(b, rulesPath, mqttSetting(broker.URL(), dir, "events: all"), rule{name: "lo", match: loMatch(tag)})
	d := startDaemon(b, bin, rulesPath)
	d.ready(b)
	f, err := os.OpenFile(loUevent, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	msg := []byte("change " + newUUID() + " T=" + tag)
	cpu0 := cpuTime(b, d.pid())
	var took time.Duration
	lost := 0
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		for range storm {
			if _, err := unix.Pwrite(fd, msg, 0); err != nil {
				b.Fatalf("write %s: %v", loUevent, err)
			}
		}
		got, last := countTagged(b, sub, tag, storm)
		took += last.Sub(start)
		lost += storm - got
	}
	b.StopTimer()
	cpu := cpuTime(b, d.pid()) - cpu0
	hwm, err := memStatus(d.pid(), "VmHWM")
	if err != nil {
		b.Fatal(err)
	}
	d.signal(b, syscall.SIGTERM)
	if code := d.wait(b, waitExit); code != 0 {
		b.Fatalf("exit code %d", code)
	}
	n := float64(b.N * storm)
	b.ReportMetric(n/took.Seconds(), "published-events/s")
	b.ReportMetric(float64(lost), "lost")
	b.ReportMetric(float64(cpu)/n, "daemon-cpu-ns/event")
	b.ReportMetric(float64(hwm)/(1<<20), "VmHWM-MiB")
}

// countTagged reads events until n of tag arrived, or nothing came for
// 10 s, and returns how many did and when the last one did.
func countTagged(b *testing.B, sub *mqtttest.Client, tag string, n int) (int, time.Time) {
	got, last := 0, time.Now()
	for got < n {
		m := sub.Next(10 * time.Second)
		if m == nil {
			break
		}
		var ev eventDoc
		if json.Unmarshal(m.Payload, &ev) == nil && ev.Data.Env["SYNTH_ARG_T"] == tag {
			got, last = got+1, time.Now()
		}
	}
	return got, last
}

// BenchmarkLatencySilentBroker is BenchmarkLatency with every event
// published (events: all) to a broker that accepts TCP and never
// answers: its figures should be BenchmarkLatency's.
func BenchmarkLatencySilentBroker(b *testing.B) {
	addr := silentBroker(b)
	benchLatency(b, func(dir string) string { return mqttSetting("mqtt://"+addr, dir, "events: all") })
}
