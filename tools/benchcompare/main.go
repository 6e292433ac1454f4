// Command benchcompare measures hotplugd side by side with systemd-udevd
// and busybox mdev -d on the running kernel; `make bench-compare` runs it
// (root only: it writes to sysfs, mounts and starts daemons).
//
//	go run ./tools/benchcompare [-events 100000] [-samples 200] [-hotplugd bin/hotplugd]
//
// For each daemon that is installed, one after another and each alone, it
// measures:
//
//   - throughput: a storm of -events writes to /sys/class/net/lo/uevent as
//     fast as the kernel takes them; how many of them the daemon handled and
//     the time from just before the first write to the start of the last
//     handled event's command;
//   - latency: uevent write(2) → the rule's command started, one event at a
//     time (20 ms idle between two), p50 and p99 over -samples events.
//
// It prints a table with each daemon's ratios against hotplugd. A daemon
// that is not installed is a "not installed" row, not a failure; the exit
// status is 1 only when hotplugd, or an installed peer, could not be
// measured at all.
//
// # Event source
//
// Every event is a synthetic "change" uevent of the loopback interface: the
// tool writes "change <uuid> BC=<token> N=<i>" to /sys/class/net/lo/uevent
// and the kernel broadcasts a real uevent carrying SYNTH_UUID=<uuid>,
// SYNTH_ARG_BC=<token> and SYNTH_ARG_N=<i>. All three daemons act on it:
// hotplugd and udevd match any subsystem and action, and mdev -d runs the
// command of a `*command` mdev.conf line for every action, "change"
// included, matching the line's regex against the device name (for lo,
// which has no DEVNAME, the basename of DEVPATH: "lo") and its ENV=regex;
// prefixes against the event's properties. A loop block device would work
// for all three as well, but loop devices are shared with the other tests
// on the machine, and udevd and mdev would create and chmod its node.
//
// The whole run happens in a private network and mount namespace with a
// fresh sysfs mounted on /sys, so /sys/class/net/lo is the namespace's own
// lo: the kernel sends a network device's uevents only into the device's
// namespace, so a storm of 100,000 events neither floods other listeners on
// the machine nor gets interleaved with theirs. Uevents of other devices
// (loop devices of concurrent tests) still reach every daemon, as they would
// on any machine; the rules ignore them because they lack the run's random
// token. -netns=false runs in the host's namespaces instead.
//
// # Observable
//
// The rule of every daemon runs the same command: this tool's own binary
// (copied into the temporary directory) with the argument
// __benchcompare_record and a file name. As its first act it reads
// CLOCK_MONOTONIC, then appends "<SYNTH_UUID> <SYNTH_ARG_N> <nanoseconds>"
// to the file (HOTPLUG_SYNTH_UUID and HOTPLUG_SYNTH_ARG_N under hotplugd,
// which prefixes event variables). hotplugd and udevd exec it directly;
// mdev runs every command through system(3), that is /bin/sh -c, which is
// how mdev always runs commands and is counted as part of its cost. An
// event is handled when its command has started, which is the one
// observable all three have in common; the daemons' own counters (the
// "stopped" line of hotplugd) are printed as notes.
//
// All three handle the events of one device one after another (hotplugd and
// udevd keep per-device order, mdev -d handles every event in turn), so on
// one device the throughput is the per-event cost: the daemon's overhead,
// fork and exec, and the recorder itself (a Go binary; its own exec costs
// a millisecond or two), the same for all three.
//
// # Daemon set-up
//
// Each daemon runs in a mount namespace of its own (a child of the run's
// namespace) and is stopped with SIGTERM (SIGKILL after 10 s); any process
// left in that namespace afterwards is killed, so no daemon, worker or
// command outlives the run.
//
//   - hotplugd run --config FILE with the rule
//     `action == "change" && subsystem == "net" && env.SYNTH_ARG_BC == "<token>"`
//     and one run action; coldplug off (udevd does no coldplug either),
//     state_dir and mount_root in the temporary directory, every other
//     setting at its default (8 workers, log_level info: its log goes to a
//     file).
//   - systemd-udevd in the foreground, with empty tmpfs mounted over
//     /etc/udev/rules.d, /usr/lib/udev/rules.d, /lib/udev/rules.d and /run,
//     so that the host's rules are hidden and its only rule is
//     /run/udev/rules.d/99-benchcompare.rules:
//     ACTION=="change", SUBSYSTEM=="net", ENV{SYNTH_ARG_BC}=="<token>", RUN+="<recorder>".
//     /run/udev exists only inside that namespace, so no other program on
//     the machine ever sees a udevd running. /dev is a private tmpfs too,
//     so that udevd cannot touch the host's device nodes.
//   - busybox mdev -d -f, with a private tmpfs on /dev (mdev -d first
//     rescans /sys and creates and chowns every node it finds) and an
//     /etc/mdev.conf of its own (a bind mount over the host's file, or an
//     overlay on /etc when there is none) holding one line:
//     ACTION=^change$;SUBSYSTEM=^net$;SYNTH_ARG_BC=^<token>$;lo 0:0 600 ! *<recorder>
//
// Before the measurements a probe event is repeated until the command runs,
// which proves the daemon listens and its rule matches.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// recordArg as argv[1] makes the binary the recorder.
	recordArg = "__benchcompare_record"
	// nsexecArg as argv[1] makes the binary set up mounts (described by
	// nsSpecEnv) and exec a daemon.
	nsexecArg = "__benchcompare_nsexec"
	nsSpecEnv = "BENCHCOMPARE_NS"
	// sandboxEnv marks the copy of the tool that runs inside the private
	// network and mount namespace.
	sandboxEnv = "BENCHCOMPARE_SANDBOX"

	loUevent   = "/sys/class/net/lo/uevent"
	sampleGap  = 20 * time.Millisecond
	stopGrace  = 10 * time.Second
	daemonPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == recordArg {
		os.Exit(recordMain(os.Args[2]))
	}
	if len(os.Args) == 2 && os.Args[1] == nsexecArg {
		nsexec() // does not return
	}
	os.Exit(run())
}

// recordMain is the command every daemon's rule runs.
func recordMain(file string) int {
	now := monotonic()
	get := func(k string) string {
		if v, ok := os.LookupEnv(k); ok {
			return v
		}
		return os.Getenv("HOTPLUG_" + k)
	}
	line := get("SYNTH_UUID") + " " + get("SYNTH_ARG_N") + " " + strconv.FormatInt(now, 10) + "\n"
	fd, err := unix.Open(file, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchcompare recorder: %s: %v\n", file, err)
		return 1
	}
	defer unix.Close(fd)
	// One write(2) of less than PIPE_BUF to an O_APPEND file: lines of
	// concurrent recorders never interleave.
	if _, err := unix.Write(fd, []byte(line)); err != nil {
		fmt.Fprintf(os.Stderr, "benchcompare recorder: %s: %v\n", file, err)
		return 1
	}
	return 0
}

func monotonic() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

type config struct {
	events, samples int
	hotplugd        string
	udevd           string
	busybox         string
	netns           bool
	stall           time.Duration
	sampleTimeout   time.Duration
	keep            bool
}

func run() int {
	var c config
	flag.IntVar(&c.events, "events", 100000, "uevents in the throughput storm")
	flag.IntVar(&c.samples, "samples", 200, "latency samples")
	flag.StringVar(&c.hotplugd, "hotplugd", "bin/hotplugd", "hotplugd binary")
	flag.StringVar(&c.udevd, "udevd", "/lib/systemd/systemd-udevd", "systemd-udevd binary (Debian package udev)")
	flag.StringVar(&c.busybox, "busybox", "busybox", "busybox binary, for mdev -d (Debian package busybox)")
	flag.BoolVar(&c.netns, "netns", true, "run in a private network namespace (lo of its own)")
	flag.DurationVar(&c.stall, "stall", 15*time.Second, "stop waiting for the storm after this long without a handled event")
	flag.DurationVar(&c.sampleTimeout, "sample-timeout", 5*time.Second, "give up one latency sample after this long")
	flag.BoolVar(&c.keep, "keep", false, "keep the temporary directory (configs, daemon logs, records)")
	flag.Parse()
	if flag.NArg() > 0 || c.events < 1 || c.samples < 1 {
		flag.Usage()
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "benchcompare: needs root: it writes to sysfs, mounts file systems in private namespaces and starts daemons")
		return 1
	}
	ns := "host network namespace (-netns=false)"
	if c.netns {
		if os.Getenv(sandboxEnv) == "" {
			code, err := sandbox()
			if err == nil {
				return code
			}
			ns = fmt.Sprintf("host network namespace (a private one could not be made: %v)", err)
		} else {
			ns = "private network namespace"
			if err := enterSandbox(); err != nil {
				fmt.Fprintf(os.Stderr, "benchcompare: %v\n", err)
				return 1
			}
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	b, err := newBench(c, ns)
	if err != nil {
		fmt.Fprintf(os.Stderr, "benchcompare: %v\n", err)
		return 1
	}
	defer b.close()
	return b.run(ctx)
}

// sandbox runs this program again in a new network and mount namespace
// and returns its exit status; an error means it could not be started.
func sandbox() (int, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), sandboxEnv+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWNET,
		Pdeathsig:  syscall.SIGKILL,
	}
	// The child gets the terminal's SIGINT itself; pass on a SIGTERM and
	// wait for it to clean up.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGTERM {
				cmd.Process.Signal(s)
			}
		case err := <-done:
			if ee, ok := errors.AsType[*exec.ExitError](err); ok {
				if code := ee.ExitCode(); code >= 0 {
					return code, nil
				}
				return 1, nil
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "benchcompare: %v\n", err)
				return 1, nil
			}
			return 0, nil
		}
	}
}

// enterSandbox prepares the namespace sandbox() made: mounts private, and
// a sysfs of the new network namespace, whose lo is the only one in it.
func enterSandbox() error {
	if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("sysfs", "/sys", "sysfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount sysfs of the new network namespace: %w", err)
	}
	return nil
}

// nsSpec is what nsexec does before it execs Argv: mounts in the mount
// namespace the daemon was cloned into.
type nsSpec struct {
	Dev     bool        `json:"dev,omitempty"`     // a tmpfs on /dev with null, zero, full, random, urandom
	Tmpfs   []string    `json:"tmpfs,omitempty"`   // directories hidden under an empty tmpfs (skipped when absent)
	Overlay [][3]string `json:"overlay,omitempty"` // target, upper, work
	Bind    [][2]string `json:"bind,omitempty"`    // source, target
	Files   [][2]string `json:"files,omitempty"`   // path, content: written last
	Argv    []string    `json:"argv"`
	Env     []string    `json:"env"`
}

func nsexec() {
	var spec nsSpec
	err := json.Unmarshal([]byte(os.Getenv(nsSpecEnv)), &spec)
	if err == nil && len(spec.Argv) == 0 {
		err = errors.New("no argv")
	}
	if err == nil {
		err = spec.mount()
	}
	if err == nil {
		err = syscall.Exec(spec.Argv[0], spec.Argv, spec.Env)
	}
	fmt.Fprintf(os.Stderr, "benchcompare: starting %q: %v\n", spec.Argv, err)
	os.Exit(127)
}

func (s *nsSpec) mount() error {
	if err := unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if s.Dev {
		if err := unix.Mount("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID, "mode=0755"); err != nil {
			return fmt.Errorf("tmpfs on /dev: %w", err)
		}
		for name, minor := range map[string]uint32{"null": 3, "zero": 5, "full": 7, "random": 8, "urandom": 9} {
			p := "/dev/" + name
			if err := unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, minor))); err != nil {
				return fmt.Errorf("mknod %s: %w", p, err)
			}
			if err := os.Chmod(p, 0o666); err != nil {
				return err
			}
		}
	}
	for _, d := range s.Tmpfs {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			continue
		}
		if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
			return fmt.Errorf("tmpfs on %s: %w", d, err)
		}
	}
	for _, o := range s.Overlay {
		opts := "lowerdir=" + o[0] + ",upperdir=" + o[1] + ",workdir=" + o[2]
		if err := unix.Mount("overlay", o[0], "overlay", 0, opts); err != nil {
			return fmt.Errorf("overlay on %s: %w", o[0], err)
		}
	}
	for _, bd := range s.Bind {
		if err := unix.Mount(bd[0], bd[1], "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", bd[0], bd[1], err)
		}
	}
	for _, f := range s.Files {
		if err := os.MkdirAll(filepath.Dir(f[0]), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(f[0], []byte(f[1]), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// bench is one run of the comparison.
type bench struct {
	cfg      config
	ns       string
	dir      string // temporary directory
	recorder string // this binary, copied into dir
	lo       int    // fd of /sys/class/net/lo/uevent
	mntns    string // this process's mount namespace, never swept
}

func newBench(c config, ns string) (*bench, error) {
	b := &bench{cfg: c, ns: ns, lo: -1}
	var err error
	if b.mntns, err = os.Readlink("/proc/self/ns/mnt"); err != nil {
		return nil, err
	}
	if b.dir, err = os.MkdirTemp("", "benchcompare-"); err != nil {
		return nil, err
	}
	// The recorder's path goes into a udev RUN+= string and an mdev.conf
	// command line, which split at white space.
	if strings.ContainsAny(b.dir, " \t\n\"'\\$`;|&<>()*?[]#~=%") {
		b.close()
		return nil, fmt.Errorf("temporary directory %q: choose a TMPDIR without blanks or shell characters", b.dir)
	}
	if err := os.Chmod(b.dir, 0o755); err != nil {
		b.close()
		return nil, err
	}
	self, err := os.Executable()
	if err == nil {
		b.recorder = filepath.Join(b.dir, "benchcompare")
		err = copyFile(self, b.recorder, 0o755)
	}
	if err == nil {
		b.lo, err = unix.Open(loUevent, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			err = fmt.Errorf("%s: %w", loUevent, err)
		}
	}
	if err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

func (b *bench) close() {
	if b.lo >= 0 {
		unix.Close(b.lo)
		b.lo = -1
	}
	if b.dir == "" {
		return
	}
	if b.cfg.keep {
		fmt.Fprintf(os.Stderr, "benchcompare: kept %s\n", b.dir)
		return
	}
	os.RemoveAll(b.dir)
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// trigger makes the kernel send one "change" uevent of lo.
func (b *bench) trigger(uuid, token string, n int) error {
	p := "change " + uuid + " BC=" + token + " N=" + strconv.Itoa(n)
	if _, err := unix.Pwrite(b.lo, []byte(p), 0); err != nil {
		return fmt.Errorf("write %q to %s: %w", p, loUevent, err)
	}
	return nil
}

// result is one row of the table.
type result struct {
	name    string
	version string
	missing string // why it is not installed; empty when it is
	err     error  // it is installed but could not be measured

	sent, handled int
	seconds       float64 // first write → start of the last handled command
	writeSeconds  float64 // how long the writes alone took
	latencies     []time.Duration
	lostSamples   int
	notes         []string
}

func (r *result) eps() float64 {
	if r.seconds <= 0 {
		return 0
	}
	return float64(r.handled) / r.seconds
}

// peer is one daemon under test.
type peer struct {
	name string
	// setup checks that it is installed and returns its version, or
	// missing, a reason it is not installed.
	setup func(b *bench) (version, missing string)
	// spec returns how to start it with the rule for token, whose command
	// appends to recfile.
	spec func(b *bench, dir, token, recfile string) (nsSpec, error)
	// after reads its log once it has stopped, for notes.
	after func(log []byte) []string
}

func (b *bench) run(ctx context.Context) int {
	peers := []peer{b.hotplugdPeer(), b.udevdPeer(), b.mdevPeer()}
	var results []*result
	code := 0
	for i, p := range peers {
		r := b.measure(ctx, p)
		if i == 0 && r.missing != "" {
			r.err, r.missing = errors.New(r.missing), ""
		}
		results = append(results, r)
		if r.err != nil {
			fmt.Fprintf(os.Stderr, "benchcompare: %s: %v\n", p.name, r.err)
			code = 1
			if i == 0 && ctx.Err() == nil {
				fmt.Fprintln(os.Stderr, "benchcompare: without hotplugd there is nothing to compare with")
				break
			}
		}
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "benchcompare: interrupted")
			return 1
		}
	}
	printTable(os.Stdout, b.header(), results, b.footnotes(results))
	return code
}

func (b *bench) header() string {
	var u unix.Utsname
	unix.Uname(&u)
	return fmt.Sprintf("bench-compare: %d events, %d latency samples; Linux %s, %d CPUs; %s",
		b.cfg.events, b.cfg.samples, unix.ByteSliceToString(u.Release[:]), runtime.NumCPU(), b.ns)
}

func (b *bench) footnotes(results []*result) []string {
	f := []string{
		`Source: "change <uuid> BC=<token> N=<i>" written to /sys/class/net/lo/uevent; the kernel sends a real "change" uevent of lo per write.`,
		"Each daemon runs alone with one equivalent rule (change, net, SYNTH_ARG_BC=<token>) whose command is the same recorder: this tool's",
		"binary, which reads CLOCK_MONOTONIC as its first act and appends it to a file. hotplugd and udevd exec it; mdev runs it through /bin/sh -c",
		"(system(3)), as mdev runs every command. \"handled\": storm events whose command started; \"seconds\": first write to the start of the last",
		"handled command; \"vs hotplugd\" for throughput: events/s / hotplugd's (above 1 = faster); latency: write(2) to command start, one event",
		fmt.Sprintf("at a time, %v apart; \"vs hotplugd\" for latency: p50 / hotplugd's p50 (above 1 = slower).", sampleGap),
		"Each daemon handles the events of one device one after another, so the storm measures the whole per-event cost: daemon, fork/exec, recorder.",
	}
	for _, r := range results {
		var parts []string
		if r.version != "" {
			parts = append(parts, r.version)
		}
		if r.missing != "" {
			parts = append(parts, "not installed: "+r.missing)
		}
		if r.err != nil {
			first, _, _ := strings.Cut(r.err.Error(), "\n")
			parts = append(parts, "FAILED: "+first)
		}
		if r.writeSeconds > 0 {
			parts = append(parts, fmt.Sprintf("storm writes took %.2fs", r.writeSeconds))
		}
		if r.lostSamples > 0 {
			parts = append(parts, fmt.Sprintf("%d latency samples got no command within %v", r.lostSamples, b.cfg.sampleTimeout))
		}
		parts = append(parts, r.notes...)
		if len(parts) > 0 {
			f = append(f, r.name+": "+strings.Join(parts, "; "))
		}
	}
	return f
}

// measure starts p, probes it, takes the latency samples, runs the storm
// and stops it.
func (b *bench) measure(ctx context.Context, p peer) *result {
	r := &result{name: p.name}
	var missing string
	r.version, missing = p.setup(b)
	if missing != "" {
		r.missing = missing
		return r
	}
	fmt.Fprintf(os.Stderr, "benchcompare: %s (%s)\n", p.name, r.version)
	dir := filepath.Join(b.dir, strings.Fields(p.name)[0])
	if err := os.Mkdir(dir, 0o755); err != nil {
		r.err = err
		return r
	}
	recfile := filepath.Join(dir, "records")
	if err := os.WriteFile(recfile, nil, 0o644); err != nil {
		r.err = err
		return r
	}
	rl, err := openRecords(recfile)
	if err != nil {
		r.err = err
		return r
	}
	defer rl.close()
	token := randomHex(8)
	spec, err := p.spec(b, dir, token, recfile)
	if err != nil {
		r.err = err
		return r
	}
	d, err := b.start(spec, filepath.Join(dir, "log"))
	if err != nil {
		r.err = err
		return r
	}
	defer func() {
		d.stop()
		log, _ := os.ReadFile(d.log)
		if p.after != nil {
			r.notes = append(r.notes, p.after(log)...)
		}
		if r.err != nil {
			r.err = fmt.Errorf("%w\n%s log (last lines):\n%s", r.err, p.name, tail(log, 15))
		}
	}()

	if err := b.probe(ctx, d, rl, token); err != nil {
		r.err = err
		return r
	}
	if err := b.latency(ctx, d, rl, token, r); err != nil {
		r.err = err
		return r
	}
	if err := b.storm(ctx, d, rl, token, r); err != nil {
		r.err = err
		return r
	}
	return r
}

// probe repeats one event until its command runs: the daemon listens and
// its rule matches.
func (b *bench) probe(ctx context.Context, d *daemonProc, rl *records, token string) error {
	id := newUUID()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := b.trigger(id, token, 0); err != nil {
			return err
		}
		until := time.Now().Add(250 * time.Millisecond)
		for time.Now().Before(until) {
			rl.wait(50 * time.Millisecond)
			seen := false
			if err := rl.read(func(rec record) { seen = seen || rec.id == id }); err != nil {
				return err
			}
			if seen {
				// Let the probes still queued run out.
				time.Sleep(200 * time.Millisecond)
				return rl.read(func(record) {})
			}
			if err := d.exited(); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		if time.Now().After(deadline) {
			return errors.New("its rule's command did not run within 30s of the first probe event")
		}
	}
}

func (b *bench) latency(ctx context.Context, d *daemonProc, rl *records, token string, r *result) error {
	id := newUUID()
	for i := 1; i <= b.cfg.samples; i++ {
		t0 := monotonic()
		if err := b.trigger(id, token, i); err != nil {
			return err
		}
		deadline := time.Now().Add(b.cfg.sampleTimeout)
		got := false
		for !got {
			rl.wait(50 * time.Millisecond)
			err := rl.read(func(rec record) {
				if rec.id == id && rec.n == i {
					r.latencies = append(r.latencies, time.Duration(rec.t-t0))
					got = true
				}
			})
			if err != nil {
				return err
			}
			if err := d.exited(); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if !got && time.Now().After(deadline) {
				r.lostSamples++
				break
			}
		}
		time.Sleep(sampleGap)
	}
	if len(r.latencies) == 0 {
		return errors.New("no latency sample: the command never ran")
	}
	return nil
}

func (b *bench) storm(ctx context.Context, d *daemonProc, rl *records, token string, r *result) error {
	id := newUUID()
	n := b.cfg.events
	seen := make([]bool, n+1)
	var last int64
	collect := func(rec record) {
		if rec.id == id && rec.n >= 1 && rec.n <= n && !seen[rec.n] {
			seen[rec.n] = true
			r.handled++
			last = max(last, rec.t)
		}
	}
	t0 := monotonic()
	for i := 1; i <= n; i++ {
		if err := b.trigger(id, token, i); err != nil {
			return err
		}
		r.sent++
	}
	r.writeSeconds = float64(monotonic()-t0) / 1e9
	progress, report := time.Now(), time.Now()
	before := -1
	for r.handled < n {
		if err := rl.read(collect); err != nil {
			return err
		}
		now := time.Now()
		if r.handled != before {
			before, progress = r.handled, now
		}
		if now.Sub(report) >= 10*time.Second {
			fmt.Fprintf(os.Stderr, "benchcompare: %s: %d of %d handled\n", r.name, r.handled, n)
			report = now
		}
		if now.Sub(progress) > b.cfg.stall {
			r.notes = append(r.notes, fmt.Sprintf("stopped waiting %v after its last handled event", b.cfg.stall))
			break
		}
		if err := d.exited(); err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r.handled > 0 {
		r.seconds = float64(last-t0) / 1e9
	}
	return nil
}

// daemonProc is a started daemon.
type daemonProc struct {
	cmd   *exec.Cmd
	log   string
	mntns string
	done  chan struct{}
	err   error
}

func (b *bench) start(spec nsSpec, logfile string) (*daemonProc, error) {
	js, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(logfile)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(b.recorder, nsexecArg)
	cmd.Env = []string{nsSpecEnv + "=" + string(js)}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.Argv[0], err)
	}
	d := &daemonProc{cmd: cmd, log: logfile, done: make(chan struct{})}
	d.mntns, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid))
	if d.mntns == b.mntns {
		d.mntns = "" // never sweep our own namespace
	}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	return d, nil
}

// exited returns an error once the daemon has exited.
func (d *daemonProc) exited() error {
	select {
	case <-d.done:
		return fmt.Errorf("exited: %v", d.err)
	default:
		return nil
	}
}

// stop ends the daemon with SIGTERM (SIGKILL after stopGrace), then kills
// whatever is left in its mount namespace: workers, commands.
func (d *daemonProc) stop() {
	select {
	case <-d.done:
	default:
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(stopGrace):
			d.cmd.Process.Kill()
			<-d.done
		}
	}
	if d.mntns == "" {
		return
	}
	for range 50 {
		pids := pidsIn(d.mntns)
		if len(pids) == 0 {
			return
		}
		for _, pid := range pids {
			unix.Kill(pid, unix.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "benchcompare: processes still in %s: %v\n", d.mntns, pidsIn(d.mntns))
}

// pidsIn lists the processes in mount namespace ns.
func pidsIn(ns string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if l, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt"); err == nil && l == ns {
			pids = append(pids, pid)
		}
	}
	return pids
}

// records reads the recorder's file as it grows.
type records struct {
	f       *os.File
	partial []byte
	buf     []byte
	inotify int // IN_MODIFY of the file, for wait; -1 if none
}

type record struct {
	id string
	n  int
	t  int64
}

func openRecords(path string) (*records, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	rl := &records{f: f, buf: make([]byte, 256<<10), inotify: -1}
	if fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK); err == nil {
		if _, err := unix.InotifyAddWatch(fd, path, unix.IN_MODIFY); err == nil {
			rl.inotify = fd
		} else {
			unix.Close(fd)
		}
	}
	return rl, nil
}

func (rl *records) close() {
	rl.f.Close()
	if rl.inotify >= 0 {
		unix.Close(rl.inotify)
	}
}

// wait returns when the file has been written to since the last wait, or
// after d: sleeping in poll(2) rather than polling the file keeps the tool
// off the CPUs the daemon and its commands need. A write between a read and
// the next wait is not missed: its event stays queued.
func (rl *records) wait(d time.Duration) {
	if rl.inotify < 0 {
		time.Sleep(min(d, time.Millisecond))
		return
	}
	fds := []unix.PollFd{{Fd: int32(rl.inotify), Events: unix.POLLIN}}
	if n, _ := unix.Poll(fds, int(d.Milliseconds())); n <= 0 {
		return
	}
	var buf [4096]byte
	for {
		if n, err := unix.Read(rl.inotify, buf[:]); n <= 0 || err != nil {
			return
		}
	}
}

// read passes every complete line written since the last call to fn.
func (rl *records) read(fn func(record)) error {
	for {
		n, err := rl.f.Read(rl.buf)
		data := rl.buf[:n]
		for len(data) > 0 {
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				rl.partial = append(rl.partial, data...)
				break
			}
			line := data[:i]
			if len(rl.partial) > 0 {
				line = append(rl.partial, line...)
				rl.partial = rl.partial[:0]
			}
			if rec, ok := parseRecord(string(line)); ok {
				fn(rec)
			}
			data = data[i+1:]
		}
		if err == io.EOF || n == 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// parseRecord parses "<uuid> <n> <nanoseconds>".
func parseRecord(line string) (record, bool) {
	f := strings.Fields(line)
	if len(f) != 3 {
		return record{}, false
	}
	n, err1 := strconv.Atoi(f[1])
	t, err2 := strconv.ParseInt(f[2], 10, 64)
	if err1 != nil || err2 != nil {
		return record{}, false
	}
	return record{id: f[0], n: n, t: t}, true
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// newUUID returns a random (version 4) UUID, as the kernel's synthetic
// uevent syntax wants.
func newUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func tail(b []byte, lines int) string {
	s := strings.TrimRight(string(b), "\n")
	all := strings.Split(s, "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return "  " + strings.Join(all, "\n  ")
}

// firstLine runs a command and returns the first line of its output.
func firstLine(name string, args ...string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

// --- the three daemons ---

func (b *bench) hotplugdPeer() peer {
	var bin string
	return peer{
		name: "hotplugd",
		setup: func(b *bench) (string, string) {
			var err error
			if bin, err = filepath.Abs(b.cfg.hotplugd); err == nil {
				_, err = os.Stat(bin)
			}
			if err != nil {
				return "", fmt.Sprintf("%v (make build)", err)
			}
			return "hotplugd " + strings.TrimPrefix(firstLine(bin, "version"), "hotplugd "), ""
		},
		spec: func(b *bench, dir, token, recfile string) (nsSpec, error) {
			rules := filepath.Join(dir, "rules.yaml")
			y := hotplugdRules(dir, token, b.recorder, recfile)
			if err := os.WriteFile(rules, []byte(y), 0o644); err != nil {
				return nsSpec{}, err
			}
			return nsSpec{
				Argv: []string{bin, "run", "--config", rules},
				Env:  []string{daemonPath},
			}, nil
		},
		after: func(log []byte) []string {
			for _, line := range strings.Split(string(log), "\n") {
				if i := strings.Index(line, "msg=stopped "); i >= 0 {
					return []string{"its own count: " + line[i+len("msg=stopped "):]}
				}
			}
			return []string{"no final \"stopped\" log line"}
		},
	}
}

func hotplugdRules(dir, token, recorder, recfile string) string {
	q := strconv.Quote
	return fmt.Sprintf(`# benchcompare: one rule, the equivalent of the udev and mdev ones.
settings:
  source: kernel
  coldplug: false
  state_dir: %s
  mount_root: %s
  control: {socket: %s}
rules:
  - name: benchcompare
    match: action == "change" && subsystem == "net" && env.SYNTH_ARG_BC == %s
    actions:
      - run:
          argv: [%s, %s, %s]
`, q(filepath.Join(dir, "state")), q(filepath.Join(dir, "media")), q(filepath.Join(dir, "control")), q(token), q(recorder), q(recordArg), q(recfile))
}

func (b *bench) udevdPeer() peer {
	return peer{
		name: "systemd-udevd",
		setup: func(b *bench) (string, string) {
			if _, err := os.Stat(b.cfg.udevd); err != nil {
				return "", fmt.Sprintf("%v (Debian package udev)", err)
			}
			return "systemd-udevd " + firstLine(b.cfg.udevd, "--version"), ""
		},
		spec: func(b *bench, dir, token, recfile string) (nsSpec, error) {
			return nsSpec{
				Dev: true,
				// Every rules directory udevd reads, and /run (for
				// /run/udev, which then exists only in this namespace).
				Tmpfs: []string{"/etc/udev/rules.d", "/usr/lib/udev/rules.d", "/lib/udev/rules.d",
					"/usr/local/lib/udev/rules.d", "/run"},
				Files: [][2]string{{"/run/udev/rules.d/99-benchcompare.rules", udevRule(token, b.recorder, recfile)}},
				Argv:  []string{b.cfg.udevd},
				Env:   []string{daemonPath, "SYSTEMD_LOG_TARGET=console"},
			}, nil
		},
	}
}

func udevRule(token, recorder, recfile string) string {
	return fmt.Sprintf(`ACTION=="change", SUBSYSTEM=="net", ENV{SYNTH_ARG_BC}=="%s", RUN+="%s %s %s"`+"\n",
		token, recorder, recordArg, recfile)
}

func (b *bench) mdevPeer() peer {
	var bin string
	return peer{
		name: "busybox mdev -d",
		setup: func(b *bench) (string, string) {
			var err error
			if bin, err = exec.LookPath(b.cfg.busybox); err != nil {
				return "", fmt.Sprintf("%v (Debian package busybox)", err)
			}
			if bin, err = filepath.Abs(bin); err != nil {
				return "", err.Error()
			}
			if out := firstLine(bin, "mdev", "--help"); strings.Contains(out, "applet not found") {
				return "", bin + " has no mdev applet"
			}
			return strings.TrimSuffix(firstLine(bin), " multi-call binary."), ""
		},
		spec: func(b *bench, dir, token, recfile string) (nsSpec, error) {
			upper, work := filepath.Join(dir, "etc-upper"), filepath.Join(dir, "etc-work")
			for _, d := range []string{upper, work} {
				if err := os.Mkdir(d, 0o755); err != nil {
					return nsSpec{}, err
				}
			}
			conf := filepath.Join(upper, "mdev.conf")
			if err := os.WriteFile(conf, []byte(mdevConf(token, b.recorder, recfile)), 0o644); err != nil {
				return nsSpec{}, err
			}
			s := nsSpec{
				Dev:  true,
				Argv: []string{bin, "mdev", "-d", "-f"},
				Env:  []string{daemonPath},
			}
			// A bind mount needs the file to exist; without one, an
			// overlay on /etc shows ours and leaves the host's /etc alone.
			if fi, err := os.Stat("/etc/mdev.conf"); err == nil && fi.Mode().IsRegular() {
				s.Bind = [][2]string{{conf, "/etc/mdev.conf"}}
			} else {
				s.Overlay = [][3]string{{"/etc", upper, work}}
			}
			return s, nil
		},
	}
}

func mdevConf(token, recorder, recfile string) string {
	return fmt.Sprintf("ACTION=^change$;SUBSYSTEM=^net$;SYNTH_ARG_BC=^%s$;lo 0:0 600 ! *%s %s %s\n",
		token, recorder, recordArg, recfile)
}

// --- the table ---

// percentile returns the nearest-rank p-th percentile of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(float64(len(sorted))*p/100)) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + " ms"
}

func ratio(a, b float64) string {
	if a <= 0 || b <= 0 {
		return "-"
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64) + "x"
}

// rows turns results into table cells; results[0] is hotplugd, the
// reference of the ratios.
func rows(results []*result) [][]string {
	out := [][]string{{"daemon", "events sent", "handled", "seconds", "events/s", "vs hotplugd", "latency p50", "p99", "vs hotplugd"}}
	var refEPS, refP50 float64
	for i, r := range results {
		if r.missing != "" {
			out = append(out, []string{r.name, "not installed", "-", "-", "-", "-", "-", "-", "-"})
			continue
		}
		if r.err != nil && r.sent == 0 && len(r.latencies) == 0 {
			out = append(out, []string{r.name, "failed", "-", "-", "-", "-", "-", "-", "-"})
			continue
		}
		lat := slices.Clone(r.latencies)
		slices.Sort(lat)
		p50, p99 := percentile(lat, 50), percentile(lat, 99)
		if i == 0 {
			refEPS, refP50 = r.eps(), float64(p50)
		}
		row := []string{r.name, strconv.Itoa(r.sent), strconv.Itoa(r.handled),
			strconv.FormatFloat(r.seconds, 'f', 2, 64), strconv.FormatFloat(r.eps(), 'f', 0, 64),
			ratio(r.eps(), refEPS), "-", "-", "-"}
		if len(lat) > 0 {
			row[6], row[7], row[8] = ms(p50), ms(p99), ratio(float64(p50), refP50)
		}
		if r.sent == 0 {
			row[1], row[2], row[3], row[4], row[5] = "-", "-", "-", "-", "-"
		}
		out = append(out, row)
	}
	return out
}

// printTable writes a Markdown table (aligned, so it reads as text too)
// with the header line above and the notes below.
func printTable(w io.Writer, header string, results []*result, notes []string) {
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	cells := rows(results)
	width := make([]int, len(cells[0]))
	for _, row := range cells {
		for i, c := range row {
			width[i] = max(width[i], len([]rune(c)))
		}
	}
	line := func(row []string) {
		for i, c := range row {
			pad := strings.Repeat(" ", width[i]-len([]rune(c)))
			if i == 0 {
				fmt.Fprintf(bw, "| %s%s ", c, pad)
			} else {
				fmt.Fprintf(bw, "| %s%s ", pad, c)
			}
		}
		fmt.Fprintln(bw, "|")
	}
	fmt.Fprintf(bw, "\n%s\n\n", header)
	line(cells[0])
	for i := range width {
		if i == 0 {
			fmt.Fprintf(bw, "|%s", strings.Repeat("-", width[i]+2))
		} else {
			fmt.Fprintf(bw, "|%s:", strings.Repeat("-", width[i]+1))
		}
	}
	fmt.Fprintln(bw, "|")
	for _, row := range cells[1:] {
		line(row)
	}
	fmt.Fprintln(bw)
	for _, n := range notes {
		fmt.Fprintln(bw, n)
	}
}
