package device

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/looptest"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// need skips a test whose prerequisite is missing, or fails it in CI,
// where every prerequisite must be there.
func need(t *testing.T, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI: missing prerequisite: %s", what)
	}
	t.Skipf("missing prerequisite: %s", what)
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if p := filepath.Join(dir, name); isExec(p) {
			return p
		}
	}
	p, err := exec.LookPath(name)
	need(t, err == nil, name)
	return p
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func TestParseBlkid(t *testing.T) {
	tests := []struct {
		name string
		out  string // blkid -p -o udev output, as captured
		want uevent.FS
	}{
		{
			"ext4 with shell metacharacters in the label",
			"ID_FS_LABEL=a$(id);`x`_\"q'\\\n" +
				`ID_FS_LABEL_ENC=a\x24\x28id\x29\x3b\x60x\x60\x20\x22q\x27\x5c` + "\n" +
				"ID_FS_UUID=f1ddf76b-6fc2-4222-a4cd-b87bf67af624\n" +
				"ID_FS_UUID_ENC=f1ddf76b-6fc2-4222-a4cd-b87bf67af624\n" +
				"ID_FS_VERSION=1.0\nID_FS_TYPE=ext4\nID_FS_USAGE=filesystem\n",
			uevent.FS{Type: "ext4", Label: "a$(id);`x` \"q'\\", UUID: "f1ddf76b-6fc2-4222-a4cd-b87bf67af624", Usage: "filesystem", Version: "1.0"},
		},
		{
			"ext4 with UTF-8, a control character and a caret",
			"ID_FS_LABEL=M\xc3\xbc\x01^Mx\n" +
				"ID_FS_LABEL_ENC=M\xc3\xbc\\x01\\x5eMx\n" +
				"ID_FS_TYPE=ext4\nID_FS_USAGE=filesystem\n",
			uevent.FS{Type: "ext4", Label: "Mü\x01^Mx", Usage: "filesystem"},
		},
		{
			"ext4 with a newline in the label",
			"ID_FS_LABEL=a_b\nID_FS_LABEL_ENC=a\\x0ab\nID_FS_TYPE=ext4\nID_FS_USAGE=filesystem\n",
			uevent.FS{Type: "ext4", Label: "a\nb", Usage: "filesystem"},
		},
		{
			"luks",
			"ID_FS_UUID=0b3f5e0c-6f1e-4b0a-9a57-2f0b8a3c1d22\nID_FS_UUID_ENC=0b3f5e0c-6f1e-4b0a-9a57-2f0b8a3c1d22\n" +
				"ID_FS_VERSION=2\nID_FS_TYPE=crypto_LUKS\nID_FS_USAGE=crypto\n",
			uevent.FS{Type: "crypto_LUKS", UUID: "0b3f5e0c-6f1e-4b0a-9a57-2f0b8a3c1d22", Usage: "crypto", Version: "2"},
		},
		{"nothing", "", uevent.FS{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _, err := parseBlkid([]byte(tt.out))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("parseBlkid (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseBlkidRejects(t *testing.T) {
	for name, out := range map[string]string{
		"no equals":                 "ID_FS_TYPE=ext4\ngarbage\n",
		"blank line":                "ID_FS_TYPE=ext4\n\nID_FS_USAGE=filesystem\n",
		"unknown key":               "ID_FS_TYPE=ext4\nID_FS_PWNED=1\n",
		"export format":             "DEVNAME=/dev/sdb1\nTYPE=ext4\n",
		"duplicate":                 "ID_FS_TYPE=ext4\nID_FS_TYPE=vfat\n",
		"control character in _ENC": "ID_FS_LABEL_ENC=a\x01b\n",
		"DEL in _ENC":               "ID_FS_LABEL_ENC=a\x7fb\n",
		"invalid UTF-8 in _ENC":     "ID_FS_LABEL_ENC=a\xffb\n",
		"bad escape":                "ID_FS_LABEL_ENC=a\\qb\n",
		"bad hex":                   "ID_FS_LABEL_ENC=a\\xzz\n",
		"cut escape":                "ID_FS_LABEL_ENC=a\\x4\n",
		"lone backslash at the end": "ID_FS_UUID_ENC=a\\\n",
		"escape in TYPE":            "ID_FS_TYPE=ext\\q\n",
	} {
		if fs, _, err := parseBlkid([]byte(out)); !errors.Is(err, errProbeOutput) {
			t.Errorf("%s: parseBlkid(%q) = %+v, %v; want errProbeOutput", name, out, fs, err)
		}
	}
}

// fakeBlkid writes an executable script standing in for blkid.
func fakeBlkid(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "blkid")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBlkidProbeFake(t *testing.T) {
	need(t, isExec("/bin/sh"), "/bin/sh")
	ctx := context.Background()

	t.Run("arguments and environment", func(t *testing.T) {
		dir := t.TempDir()
		blkid := fakeBlkid(t, `
for a in "$@"; do printf '%s\n' "$a"; done > `+dir+`/args
env > `+dir+`/env
printf 'ID_FS_TYPE=ext4\nID_FS_USAGE=filesystem\n'`)
		fs, _, err := blkidProbe(ctx, blkid, "/dev/sdb1", new(atomic.Int64))
		if err != nil {
			t.Fatal(err)
		}
		if want := (uevent.FS{Type: "ext4", Usage: "filesystem"}); fs != want {
			t.Errorf("uevent.FS = %+v, want %+v", fs, want)
		}
		args, _ := os.ReadFile(dir + "/args")
		want := append(slices.Clone(blkidArgs), "/dev/sdb1")
		if diff := cmp.Diff(want, strings.Fields(string(args))); diff != "" {
			t.Errorf("argv (-want +got):\n%s", diff)
		}
		if slices.Contains(strings.Fields(string(args)), "-d") {
			t.Error("blkid run with -d")
		}
		env, _ := os.ReadFile(dir + "/env")
		for line := range strings.SplitSeq(strings.TrimSpace(string(env)), "\n") {
			k, _, _ := strings.Cut(line, "=")
			switch k {
			case "LC_ALL", "PWD", "SHLVL", "_": // ours, and what sh sets itself
			default:
				t.Errorf("environment leaked into blkid: %q", line)
			}
		}
	})
	for _, code := range []string{"2", "8"} {
		t.Run("exit "+code, func(t *testing.T) {
			fs, _, err := blkidProbe(ctx, fakeBlkid(t, "echo ID_FS_TYPE=junk; exit "+code), "/dev/sdb1", new(atomic.Int64))
			if err != nil || fs != (uevent.FS{}) {
				t.Errorf("got %+v, %v; want nothing found", fs, err)
			}
		})
	}
	t.Run("failure", func(t *testing.T) {
		_, _, err := blkidProbe(ctx, fakeBlkid(t, "echo 'blkid: bad usage' >&2; exit 4"), "/dev/sdb1", new(atomic.Int64))
		if err == nil || !strings.Contains(err.Error(), "bad usage") {
			t.Errorf("err = %v, want the exit status and stderr", err)
		}
	})
	t.Run("not found", func(t *testing.T) {
		if _, _, err := blkidProbe(ctx, "/nonexistent/blkid", "/dev/sdb1", new(atomic.Int64)); err == nil {
			t.Error("no error running a missing blkid")
		}
	})
	t.Run("bad output", func(t *testing.T) {
		_, _, err := blkidProbe(ctx, fakeBlkid(t, "printf 'ID_FS_TYPE=ext4\\nID_FS_TYPE=vfat\\n'"), "/dev/sdb1", new(atomic.Int64))
		if !errors.Is(err, errProbeOutput) {
			t.Errorf("err = %v, want errProbeOutput", err)
		}
	})
	t.Run("too much output", func(t *testing.T) {
		_, _, err := blkidProbe(ctx, fakeBlkid(t, "i=0; while [ $i -lt 2000 ]; do echo ID_FS_LABEL=xxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done"), "/dev/sdb1", new(atomic.Int64))
		if !errors.Is(err, errProbeBig) {
			t.Errorf("err = %v, want errProbeBig", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, _, err := blkidProbe(ctx, fakeBlkid(t, "exec sleep 30"), "/dev/sdb1", new(atomic.Int64))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("a hung blkid held the probe for %v", d)
		}
	})
}

// TestBlkidLabels runs the real blkid on filesystem images with labels a
// hostile stick could carry; each must come back byte for byte.
func TestBlkidLabels(t *testing.T) {
	blkid := needTool(t, "blkid")
	mkfs := needTool(t, "mkfs.ext4")
	labels := []string{
		"plain",
		"$(id)",
		"a;rm -rf /",
		"`id`",
		`"q' \`,
		"My Disk",
		"a\nb",
		"TEAM-A ^_^",
		"Müll €",
		"\x01\x1b[31m",
		"--help",
		"%s%n",
	}
	img := filepath.Join(t.TempDir(), "fs.img")
	for _, label := range labels {
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 8<<20); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(mkfs, "-q", "-F", "-L", label, img).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4 -L %q: %v: %s", label, err, out)
		}
		fs, _, err := blkidProbe(context.Background(), blkid, img, new(atomic.Int64))
		if err != nil {
			t.Errorf("label %q: %v", label, err)
			continue
		}
		if fs.Label != label || fs.Type != "ext4" || fs.Usage != "filesystem" || len(fs.UUID) != 36 {
			t.Errorf("label %q: got %+v", label, fs)
		}
	}
}

// TestBlkidProbeUnkillable: blkid reading a disk whose reads hang sleeps
// uninterruptibly and does not die of SIGKILL; the probe gives up on it
// when its context ends, counts it, and reaps it once the disk answers.
func TestBlkidProbeUnkillable(t *testing.T) {
	dev := looptest.Stall(t)
	blkid := looptest.ToolPath("blkid")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var leaked atomic.Int64
	start := time.Now()
	_, _, err := blkidProbe(ctx, blkid, dev.Dev, &leaked)
	if !errors.Is(err, errProbeStuck) || leaked.Load() != 1 {
		t.Fatalf("probe of a stalled disk: %v, %d left behind; want %v and 1", err, leaked.Load(), errProbeStuck)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the probe returned after %v", took)
	}
	dev.Resume()
	for deadline := time.Now().Add(10 * time.Second); leaked.Load() != 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the blkid left behind was never reaped")
		}
	}
}
