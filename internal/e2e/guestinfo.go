//go:build e2e

package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mountInfo is one line of /proc/PID/mountinfo (proc(5)).
type mountInfo struct {
	majmin string
	point  string
	opts   []string // per-mount options: rw, nosuid, ...
	fstype string
	source string
	super  []string // superblock options: fmask=0022, ...
}

func (m mountInfo) has(opt string) bool {
	for _, o := range append(m.opts, m.super...) {
		if o == opt {
			return true
		}
	}
	return false
}

// option returns the value of a superblock option such as fmask, and
// whether it is set.
func (m mountInfo) option(name string) (string, bool) {
	for _, o := range m.super {
		if k, v, ok := strings.Cut(o, "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

func parseMountinfo(s string) []mountInfo {
	var out []mountInfo
	for line := range strings.SplitSeq(s, "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, w := range f {
			if w == "-" && i >= 6 {
				sep = i
				break
			}
		}
		if sep < 0 || len(f) < sep+4 {
			continue
		}
		out = append(out, mountInfo{
			majmin: f[2], point: unescapeOctal(f[4]), opts: strings.Split(f[5], ","),
			fstype: f[sep+1], source: unescapeOctal(f[sep+2]), super: strings.Split(f[sep+3], ","),
		})
	}
	return out
}

// unescapeOctal undoes the kernel's \ooo escapes of space, tab, newline
// and backslash in mountinfo.
func unescapeOctal(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mounts reads the guest's mount table.
func (g *guest) mounts(t testing.TB) []mountInfo {
	t.Helper()
	return parseMountinfo(g.sh(t, "cat /proc/self/mountinfo"))
}

// mountsAt returns the mounts at point.
func mountsAt(ms []mountInfo, point string) []mountInfo {
	var out []mountInfo
	for _, m := range ms {
		if m.point == point {
			out = append(out, m)
		}
	}
	return out
}

// waitMount waits until something is mounted at point and returns it.
func (g *guest) waitMount(t testing.TB, point string, timeout time.Duration) (mountInfo, bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if at := mountsAt(g.mounts(t), point); len(at) > 0 {
			return at[len(at)-1], true
		}
		if time.Now().After(deadline) {
			return mountInfo{}, false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitUnmounted waits until nothing is mounted at point and the directory
// is gone.
func (g *guest) waitUnmounted(t testing.TB, point string, timeout time.Duration) bool {
	t.Helper()
	_, ok := g.waitFor(t, timeout, "! grep -qF "+shq(" "+escapeOctal(point)+" ")+" /proc/self/mountinfo && ! test -e "+shq(point))
	return ok
}

// escapeOctal is the kernel's escaping of a path in mountinfo.
func escapeOctal(s string) string {
	r := strings.NewReplacer(" ", `\040`, "\t", `\011`, "\n", `\012`, `\`, `\134`)
	return r.Replace(s)
}

// logRecord is one line of slog's text format: key=value pairs, values
// quoted when they need it.
type logRecord map[string]string

func parseLogfmt(line string) logRecord {
	rec := logRecord{}
	for s := strings.TrimSpace(line); s != ""; s = strings.TrimLeft(s, " ") {
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			break
		}
		key := s[:eq]
		s = s[eq+1:]
		var val string
		if strings.HasPrefix(s, `"`) {
			q, err := strconv.QuotedPrefix(s)
			if err != nil {
				break
			}
			val, _ = strconv.Unquote(q)
			s = s[len(q):]
		} else {
			end := strings.IndexByte(s, ' ')
			if end < 0 {
				end = len(s)
			}
			val, s = s[:end], s[end:]
		}
		rec[key] = val
	}
	return rec
}

// matches reports whether every key of want has that value in rec.
func (r logRecord) matches(want map[string]string) bool {
	for k, v := range want {
		if r[k] != v {
			return false
		}
	}
	return true
}

// logFile is a log the daemon writes in the guest, in slog's text
// format.
type logFile struct {
	g    *guest
	path string
}

// log returns the records of the log so far.
func (l *logFile) log(t testing.TB) []logRecord {
	t.Helper()
	var recs []logRecord
	for line := range strings.SplitSeq(l.g.sh(t, "cat "+shq(l.path)+" 2>/dev/null || true"), "\n") {
		if line != "" {
			recs = append(recs, parseLogfmt(line))
		}
	}
	return recs
}

// logMark is the number of log records now: findLog and waitLog look
// at the records after it. Device paths repeat (the next stick in the
// same port is the same /devices/... path), so a scenario looks only
// at what was logged since it began.
func (l *logFile) logMark(t testing.TB) int {
	t.Helper()
	return len(l.log(t))
}

// findLog returns the log records after from that have every key of
// want.
func (l *logFile) findLog(t testing.TB, from int, want map[string]string) []logRecord {
	t.Helper()
	var out []logRecord
	recs := l.log(t)
	for _, r := range recs[min(from, len(recs)):] {
		if r.matches(want) {
			out = append(out, r)
		}
	}
	return out
}

// waitLog waits for a log record after from with every key of want.
func (l *logFile) waitLog(t testing.TB, from int, timeout time.Duration, what string, want map[string]string) logRecord {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if recs := l.findLog(t, from, want); len(recs) > 0 {
			return recs[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: no line of %s with %v since line %d:\n%s",
				timeout, what, l.path, want, from, l.g.try(t, "tail -n 40 "+shq(l.path)).stdout)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// setSetting sets a setting of a rules file's settings block (a line
// "  key: value"); it fails the test if there is no such line.
func setSetting(t testing.TB, rules, key, value string) string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^(\s+` + regexp.QuoteMeta(key) + `:) *[^ #\n]+`)
	if !re.MatchString(rules) {
		t.Fatalf("no %s setting in the rules to set:\n%s", key, rules)
	}
	return re.ReplaceAllString(rules, "${1} "+value)
}
