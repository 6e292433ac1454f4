//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// initModules are the modules the guest's initramfs holds, with their
// dependencies: what mounts the root (virtio_pci must come before
// 9pnet_virtio, or the 9p transport finds no device), the agent's
// virtio-serial port, and every module the kernel itself may request
// while the scenarios run (request_module for a filesystem, its NLS
// tables, /dev/fuse; for a LUKS unlock device-mapper on the first open of
// /dev/mapper/control, its crypt target, the ciphers of the mapping and
// the keyslots, and AF_ALG, through which cryptsetup decrypts a keyslot).
// The kernel's requests run /sbin/modprobe in the
// initial root, which is the initramfs, not the overlay the guest
// switches to, so these must be there; drivers that userspace loads
// (usb-storage, sd_mod) come from the overlay's /lib/modules.
var initModules = []string{
	"virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_console",
	"xhci_pci", "usb_storage", "uas", "sd_mod", "sr_mod",
	"vfat", "exfat", "isofs", "udf", "ext4", "btrfs", "xfs", "fuse", "ntfs3",
	"nls_cp437", "nls_utf8", "nls_ascii", "nls_iso8859_1",
	"dm_mod", "dm_crypt", "xts", "ecb", "aesni_intel", "af_alg", "algif_skcipher", "algif_hash",
}

// moduleName is the name modprobe knows a module file by: its base name
// without .ko and compression suffix, with '-' as '_'.
func moduleName(file string) string {
	base := path.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// depmod is what modules.dep says: each module's path (relative to the
// modules directory) and the paths it depends on, transitively, as
// depmod writes them.
type depmod struct {
	deps   map[string][]string
	byName map[string]string // module name → path
}

func parseModulesDep(r io.Reader) (depmod, error) {
	m := depmod{deps: map[string][]string{}, byName: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		m.deps[mod] = strings.Fields(rest)
		m.byName[moduleName(mod)] = mod
	}
	return m, sc.Err()
}

// resolve returns the module files of names and of everything they
// depend on, and the names that are neither modules nor built in
// (builtin: the names modules.builtin lists).
func (m depmod) resolve(names []string, builtin map[string]bool) (files, absent []string) {
	set := map[string]bool{}
	for _, n := range names {
		n = strings.ReplaceAll(n, "-", "_")
		mod, ok := m.byName[n]
		if !ok {
			if !builtin[n] {
				absent = append(absent, n)
			}
			continue
		}
		set[mod] = true
		for _, d := range m.deps[mod] {
			set[d] = true
		}
	}
	for f := range set {
		files = append(files, f)
	}
	slices.Sort(files)
	return files, absent
}

// builtinModules parses modules.builtin (a missing file: none).
func builtinModules(file string) map[string]bool {
	built := map[string]bool{}
	b, err := os.ReadFile(file)
	if err != nil {
		return built
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line != "" {
			built[moduleName(line)] = true
		}
	}
	return built
}

// initramfs is what the guest boots into before its real root: busybox,
// modules, and an /init that mounts the host's root.
type initramfs struct {
	kernelRelease string // e.g. 6.1.0-57-amd64
	modulesDir    string // /lib/modules/<release> on the host
	busybox       string // a static busybox
	stage2        string // what /init runs in the new root, a path in the host's root
}

// initScript mounts the host's root read-only over 9p with a tmpfs
// overlay, moves the API filesystems into it and runs stage2 there as
// PID 1. chroot after "mount --move . /" rather than switch_root: the
// initramfs must stay intact, since the kernel's module requests keep
// resolving /sbin/modprobe and /lib/modules in it.
const initScript = `#!/bin/sh
export PATH=/bin:/sbin
fail() { echo "hotplugd-e2e: init: $*" >/dev/console; poweroff -f; }
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in virtio_pci 9pnet_virtio 9p overlay; do modprobe $m || fail "modprobe $m"; done
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /lower || fail "mount 9p"
mount -t tmpfs -o mode=0755 overlay-rw /rw || fail "mount tmpfs"
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || fail "mount overlay"
for d in dev proc sys; do mount --move /$d /newroot/$d || fail "move /$d"; done
cd /newroot || fail "cd /newroot"
mount --move . / || fail "move root"
exec chroot . /bin/sh %s
`

// write builds the initramfs as a newc cpio archive at dst.
func (ir initramfs) write(dst string) error {
	dep, err := os.Open(filepath.Join(ir.modulesDir, "modules.dep"))
	if err != nil {
		return err
	}
	dm, err := parseModulesDep(dep)
	dep.Close()
	if err != nil {
		return fmt.Errorf("modules.dep: %w", err)
	}
	files, absent := dm.resolve(initModules, builtinModules(filepath.Join(ir.modulesDir, "modules.builtin")))
	for _, n := range absent {
		if n != "ntfs3" { // Debian's 6.1 has none; ntfs-3g stands in
			return fmt.Errorf("kernel %s has no module %s", ir.kernelRelease, n)
		}
	}
	bb, err := os.ReadFile(ir.busybox)
	if err != nil {
		return err
	}
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	w := newCpio(out)
	for _, d := range []string{"bin", "sbin", "dev", "proc", "sys", "lower", "rw", "newroot"} {
		w.dir(d)
	}
	w.node("dev/console", cpioChar|0o600, 5, 1)
	w.file("bin/busybox", 0o755, bb)
	for _, l := range []string{"bin/sh", "bin/mount", "bin/mkdir", "bin/chroot", "bin/poweroff", "bin/echo", "sbin/modprobe"} {
		w.symlink(l, "/bin/busybox")
	}
	w.file("init", 0o755, fmt.Appendf(nil, initScript, ir.stage2))

	// The modules, uncompressed, with a modules.dep and modules.alias of
	// their own.
	root := "lib/modules/" + ir.kernelRelease
	included := map[string]bool{}
	var depOut bytes.Buffer
	for _, f := range files {
		data, err := readModule(filepath.Join(ir.modulesDir, f))
		if err != nil {
			return err
		}
		w.dirs(path.Dir(root + "/" + plainModule(f)))
		w.file(root+"/"+plainModule(f), 0o644, data)
		included[moduleName(f)] = true
		var ds []string
		for _, d := range dm.deps[f] {
			ds = append(ds, plainModule(d))
		}
		fmt.Fprintf(&depOut, "%s: %s\n", plainModule(f), strings.Join(ds, " "))
	}
	w.file(root+"/modules.dep", 0o644, depOut.Bytes())
	aliases, err := filterAliases(filepath.Join(ir.modulesDir, "modules.alias"), included)
	if err != nil {
		return err
	}
	w.file(root+"/modules.alias", 0o644, aliases)
	if b, err := os.ReadFile(filepath.Join(ir.modulesDir, "modules.builtin")); err == nil {
		w.file(root+"/modules.builtin", 0o644, b)
	}
	if err := w.close(); err != nil {
		return err
	}
	return out.Close()
}

// plainModule is a module's path without its compression suffix.
func plainModule(p string) string {
	for _, ext := range []string{".gz", ".xz", ".zst"} {
		if s, ok := strings.CutSuffix(p, ".ko"+ext); ok {
			return s + ".ko"
		}
	}
	return p
}

// readModule reads a module file, decompressed: busybox's modprobe may
// not read every compression.
func readModule(file string) ([]byte, error) {
	switch {
	case strings.HasSuffix(file, ".gz"):
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		return io.ReadAll(zr)
	case strings.HasSuffix(file, ".xz"), strings.HasSuffix(file, ".zst"):
		tool := "xz"
		if strings.HasSuffix(file, ".zst") {
			tool = "zstd"
		}
		b, err := exec.Command(tool, "-dc", file).Output()
		if err != nil {
			return nil, fmt.Errorf("%s -dc %s: %w", tool, file, err)
		}
		return b, nil
	}
	return os.ReadFile(file)
}

// filterAliases keeps the lines of modules.alias that name an included
// module.
func filterAliases(file string, included map[string]bool) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "alias" && included[strings.ReplaceAll(f[2], "-", "_")] {
			out.WriteString(line + "\n")
		}
	}
	return out.Bytes(), nil
}
