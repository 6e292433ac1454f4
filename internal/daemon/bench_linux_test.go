package daemon

// Benchmarks of the built `hotplugd run` against the real kernel. Run
// them with `make bench`, or
//
//	go test -run '^$' -bench 'Storm|Latency' -benchtime 1x ./internal/daemon/
//
// One op of BenchmarkStorm is a storm of 100,000 uevents; one op of
// BenchmarkLatency is 200 samples; -benchtime 1x gives exactly that.

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hotplugd/hotplugd/internal/mqtttest"
)

// probeSocket receives the datagrams of testdata/latencyprobe: "UUID
// UNIXNANO", the moment the action's process started running Go code.
type probeSocket struct {
	path string
	conn *net.UnixConn
	buf  []byte
}

func newProbeSocket(b *testing.B) *probeSocket {
	b.Helper()
	path := filepath.Join(b.TempDir(), "probe")
	if len(path) >= 100 {
		dir, err := os.MkdirTemp("", "hpp")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
		path = filepath.Join(dir, "probe")
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return &probeSocket{path: path, conn: conn, buf: make([]byte, 256)}
}

// wait returns the start time the probe reported for uuid, skipping
// reports of others.
func (p *probeSocket) wait(b *testing.B, uuid string, timeout time.Duration) int64 {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_ = p.conn.SetReadDeadline(deadline)
		n, _, err := p.conn.ReadFromUnix(p.buf)
		if err != nil {
			b.Fatalf("no report from the probe for %s: %v", uuid, err)
		}
		id, ns, _ := strings.Cut(string(p.buf[:n]), " ")
		if id != uuid {
			continue
		}
		t, err := strconv.ParseInt(ns, 10, 64)
		if err != nil {
			b.Fatalf("probe sent %q", p.buf[:n])
		}
		return t
	}
}

func needProbe(b *testing.B) string {
	b.Helper()
	probe, err := builds.build("./internal/daemon/testdata/latencyprobe", "latencyprobe")
	need(b, err == nil, "the latency probe: %v", err)
	return probe
}

// stormRules are 99 rules that do not match a change of lo, in the shapes
// rules files have, and a sentinel that runs the probe on an "add" of lo.
// With evaluate false every rule names another action or subsystem, which
// the rules' pre-filter rules out without running the expression; with
// evaluate true, 20 of them pass the pre-filter (they are about changes
// of net devices) and test more (glob on env.INTERFACE, SYNTH_ARG_T),
// which costs an expression run and the env map per event.
func stormRules(probe, sock string, evaluate bool) []rule {
	var rs []rule
	subsystems := []string{"block", "usb", "tty", "input", "sound", "scsi", "hidraw", "drm", "power_supply"}
	for i := range 99 {
		var m string
		switch {
		case evaluate && i >= 79:
			m = fmt.Sprintf(`action == "change" && subsystem == "net" && (glob("wlan*", env.INTERFACE) || env.SYNTH_ARG_T == "x%d")`, i)
		case i < 45:
			m = fmt.Sprintf(`action == "add" && subsystem == %q && env.ID_SERIAL == "s%d"`, subsystems[i%len(subsystems)], i)
		case i < 60:
			m = fmt.Sprintf(`subsystem in ["block", "usb"] && devname == "sd%d"`, i)
		default:
			m = fmt.Sprintf(`action in ["add", "remove"] && subsystem == "net" && devname == "eth%d"`, i)
		}
		rs = append(rs, rule{name: fmt.Sprintf("r%02d", i), match: m, argv: []string{"/bin/true"}})
	}
	return append(rs, rule{
		name:  "sentinel",
		match: `action == "add" && subsystem == "net" && devpath == "/devices/virtual/net/lo"`,
		argv:  []string{probe, sock},
	})
}

func uint64File(b *testing.B, path string) uint64 {
	b.Helper()
	s, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(s)), 10, 64)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// BenchmarkStorm pushes storms of 100,000 real uevents (writes of
// "change" to lo's uevent file) through the built daemon with 100 rules,
// none of which runs an action for them; an "add" of lo after each storm
// runs the probe, which marks when lo's events (handled in SEQNUM order)
// were all through.
//
// The rules are "prefiltered" (all 99 name other actions or subsystems,
// which the rules' pre-filter rules out without running an expression)
// or "evaluated" (20 of them run their expression on every event). The
// daemon either runs along with the writer ("live": the rate is then
// bounded by how fast one writer makes the kernel emit events) or is
// stopped (SIGSTOP) while the storm is written into its 128 MiB socket
// buffer and continued after ("backlog": the rate is the daemon's own).
//
// Reported: events/s handled (from the first write, or SIGCONT, to the
// sentinel's action), writes/s, lost (events written minus events the
// daemon handled, from its "stopped" log line), the kernel's overrun
// (ENOBUFS) reports and the listener's drops, the daemon's peak RSS
// (VmHWM) and the CPU time it spent per event (user+system, which other
// load on the machine does not inflate the way it does the rates).
//
// The .../mqtt variants run the same storms with settings.mqtt sending
// every event (events: all) to a local mosquitto through the outbox:
// what publishing costs the handling of events.
func BenchmarkStorm(b *testing.B) {
	for _, rules := range []string{"prefiltered", "evaluated"} {
		for _, mode := range []string{"live", "backlog"} {
			b.Run(rules+"/"+mode, func(b *testing.B) { benchStorm(b, rules == "evaluated", mode == "backlog", false) })
			if rules == "prefiltered" {
				b.Run(rules+"/"+mode+"/mqtt", func(b *testing.B) { benchStorm(b, false, mode == "backlog", true) })
			}
		}
	}
}

func benchStorm(b *testing.B, evaluate, backlog, mqtt bool) {
	const storm = 100_000
	bin, probe := needBinary(b), needProbe(b)
	dir := b.TempDir()
	ps := newProbeSocket(b)
	rulesPath := filepath.Join(dir, "rules.yaml")
	settings := ""
	if mqtt {
		settings = mqttSetting(mqtttest.Start(b, mqtttest.Options{}).URL(), dir, "events: all", "queue_max: 1000000")
	}
	writeRules(b, rulesPath, settings, stormRules(probe, ps.path, evaluate)...)
	d := startDaemon(b, bin, rulesPath)
	d.ready(b)
	f, err := os.OpenFile(loUevent, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd()) // once: Fd puts the file in blocking mode, a syscall
	change := []byte("change")
	seq0 := uint64File(b, "/sys/kernel/uevent_seqnum")
	cpu0 := cpuTime(b, d.pid())

	var handling, writing time.Duration
	b.ResetTimer()
	for range b.N {
		if backlog {
			d.signal(b, syscall.SIGSTOP)
		}
		start := time.Now()
		for range storm {
			if _, err := unix.Pwrite(fd, change, 0); err != nil {
				b.Fatalf("write %s: %v", loUevent, err)
			}
		}
		wrote := time.Now()
		writing += wrote.Sub(start)
		uuid := newUUID()
		if err := os.WriteFile(loUevent, []byte("add "+uuid), 0); err != nil {
			b.Fatal(err)
		}
		if backlog {
			start = time.Now()
			d.signal(b, syscall.SIGCONT)
		}
		end := ps.wait(b, uuid, 5*time.Minute)
		handling += time.Unix(0, end).Sub(start)
	}
	b.StopTimer()
	seq1 := uint64File(b, "/sys/kernel/uevent_seqnum")
	cpu := cpuTime(b, d.pid()) - cpu0
	hwm, err := memStatus(d.pid(), "VmHWM")
	if err != nil {
		b.Fatal(err)
	}
	d.signal(b, syscall.SIGTERM)
	if code := d.wait(b, waitExit); code != 0 {
		b.Fatalf("exit code %d", code)
	}
	st := stopLine(b, d)
	emitted := int64(seq1 - seq0)
	writes := int64(b.N) * (storm + 1)
	if emitted != writes {
		b.Logf("the kernel emitted %d events in the window, %d of them ours (the machine is not idle); the daemon handled %d",
			emitted, writes, st["events"])
	}
	b.ReportMetric(float64(writes)/handling.Seconds(), "events/s")
	b.ReportMetric(float64(int64(b.N)*storm)/writing.Seconds(), "writes/s")
	// Nothing of ours was lost when the daemon handled as many events as
	// were written (with coldplug off, other events only add to that),
	// the kernel reported no overrun (ENOBUFS) and the listener dropped
	// nothing.
	b.ReportMetric(float64(max(0, writes-st["events"])), "lost")
	b.ReportMetric(float64(st["overruns"]), "overruns")
	b.ReportMetric(float64(st["dropped"]), "dropped")
	b.ReportMetric(float64(hwm)/(1<<20), "VmHWM-MiB")
	b.ReportMetric(float64(cpu)/float64(writes), "daemon-cpu-ns/event")
}

// cpuTime is the user and system time pid has used, from /proc/PID/stat
// (in clock ticks of 10 ms: USER_HZ is 100 on Linux).
func cpuTime(b *testing.B, pid int) time.Duration {
	b.Helper()
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(s[strings.LastIndexByte(string(s), ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// BenchmarkLatency measures, 200 times per op, the time from the write to
// lo's uevent file (the clock is read just before the write(2) in which
// the kernel emits the event) to the start of the `run` action it
// triggers, two ways:
//
//   - p50-µs, p99-µs: to the action's execve(2), as the kernel's process
//     connector timestamps it (PROC_EVENT_EXEC of a child of the daemon):
//     "the action's process started", whatever the program is.
//   - fork-p50-µs: to the daemon's fork (clone(2)) of the action's
//     process, as the connector timestamps it: the daemon's own part.
//   - main-p50-µs, main-p99-µs: to the first thing the action program
//     itself does (testdata/latencyprobe reads the clock while Go
//     initialises its packages), which adds the Go runtime's start-up.
func BenchmarkLatency(b *testing.B) { benchLatency(b, func(string) string { return "" }) }

// benchLatency is BenchmarkLatency with the settings lines settings
// returns for the daemon's directory.
func benchLatency(b *testing.B, settings func(dir string) string) {
	const samples = 200
	bin, probe := needBinary(b), needProbe(b)
	dir := b.TempDir()
	tag := newTag()
	ps := newProbeSocket(b)
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeRules(b, rulesPath, settings(dir), rule{name: "probe", match: loMatch(tag), argv: []string{probe, ps.path}})
	d := startDaemon(b, bin, rulesPath)
	execs := watchExecs(b, d.pid())
	d.ready(b)

	var toFork, toExec, toMain []time.Duration
	b.ResetTimer()
	for range b.N {
		for range samples {
			uuid := newUUID()
			msg := []byte("change " + uuid + " T=" + tag)
			f, err := os.OpenFile(loUevent, os.O_WRONLY, 0)
			if err != nil {
				b.Fatal(err)
			}
			mono, wall := monotonicNow(b), time.Now().UnixNano()
			_, err = f.Write(msg)
			f.Close()
			if err != nil {
				b.Fatal(err)
			}
			toMain = append(toMain, time.Duration(ps.wait(b, uuid, time.Minute)-wall))
			select {
			case at := <-execs:
				toFork = append(toFork, time.Duration(at.fork-mono))
				toExec = append(toExec, time.Duration(at.exec-mono))
			case <-time.After(time.Minute):
				b.Fatal("no PROC_EVENT_EXEC for the action")
			}
		}
	}
	b.StopTimer()
	d.signal(b, syscall.SIGTERM)
	if code := d.wait(b, waitExit); code != 0 {
		b.Fatalf("exit code %d", code)
	}
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(percentile(toExec, 50)), "p50-µs")
	b.ReportMetric(us(percentile(toExec, 99)), "p99-µs")
	b.ReportMetric(us(percentile(toFork, 50)), "fork-p50-µs")
	b.ReportMetric(us(percentile(toMain, 50)), "main-p50-µs")
	b.ReportMetric(us(percentile(toMain, 99)), "main-p99-µs")
}

type forkExec struct{ fork, exec int64 }

func monotonicNow(b *testing.B) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		b.Fatal(err)
	}
	return ts.Nano()
}

// watchExecs listens to the kernel's process connector (cn_proc(4), the
// netlink multicast of fork and exec events) and sends, for each
// execve(2) done by a child of pid, the CLOCK_MONOTONIC times of the fork
// and of the exec.
func watchExecs(b *testing.B, pid int) <-chan forkExec {
	b.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_CONNECTOR)
	need(b, err == nil, "a process connector socket: %v", err)
	const (
		cnIdxProc         = 1 // CN_IDX_PROC, also CN_VAL_PROC and the multicast group
		procCnMcastListen = 1
		procEventFork     = 1
		procEventExec     = 2
	)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		unix.Close(fd)
		need(b, false, "binding the process connector: %v", err)
	}
	// nlmsghdr (16 bytes), cn_msg (id.idx, id.val, seq, ack, len, flags:
	// 20 bytes), then the operation.
	msg := make([]byte, 16+20+4)
	ne := binary.NativeEndian
	ne.PutUint32(msg[0:], uint32(len(msg)))
	ne.PutUint16(msg[4:], unix.NLMSG_DONE)
	ne.PutUint32(msg[16:], cnIdxProc)
	ne.PutUint32(msg[20:], cnIdxProc)
	ne.PutUint16(msg[32:], 4)
	ne.PutUint32(msg[36:], procCnMcastListen)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		need(b, false, "subscribing to the process connector (CONFIG_PROC_EVENTS): %v", err)
	}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)

	out := make(chan forkExec, 1024)
	var stop atomic.Bool
	done := make(chan struct{})
	b.Cleanup(func() {
		stop.Store(true)
		<-done
		unix.Close(fd)
	})
	go func() {
		defer close(done)
		children := make(map[uint32]int64) // pid → time of its fork
		buf := make([]byte, 64<<10)
		for !stop.Load() {
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n < 64 {
				continue
			}
			// proc_event after the headers: what, cpu, timestamp_ns, then
			// fork {parent_pid, parent_tgid, child_pid, child_tgid} or
			// exec {process_pid, process_tgid}.
			ev := buf[36:n]
			what, at := ne.Uint32(ev[0:]), int64(ne.Uint64(ev[8:]))
			switch what {
			case procEventFork:
				if int(ne.Uint32(ev[20:])) == pid {
					children[ne.Uint32(ev[28:])] = at
				}
			case procEventExec:
				if tgid := ne.Uint32(ev[20:]); children[tgid] != 0 {
					fork := children[tgid]
					delete(children, tgid)
					select {
					case out <- forkExec{fork, at}:
					default:
					}
				}
			}
		}
	}()
	return out
}

// percentile returns the p-th percentile (nearest rank) of ds.
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}
