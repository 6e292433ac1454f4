package device

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// maxProbeOutput bounds what is kept of blkid's stdout. Seven tags, two
// of them twice, each at most a few hundred bytes once encoded.
const maxProbeOutput = 16 << 10

// blkidArgs asks for a low-level probe (no cache file) of the tags
// uevent.FS and uevent.Partition hold, in udev's encoding. Never "-d": see
// the package doc.
var blkidArgs = []string{"-p", "-o", "udev", "-s", "TYPE", "-s", "USAGE", "-s", "VERSION", "-s", "UUID", "-s", "LABEL",
	"-s", "PART_ENTRY_UUID", "-s", "PART_ENTRY_NAME", "--"}

// blkid exit codes (blkid(8)).
const (
	blkidNothingFound = 2
	blkidAmbivalent   = 8
)

// Probe errors.
var (
	errProbeOutput = errors.New("unexpected blkid output")
	errProbeBig    = errors.New("blkid output too large")
)

// probeAbandon is how long a killed blkid may take to die before it is
// left behind: on a disk whose reads hang it sleeps uninterruptibly, and
// SIGKILL waits for the read.
const probeAbandon = 2 * time.Second

// errProbeStuck: blkid did not die of SIGKILL; it was left behind.
var errProbeStuck = errors.New("blkid does not die (uninterruptible sleep on the device?); left behind")

// blkidProbe runs blkid on devnode, directly (no shell) and with a clean
// environment, and decodes what it prints. Nothing found, or more than
// one signature (blkid cannot tell which is real), is the zero FS. When
// ctx ends blkid is killed; one that does not die is left behind, counted
// in leaked until it is reaped.
func blkidProbe(ctx context.Context, blkid, devnode string, leaked *atomic.Int64) (uevent.FS, uevent.Partition, error) {
	stdout := boundedBuffer{max: maxProbeOutput}
	stderr := boundedBuffer{max: 512}
	cmd := exec.CommandContext(ctx, blkid, append(blkidArgs[:len(blkidArgs):len(blkidArgs)], devnode)...)
	cmd.Env = []string{"LC_ALL=C"}
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second // blkid forks nothing; don't wait on pipes after a kill
	err := runBounded(ctx, cmd, leaked)
	if errors.Is(err, errProbeStuck) {
		return uevent.FS{}, uevent.Partition{}, fmt.Errorf("blkid %s: %w", devnode, err)
	}
	if ctx.Err() != nil {
		return uevent.FS{}, uevent.Partition{}, fmt.Errorf("blkid %s: %w", devnode, ctx.Err())
	}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		switch ee.ExitCode() {
		case blkidNothingFound, blkidAmbivalent:
			return uevent.FS{}, uevent.Partition{}, nil
		}
	}
	if err != nil {
		return uevent.FS{}, uevent.Partition{}, fmt.Errorf("blkid %s: %w: %q", devnode, err, stderr.b)
	}
	if stdout.over {
		return uevent.FS{}, uevent.Partition{}, fmt.Errorf("blkid %s: %w", devnode, errProbeBig)
	}
	fs, part, err := parseBlkid(stdout.b)
	if err != nil {
		return uevent.FS{}, uevent.Partition{}, fmt.Errorf("blkid %s: %w", devnode, err)
	}
	return fs, part, nil
}

// runBounded runs cmd, waiting no longer than probeAbandon once ctx is
// done (CommandContext has killed it by then).
func runBounded(ctx context.Context, cmd *exec.Cmd, leaked *atomic.Int64) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	select {
	case err := <-done:
		return err
	case <-time.After(probeAbandon):
	}
	leaked.Add(1)
	go func() { <-done; leaked.Add(-1) }()
	return errProbeStuck
}

// parseBlkid decodes `blkid -o udev` output strictly: KEY=VALUE lines,
// only the keys asked for, each once, encoded values well formed.
func parseBlkid(out []byte) (uevent.FS, uevent.Partition, error) {
	s := strings.TrimSuffix(string(out), "\n")
	if s == "" {
		return uevent.FS{}, uevent.Partition{}, nil
	}
	var props []uevent.Property
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return uevent.FS{}, uevent.Partition{}, fmt.Errorf("%w: line %q", errProbeOutput, line)
		}
		switch k {
		case "ID_FS_TYPE", "ID_FS_VERSION", "ID_FS_UUID_ENC", "ID_FS_LABEL_ENC", "ID_PART_ENTRY_NAME", "ID_PART_ENTRY_UUID":
			// blkid_encode_string output: valid UTF-8, no control
			// characters, every backslash starting \xNN.
			if !uevent.WellEncoded(v) {
				return uevent.FS{}, uevent.Partition{}, fmt.Errorf("%w: %s=%q", errProbeOutput, k, v)
			}
		case "ID_FS_USAGE", "ID_FS_UUID", "ID_FS_LABEL":
			// USAGE is a libblkid constant; the other two are blkid's
			// lossy "safe" strings, superseded by their _ENC twins.
		default:
			return uevent.FS{}, uevent.Partition{}, fmt.Errorf("%w: key %q", errProbeOutput, k)
		}
		for _, p := range props {
			if p.Key == k {
				return uevent.FS{}, uevent.Partition{}, fmt.Errorf("%w: duplicate %s", errProbeOutput, k)
			}
		}
		props = append(props, uevent.Property{Key: k, Value: v})
	}
	fs, _ := uevent.FSFromProps(props)
	part, _ := uevent.PartitionFromProps(props)
	return fs, part, nil
}

// boundedBuffer keeps the first max bytes written to it and notes that
// more came. It never fails a write, so the child never blocks or gets
// EPIPE because of it.
type boundedBuffer struct {
	b    []byte
	max  int
	over bool
}

func (w *boundedBuffer) Write(p []byte) (int, error) {
	n := min(len(p), w.max-len(w.b))
	w.b = append(w.b, p[:n]...)
	if n < len(p) {
		w.over = true
	}
	return len(p), nil
}

// Probe runs the filesystem probe on the block device of kernel name
// devname outside any event: the cleartext of a LUKS device a rule has
// just unlocked, whose own events come later and on their own. It is
// bounded like an event's probe, counted with them, and ends when the
// Manager closes. No blkid is an error.
func (m *Manager) Probe(ctx context.Context, devname string) (uevent.FS, error) {
	if m.blkid == "" {
		return uevent.FS{}, errors.New("no blkid to probe with")
	}
	if !validAttrName(devname) {
		return uevent.FS{}, fmt.Errorf("probe %q: not a device name", devname)
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	defer context.AfterFunc(m.ctx, cancel)()
	m.probes.Add(1)
	fs, _, err := m.probe(ctx, m.roots.DevNode(devname))
	if err != nil {
		m.probeErrors.Add(1)
	}
	return fs, err
}
