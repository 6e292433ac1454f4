package daemon

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// captureNotify makes a datagram socket, sets it as this test's
// NOTIFY_SOCKET, and returns a function that reads the next datagram.
func captureNotify(t *testing.T) func() string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hpsd") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return func() string {
		t.Helper()
		buf := make([]byte, 64<<10)
		if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no datagram: %v", err)
		}
		return string(buf[:n])
	}
}

// TestNotifierStatusOneLine: error text quoting a device string in
// STATUS= adds no line to the datagram, so no WATCHDOG=trigger,
// STOPPING=1 or NOTIFYACCESS=all of the device's making reaches systemd.
func TestNotifierStatusOneLine(t *testing.T) {
	next := captureNotify(t)
	n := notifier{log: slog.New(slog.DiscardHandler)}
	evil := "3 rules; last error: reload failed: t.yaml:4:12: env.X = \"1\nWATCHDOG=trigger\nSTOPPING=1\r\nNOTIFYACCESS=all\x00\xff\\n\u2028\""
	tests := []struct {
		name  string
		send  func()
		lines []string // the datagram's lines before STATUS=
	}{
		{"status", func() { n.status(evil) }, nil},
		{"ready", func() { n.ready(evil) }, []string{"READY=1"}},
	}
	for _, tt := range tests {
		tt.send()
		got := next()
		lines := strings.Split(got, "\n")
		if len(lines) != len(tt.lines)+1 || strings.Join(lines[:len(tt.lines)], "\n") != strings.Join(tt.lines, "\n") {
			t.Fatalf("%s: datagram %q, want %q and one STATUS= line", tt.name, got, tt.lines)
		}
		status := lines[len(lines)-1]
		want := `STATUS=3 rules; last error: reload failed: t.yaml:4:12: env.X = "1\nWATCHDOG=trigger\nSTOPPING=1\r\nNOTIFYACCESS=all\x00\xff\\n\u2028"`
		if status != want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, status, want)
		}
		if !utf8.ValidString(status) || strings.ContainsAny(status, "\x00\r") {
			t.Errorf("%s: %q is not one line of UTF-8", tt.name, status)
		}
	}
}

// TestNotifierStatusBounded: a long status is cut, so the datagram stays
// one systemd reads (it drops a datagram longer than its buffer whole,
// READY=1 with it).
func TestNotifierStatusBounded(t *testing.T) {
	next := captureNotify(t)
	n := notifier{log: slog.New(slog.DiscardHandler)}
	n.ready("last error: " + strings.Repeat("é\n", 4000))
	got := next()
	if !strings.HasPrefix(got, "READY=1\nSTATUS=last error: é\\né\\n") || strings.Count(got, "\n") != 1 {
		t.Fatalf("datagram %.60q..., want READY=1 and one STATUS= line", got)
	}
	if len(got) > 2048 || !strings.HasSuffix(got, "…") || !utf8.ValidString(got) {
		t.Errorf("datagram of %d bytes ending %q, want at most 2 KiB ending with …", len(got), got[len(got)-8:])
	}
}
