// Package crypttest is a cryptsetup for the tests of a machine whose
// kernel has no device-mapper (the real one runs in internal/e2e's
// guest): a shell script that does to a sysfs and a /dev of the test's
// what cryptsetup and the kernel would do to the real ones, so that the
// mounter's own code finds, mounts and closes the mapping.
package crypttest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// script is the fake. On open it checks the key it reads on stdin and
// makes block/dm-0 in its sysfs, whose dm/name is the mapping and whose
// dev is the cleartext's number, and dev/mapper/<name> leading to the
// cleartext's node. On close it removes them, or, when "busy", refuses
// (exit 5, as cryptsetup does for a device in use) or with --deferred
// leaves them for the kernel to remove later. With "fail" its open
// fails after making the mapping, as when killed at a deadline.
const script = `#!/bin/sh
d=%s
echo "$*" >> "$d/calls"
for a; do name=$a; done
case "$1" in
open)
	[ "$(cat)" = "$(cat "$d/key")" ] || exit 2
	mkdir -p "$d/sys/devices/virtual/block/dm-0/dm" "$d/sys/block" "$d/dev/mapper"
	echo "$name" > "$d/sys/devices/virtual/block/dm-0/dm/name"
	cat "$d/devnum" > "$d/sys/devices/virtual/block/dm-0/dev"
	ln -sfn ../devices/virtual/block/dm-0 "$d/sys/block/dm-0"
	ln -sfn "$(cat "$d/cleartext")" "$d/dev/mapper/$name"
	if [ -f "$d/fail" ]; then exit 1; fi
	;;
close)
	if [ -f "$d/busy" ]; then
		[ "$2" = --deferred ] || exit 5
		exit 0
	fi
	rm -rf "$d/sys/block/dm-0" "$d/sys/devices/virtual/block/dm-0" "$d/dev/mapper/$name"
	;;
esac
`

// Fake is one fake cryptsetup with its sysfs and /dev.
type Fake struct {
	Path string // the program, for crypt.Cryptsetup.Path
	Sys  string // the sysfs it opens mappings in, for host.Roots.Sys
	Dev  string // the /dev of their /dev/mapper nodes, for host.Roots.Dev
	dir  string
}

// New makes a fake that opens with key, whose mapping's cleartext is
// the block device node (a real one, which can be mounted) of number num
// ("major:minor").
func New(t testing.TB, key, node, num string) *Fake {
	t.Helper()
	dir := t.TempDir()
	f := &Fake{Path: filepath.Join(dir, "cryptsetup"), Sys: filepath.Join(dir, "sys"), Dev: filepath.Join(dir, "dev"), dir: dir}
	f.write(t, "cryptsetup", fmt.Sprintf(script, dir), 0o755)
	f.write(t, "devnum", num, 0o644)
	f.write(t, "cleartext", node, 0o644)
	f.SetKey(t, key)
	return f
}

func (f *Fake) write(t testing.TB, name, content string, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(f.dir, name), []byte(content), perm); err != nil {
		t.Fatal(err)
	}
}

// flag makes the file name exist when on, else removes it.
func (f *Fake) flag(t testing.TB, name string, on bool) {
	t.Helper()
	if on {
		f.write(t, name, "", 0o644)
		return
	}
	if err := os.Remove(filepath.Join(f.dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}

// SetKey makes key the one its open takes.
func (f *Fake) SetKey(t testing.TB, key string) { t.Helper(); f.write(t, "key", key, 0o600) }

// SetBusy: the cleartext is in use: a close fails, a deferred one
// leaves the mapping to the kernel.
func (f *Fake) SetBusy(t testing.TB, on bool) { t.Helper(); f.flag(t, "busy", on) }

// SetFailing: an open fails after making the mapping.
func (f *Fake) SetFailing(t testing.TB, on bool) { t.Helper(); f.flag(t, "fail", on) }

// Calls are its invocations so far, one "open ..." or "close ..." a
// line.
func (f *Fake) Calls(t testing.TB) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(f.dir, "calls"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
}

// ResetCalls forgets the invocations so far.
func (f *Fake) ResetCalls(t testing.TB) { t.Helper(); f.flag(t, "calls", false) }

// Open reports whether its "kernel" has the mapping: a dm-0.
func (f *Fake) Open() bool {
	_, err := os.Stat(filepath.Join(f.Sys, "devices", "virtual", "block", "dm-0"))
	return err == nil
}

// Run runs the fake as someone other than hotplugd would, with key on
// stdin.
func (f *Fake) Run(t testing.TB, key string, args ...string) {
	t.Helper()
	cmd := exec.Command(f.Path, args...)
	cmd.Stdin = strings.NewReader(key)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("fake cryptsetup %q: %v\n%s", args, err, out)
	}
}
