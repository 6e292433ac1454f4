//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// fsSpec is one filesystem of a stick: on the whole disk, or on a
// partition.
type fsSpec struct {
	fs    string // vfat, exfat, ext4, btrfs, xfs, ntfs, udf, iso9660
	label string
	// files are put on the filesystem when it is made, for the
	// filesystems whose mkfs can (ext4, btrfs, iso9660): name → content.
	files map[string]string
	// args are more options of its mkfs ("-i", "1A2B3C4D": a vfat
	// volume id, which blkid shows as the UUID 1A2B-3C4D).
	args []string
	// luks puts the filesystem (ext4 only; none when fs is "") inside a
	// LUKS2 volume.
	luks *luksSpec
}

// luksSpec is the LUKS2 volume of an fsSpec. This machine has no
// device-mapper to open one and make a filesystem inside, so the
// filesystem is made first, smaller than the device by luksReserve, and
// `cryptsetup reencrypt --encrypt` writes a LUKS2 header before it and
// encrypts it in place, without opening anything; with no filesystem,
// `cryptsetup luksFormat` makes an empty volume.
type luksSpec struct {
	key   string   // the keyfile on this machine
	uuid  string   // of the header
	pbkdf []string // cryptsetup's key derivation options
}

// luksReserve is the room the LUKS2 header takes at the start.
const luksReserve = 16 * mib

// stickSpec describes a stick's image.
type stickSpec struct {
	size int64 // bytes
	// whole: a filesystem on the whole disk, with no partition table.
	whole *fsSpec
	// parts: an MBR partition table with these, in equal parts.
	parts []fsSpec
}

// mib is a mebibyte.
const mib = 1 << 20

// makeImage builds the raw image of a stick in dir. A whole-disk
// filesystem is made on the file itself; partitions through a loop
// device (sfdisk, losetup, partx -a, mkfs, partx -d, losetup -d), which
// is detached again before the image is used, and by the test's cleanup
// if building fails half-way.
func makeImage(t *testing.T, dir, name string, s stickSpec) string {
	t.Helper()
	img := filepath.Join(dir, name+".img")
	if s.whole != nil && s.whole.fs == "iso9660" {
		mkiso(t, img, *s.whole)
		return img
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	err = f.Truncate(s.size)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s.whole != nil {
		makeFS(t, *s.whole, img)
		return img
	}
	var table strings.Builder
	table.WriteString("label: dos\n")
	per := (s.size/mib - 2) / int64(len(s.parts)) // MiB each, after the first MiB
	for i := range s.parts {
		fmt.Fprintf(&table, "start=%dMiB, size=%dMiB, type=83\n", 1+int64(i)*per, per)
	}
	runStdin(t, table.String(), "sfdisk", "-q", img)
	dev := strings.TrimSpace(looptest.Run(t, "losetup", "-f", "--show", img))
	attached := true
	detach := func() {
		if !attached {
			return
		}
		_, _ = looptest.RunErr("partx", "-d", dev)
		var err error
		for range 50 {
			if _, err = looptest.RunErr("losetup", "-d", dev); err == nil {
				attached = false
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Errorf("detach %s: %v", dev, err)
	}
	t.Cleanup(detach)
	looptest.Run(t, "partx", "-a", dev)
	for i, p := range s.parts {
		part := fmt.Sprintf("%sp%d", dev, i+1)
		looptest.WaitBlockDevice(t, part)
		makeFS(t, p, part)
	}
	detach()
	return img
}

// makeFS makes one filesystem on target (a file or a block device),
// inside a LUKS2 volume when s asks for one.
func makeFS(t *testing.T, s fsSpec, target string) {
	t.Helper()
	l := s.luks
	if l == nil {
		mkfs(t, s, target, "")
		return
	}
	opts := append([]string{"--batch-mode", "--type", "luks2", "--key-file", l.key, "--uuid", l.uuid}, l.pbkdf...)
	if s.fs == "" {
		looptest.Run(t, "cryptsetup", append(append([]string{"luksFormat"}, opts...), target)...)
		return
	}
	if s.fs != "ext4" {
		t.Fatalf("%s in LUKS is not supported", s.fs)
	}
	size := sizeOf(t, target)
	if size <= luksReserve {
		t.Fatalf("%s: %d bytes, too small for LUKS", target, size)
	}
	mkfs(t, s, target, strconv.FormatInt((size-luksReserve)/1024, 10)+"k")
	looptest.Run(t, "cryptsetup", append(append([]string{"reencrypt", "--encrypt", "--reduce-device-size",
		strconv.Itoa(luksReserve/mib) + "M"}, opts...), target)...)
}

// sizeOf is the size of a file or a block device, in bytes.
func sizeOf(t *testing.T, target string) int64 {
	t.Helper()
	fi, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().IsRegular() {
		return fi.Size()
	}
	size, err := strconv.ParseInt(strings.TrimSpace(looptest.Run(t, "blockdev", "--getsize64", target)), 10, 64)
	if err != nil {
		t.Fatalf("size of %s: %v", target, err)
	}
	return size
}

// mkfs makes one filesystem on target (a file or a block device), of
// size (mkfs.ext4's fs-size) when not "".
func mkfs(t *testing.T, s fsSpec, target, size string) {
	t.Helper()
	content := ""
	if len(s.files) > 0 {
		content = t.TempDir()
		for name, data := range s.files {
			writeFile(t, filepath.Join(content, name), data, 0o644)
		}
	}
	// label is the label option of each mkfs, left out for no label.
	label := func(opt string) []string {
		if s.label == "" {
			return nil
		}
		if strings.HasSuffix(opt, "=") {
			return []string{opt + s.label}
		}
		return []string{opt, s.label}
	}
	var tool string
	var args []string
	switch s.fs {
	case "vfat":
		tool, args = "mkfs.vfat", label("-n")
	case "exfat":
		tool, args = "mkfs.exfat", label("-L")
	case "ext4":
		tool, args = "mkfs.ext4", append([]string{"-q", "-F"}, label("-L")...)
		if content != "" {
			args = append(args, "-d", content)
		}
	case "btrfs":
		tool, args = "mkfs.btrfs", append([]string{"-q", "-f"}, label("-L")...)
		if content != "" {
			args = append(args, "--rootdir", content)
		}
	case "xfs":
		tool, args = "mkfs.xfs", append([]string{"-q", "-f"}, label("-L")...)
	case "ntfs":
		tool, args = "mkntfs", append([]string{"-Q", "-q", "-F"}, label("-L")...)
	case "udf":
		tool, args = "mkudffs", append([]string{"--media-type=hd"}, label("--label=")...)
	default:
		t.Fatalf("no mkfs for %s", s.fs)
	}
	args = append(append(args, s.args...), target)
	if size != "" {
		args = append(args, size)
	}
	looptest.Run(t, tool, args...)
	if len(s.files) > 0 && s.fs != "ext4" && s.fs != "btrfs" {
		t.Fatalf("files on %s are not supported", s.fs)
	}
}

// mkiso writes an ISO 9660 image (Rock Ridge and Joliet) of s.files.
func mkiso(t *testing.T, img string, s fsSpec) {
	t.Helper()
	content := t.TempDir()
	for name, data := range s.files {
		writeFile(t, filepath.Join(content, name), data, 0o644)
	}
	if looptest.ToolPath("xorriso") != "" {
		looptest.Run(t, "xorriso", "-as", "mkisofs", "-quiet", "-r", "-J", "-V", s.label, "-o", img, content)
		return
	}
	looptest.Run(t, "genisoimage", "-quiet", "-r", "-J", "-V", s.label, "-o", img, content)
}

func runStdin(t *testing.T, stdin string, name string, args ...string) {
	t.Helper()
	p := looptest.ToolPath(name)
	looptest.Need(t, p != "", name)
	cmd := exec.Command(p, args...)
	cmd.Stdin = strings.NewReader(stdin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %q: %v\n%s", name, args, err, out)
	}
}

// stick is one emulated USB mass-storage device: a usb-storage on the
// guest's xHCI bus whose medium is a -blockdev node (nodes survive
// device_del, so the same image can be plugged again, and media can be
// swapped in a removable device).
type stick struct {
	g      *guest
	id     string // the device's id, also its USB serial number
	node   string // the medium's node
	nodes  []string
	online bool
	// qdevPath is the SCSI disk's QOM path once its medium was taken.
	qdevPath string
}

// qmpCtx is the deadline of one monitor command.
func qmpCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

// blockdevAdd opens img as a raw node.
func (g *guest) blockdevAdd(t testing.TB, node, img string) {
	t.Helper()
	ctx, cancel := qmpCtx()
	defer cancel()
	_, err := g.qmp.do(ctx, "blockdev-add", map[string]any{
		"driver": "raw", "node-name": node,
		"file": map[string]any{"driver": "file", "filename": img},
	})
	if err != nil {
		t.Fatal(err)
	}
}

// plug attaches img as a removable USB stick with serial id; it is
// pulled again when the test ends, if it still is plugged.
func (g *guest) plug(t testing.TB, id, img string) *stick {
	t.Helper()
	s := g.plugDevice(t, id, img)
	t.Cleanup(func() {
		if s.online {
			s.pull(t)
		}
		s.deleteNodes(t)
	})
	return s
}

// plugAll plugs several sticks at once: their device_add commands go out
// back to back.
func (g *guest) plugAll(t testing.TB, imgs map[string]string) map[string]*stick {
	t.Helper()
	out := map[string]*stick{}
	for id, img := range imgs {
		out[id] = g.plug(t, id, img)
	}
	return out
}

func (g *guest) plugDevice(t testing.TB, id, img string) *stick {
	t.Helper()
	s := &stick{g: g, id: id, node: "medium-" + id}
	g.blockdevAdd(t, s.node, img)
	s.nodes = append(s.nodes, s.node)
	ctx, cancel := qmpCtx()
	defer cancel()
	_, err := g.qmp.do(ctx, "device_add", map[string]any{
		"driver": "usb-storage", "bus": "xhci.0", "drive": s.node, "id": id,
		"removable": true, "serial": id,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.online = true
	return s
}

// pull unplugs the stick and waits until QEMU has deleted the device.
func (s *stick) pull(t testing.TB) {
	t.Helper()
	ctx, cancel := qmpCtx()
	defer cancel()
	from := s.g.qmp.mark()
	if _, err := s.g.qmp.do(ctx, "device_del", map[string]any{"id": s.id}); err != nil {
		t.Fatal(err)
	}
	_, err := s.g.qmp.waitEvent(ctx, from, "DEVICE_DELETED", func(d json.RawMessage) bool {
		var v struct{ Device string }
		return json.Unmarshal(d, &v) == nil && v.Device == s.id
	})
	if err != nil {
		t.Fatal(err)
	}
	s.online = false
}

func (s *stick) deleteNodes(t testing.TB) {
	for _, n := range s.nodes {
		ctx, cancel := qmpCtx()
		// A node still in a tray (a failed test) cannot be deleted;
		// QEMU goes away with the guest anyway.
		_, _ = s.g.qmp.do(ctx, "blockdev-del", map[string]any{"node-name": n})
		cancel()
	}
	s.nodes = nil
}

// qdev is the QOM path of the SCSI disk inside the stick, which holds the
// medium: what the tray commands take as id.
func (s *stick) qdev(t testing.TB) string {
	t.Helper()
	ctx, cancel := qmpCtx()
	defer cancel()
	raw, err := s.g.qmp.do(ctx, "query-block", nil)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []struct {
		Qdev     string `json:"qdev"`
		Inserted *struct {
			NodeName string `json:"node-name"`
		} `json:"inserted"`
	}
	if err := json.Unmarshal(raw, &blocks); err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		if b.Inserted != nil && b.Inserted.NodeName == s.node && strings.Contains(b.Qdev, "/"+s.id+"/") {
			return b.Qdev
		}
	}
	t.Fatalf("no block device with medium %s in query-block: %s", s.node, raw)
	return ""
}

// takeMedium opens the tray and takes the medium out, as when a card is
// pulled from a reader: the USB device stays.
func (s *stick) takeMedium(t testing.TB) {
	t.Helper()
	qdev := s.qdev(t)
	ctx, cancel := qmpCtx()
	defer cancel()
	for _, c := range []string{"blockdev-open-tray", "blockdev-remove-medium"} {
		args := map[string]any{"id": qdev}
		if c == "blockdev-open-tray" {
			args["force"] = true
		}
		if _, err := s.g.qmp.do(ctx, c, args); err != nil {
			t.Fatal(err)
		}
	}
	s.qdevPath = qdev
}

// insertMedium puts img in the empty tray and closes it.
func (s *stick) insertMedium(t testing.TB, img string) {
	t.Helper()
	s.node = fmt.Sprintf("medium-%s-%d", s.id, len(s.nodes))
	s.g.blockdevAdd(t, s.node, img)
	s.nodes = append(s.nodes, s.node)
	ctx, cancel := qmpCtx()
	defer cancel()
	if _, err := s.g.qmp.do(ctx, "blockdev-insert-medium", map[string]any{"id": s.qdevPath, "node-name": s.node}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.g.qmp.do(ctx, "blockdev-close-tray", map[string]any{"id": s.qdevPath}); err != nil {
		t.Fatal(err)
	}
}
