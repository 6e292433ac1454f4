package packaging

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestReleaseReproducible: make release, run in two clones of the commit
// in two directories, the second with an empty build cache, gives the
// same SHA256SUMS, and SHA256SUMS names the package and the tarball.
// It builds HEAD: changes not yet committed are not in it.
func TestReleaseReproducible(t *testing.T) {
	for _, tool := range []string{"git", "dpkg-deb", "dpkg-shlibdeps", "gcc", "tar", "gzip", "sha256sum"} {
		needTool(t, tool)
	}
	root := repoRoot(t)
	head := strings.TrimSpace(run(t, root, os.Environ(), "git", "rev-parse", "HEAD"))
	if st := run(t, root, os.Environ(), "git", "status", "--porcelain", "--untracked-files=no"); st != "" {
		t.Logf("the working tree has changes; this test builds the commit %s without them:\n%s", head, st)
	}
	var sums [2]string
	for i := range sums {
		dir := filepath.Join(t.TempDir(), fmt.Sprintf("hotplugd-%d", i))
		run(t, "", os.Environ(), "git", "clone", "-q", "--no-checkout", root, dir)
		run(t, dir, os.Environ(), "git", "checkout", "-q", "--detach", head)
		env := makeEnv()
		if i == 1 {
			env = append(env, "GOCACHE="+t.TempDir())
		}
		stdout, stderr, err := runTimeout(t, 20*time.Minute, dir, env, "make", "--no-print-directory", "release")
		if err != nil {
			t.Fatalf("make release in %s: %v\n%s%s", dir, err, stdout, stderr)
		}
		sums[i] = readFile(t, filepath.Join(dir, "dist", "SHA256SUMS"))
	}
	if diff := cmp.Diff(sums[0], sums[1]); diff != "" {
		t.Errorf("two builds of %s differ: SHA256SUMS (-first +second):\n%s", head, diff)
	}
	var names []string
	for _, line := range strings.Split(strings.TrimSpace(sums[0]), "\n") {
		if f := strings.Fields(line); len(f) == 2 && len(f[0]) == 64 {
			names = append(names, f[1])
		}
	}
	deb := regexp.MustCompile(`^hotplugd_[^_]+_` + regexp.QuoteMeta(debArch()) + `\.deb$`)
	tgz := regexp.MustCompile(`^hotplugd-.+-linux-[a-z0-9]+\.tar\.gz$`)
	if len(names) != 2 || !deb.MatchString(names[0]) || !tgz.MatchString(names[1]) {
		t.Errorf("SHA256SUMS names %q, want the .deb and the tarball:\n%s", names, sums[0])
	}
}

// TestTarball: the release tarball holds, under one directory, the static
// binary and everything make install installs with PREFIX=/usr/local,
// and LICENSE; its entries are sorted, owned by 0:0 and dated at the
// commit.
func TestTarball(t *testing.T) {
	needTool(t, "tar")
	root := repoRoot(t)
	distdir := t.TempDir()
	runMake(t, "tarball", "DISTDIR="+distdir)
	tgzs, _ := filepath.Glob(filepath.Join(distdir, "hotplugd-*-linux-*.tar.gz"))
	if len(tgzs) != 1 {
		t.Fatalf("make tarball DISTDIR=%s made %v, want one tarball", distdir, tgzs)
	}
	top := strings.TrimSuffix(filepath.Base(tgzs[0]), ".tar.gz")
	commit := strings.TrimSpace(run(t, root, os.Environ(), "git", "log", "-1", "--format=%ct"))

	want := map[string]fs.FileMode{"/LICENSE": 0o644}
	for name, mode := range installedFiles() {
		switch {
		case strings.HasSuffix(name, "/hotplugd.service"):
			name = "/usr/local/lib/systemd/system/hotplugd.service"
		case strings.HasPrefix(name, "/usr/"):
			name = "/usr/local/" + strings.TrimPrefix(name, "/usr/")
		}
		want[name] = mode
	}
	got := map[string]fs.FileMode{}
	var order []string
	f, err := os.Open(tgzs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var bin []byte
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		order = append(order, h.Name)
		if h.Uid != 0 || h.Gid != 0 || fmt.Sprint(h.ModTime.Unix()) != commit {
			t.Errorf("%s: owner %d:%d, time %d; want 0:0 and the commit's time %s", h.Name, h.Uid, h.Gid, h.ModTime.Unix(), commit)
		}
		name, ok := strings.CutPrefix(h.Name, top)
		if !ok {
			t.Errorf("%s is not under %s/", h.Name, top)
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		got[name] = fs.FileMode(h.Mode).Perm()
		if name == "/usr/local/bin/hotplugd" {
			if bin, err = io.ReadAll(tr); err != nil {
				t.Fatal(err)
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("tarball files (-want +got):\n%s", diff)
	}
	// Sorted as tar --sort=name walks: each directory's entries by name.
	byComponents := func(a, b string) int { return slices.Compare(strings.Split(a, "/"), strings.Split(b, "/")) }
	if !slices.IsSortedFunc(order, byComponents) {
		t.Errorf("tarball entries are not sorted by name: %q", order)
	}
	if ef, err := elf.NewFile(bytes.NewReader(bin)); err != nil {
		t.Errorf("the tarball's hotplugd: %v", err)
	} else if libs, _ := ef.ImportedLibraries(); len(libs) != 0 {
		t.Errorf("the tarball's hotplugd links %q; it must be static (BUILD=static)", libs)
	}
}
