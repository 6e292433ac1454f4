package device

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// maxProbeOutput bounds what is kept of blkid's stdout. Five tags, two
// of them twice, each at most a few hundred bytes once encoded.
const maxProbeOutput = 16 << 10

// blkidArgs asks for a low-level probe (no cache file) of the tags FS
// holds, in udev's encoding. Never "-d": see the package doc.
var blkidArgs = []string{"-p", "-o", "udev", "-s", "TYPE", "-s", "USAGE", "-s", "VERSION", "-s", "UUID", "-s", "LABEL", "--"}

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

// blkidProbe runs blkid on devnode, directly (no shell) and with a clean
// environment, and decodes what it prints. Nothing found, or more than
// one signature (blkid cannot tell which is real), is the zero FS.
func blkidProbe(ctx context.Context, blkid, devnode string) (FS, error) {
	stdout := boundedBuffer{max: maxProbeOutput}
	stderr := boundedBuffer{max: 512}
	cmd := exec.CommandContext(ctx, blkid, append(blkidArgs[:len(blkidArgs):len(blkidArgs)], devnode)...)
	cmd.Env = []string{"LC_ALL=C"}
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second // blkid forks nothing; don't wait on pipes after a kill
	err := cmd.Run()
	if ctx.Err() != nil {
		return FS{}, fmt.Errorf("blkid %s: %w", devnode, ctx.Err())
	}
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		switch ee.ExitCode() {
		case blkidNothingFound, blkidAmbivalent:
			return FS{}, nil
		}
	}
	if err != nil {
		return FS{}, fmt.Errorf("blkid %s: %w: %q", devnode, err, stderr.b)
	}
	if stdout.over {
		return FS{}, fmt.Errorf("blkid %s: %w", devnode, errProbeBig)
	}
	fs, err := parseBlkid(stdout.b)
	if err != nil {
		return FS{}, fmt.Errorf("blkid %s: %w", devnode, err)
	}
	return fs, nil
}

// parseBlkid decodes `blkid -o udev` output strictly: KEY=VALUE lines,
// only the keys asked for, each once, encoded values well formed.
func parseBlkid(out []byte) (FS, error) {
	s := strings.TrimSuffix(string(out), "\n")
	if s == "" {
		return FS{}, nil
	}
	var props []uevent.Property
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return FS{}, fmt.Errorf("%w: line %q", errProbeOutput, line)
		}
		switch k {
		case "ID_FS_TYPE", "ID_FS_VERSION", "ID_FS_UUID_ENC", "ID_FS_LABEL_ENC":
			// blkid_encode_string output: valid UTF-8, no control
			// characters, every backslash starting \xNN.
			if !wellEncoded(v) {
				return FS{}, fmt.Errorf("%w: %s=%q", errProbeOutput, k, v)
			}
		case "ID_FS_USAGE", "ID_FS_UUID", "ID_FS_LABEL":
			// USAGE is a libblkid constant; the other two are blkid's
			// lossy "safe" strings, superseded by their _ENC twins.
		default:
			return FS{}, fmt.Errorf("%w: key %q", errProbeOutput, k)
		}
		for _, p := range props {
			if p.Key == k {
				return FS{}, fmt.Errorf("%w: duplicate %s", errProbeOutput, k)
			}
		}
		props = append(props, uevent.Property{Key: k, Value: v})
	}
	fs, _ := fsFromProps(props)
	return fs, nil
}

// fsFromProps reads ID_FS_* properties, as udev's blkid builtin sets them
// and as blkid -o udev prints them: TYPE, VERSION and the _ENC variants
// of LABEL and UUID are \xNN-encoded; plain LABEL and UUID are used when
// there is no _ENC (an event written by hand). ok is false when there is
// no ID_FS_* property at all.
func fsFromProps(props []uevent.Property) (fs FS, ok bool) {
	var labelEnc, uuidEnc bool
	for _, p := range props {
		if !strings.HasPrefix(p.Key, "ID_FS_") {
			continue
		}
		ok = true
		switch p.Key {
		case "ID_FS_TYPE":
			fs.Type = decodeEnc(p.Value)
		case "ID_FS_USAGE":
			fs.Usage = p.Value
		case "ID_FS_VERSION":
			fs.Version = decodeEnc(p.Value)
		case "ID_FS_LABEL":
			if !labelEnc {
				fs.Label = p.Value
			}
		case "ID_FS_LABEL_ENC":
			fs.Label, labelEnc = decodeEnc(p.Value), true
		case "ID_FS_UUID":
			if !uuidEnc {
				fs.UUID = p.Value
			}
		case "ID_FS_UUID_ENC":
			fs.UUID, uuidEnc = decodeEnc(p.Value), true
		}
	}
	return fs, ok
}

// decodeEnc undoes blkid_encode_string (and udev's encode_devnode_name):
// "\xNN" is the byte NN. A backslash not starting "\xNN" is kept.
func decodeEnc(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if hi, ok1 := unhex(s[i+2]); ok1 {
				if lo, ok2 := unhex(s[i+3]); ok2 {
					b = append(b, hi<<4|lo)
					i += 3
					continue
				}
			}
		}
		b = append(b, s[i])
	}
	return string(b)
}

// wellEncoded reports whether s could have come from blkid_encode_string.
func wellEncoded(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return false
		case c == '\\':
			if i+3 >= len(s) || s[i+1] != 'x' {
				return false
			}
			if _, ok := unhex(s[i+2]); !ok {
				return false
			}
			if _, ok := unhex(s[i+3]); !ok {
				return false
			}
			i += 3
		}
	}
	return true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
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
