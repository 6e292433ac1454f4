package rules

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// symlinkLayout is a rules file reached through symlinks: the file itself
// lives in root's etc/hotplugd; user/ and sticky/ belong to uid 1000 and
// to root (mode 1777).
type symlinkLayout struct {
	top, etc, real, user, sticky string
}

func newSymlinkLayout(t *testing.T) symlinkLayout {
	t.Helper()
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("prerequisite missing: root, to give directories to uid 1000")
		}
		t.Skip("needs root to give directories to uid 1000")
	}
	top := t.TempDir()
	l := symlinkLayout{top: top, etc: filepath.Join(top, "etc", "hotplugd"), user: filepath.Join(top, "user"), sticky: filepath.Join(top, "sticky")}
	l.real = filepath.Join(l.etc, "rules.yaml")
	for _, d := range []string{l.etc, l.user, l.sticky} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	chmod(t, top, 0o755)
	chmod(t, l.sticky, 0o777|os.ModeSticky)
	if err := os.WriteFile(l.real, []byte("rules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(l.user, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	return l
}

func chmod(t *testing.T, p string, m os.FileMode) {
	t.Helper()
	if err := os.Chmod(p, m); err != nil {
		t.Fatal(err)
	}
}

// link makes a symlink at p to target, owned by uid.
func link(t *testing.T, target, p string, uid int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p, uid, uid); err != nil {
		t.Fatal(err)
	}
}

// TestUnsafePermissionsSymlinks: whoever can replace a directory or a
// symlink on the way to the rules file, as given or as a symlink's target
// leads, can replace the file, however safe the file itself is.
func TestUnsafePermissionsSymlinks(t *testing.T) {
	l := newSymlinkLayout(t)
	userOwned := "directory " + l.user + " is owned by uid 1000, not root"
	tests := []struct {
		name  string
		setup func(t *testing.T) string // returns the path to check
		want  []string
	}{
		{"file a symlink below a user's directory", func(t *testing.T) string {
			// /x/userdir/sub/rules.yaml -> root's file; sub is root's.
			sub := filepath.Join(l.user, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			link(t, l.real, filepath.Join(sub, "rules.yaml"), 0)
			return filepath.Join(sub, "rules.yaml")
		}, []string{userOwned}},
		{"directory a symlink in a user's directory", func(t *testing.T) string {
			link(t, l.etc, filepath.Join(l.user, "link"), 0)
			return filepath.Join(l.user, "link", "rules.yaml")
		}, []string{userOwned}},
		{"relative symlink to a file in a user's directory", func(t *testing.T) string {
			if err := os.WriteFile(filepath.Join(l.user, "rules.yaml"), []byte("rules: []\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			link(t, "../../user/rules.yaml", filepath.Join(l.top, "etc", "alias", "rules.yaml"), 0)
			return filepath.Join(l.top, "etc", "alias", "rules.yaml")
		}, []string{userOwned}},
		{"symlink passing through a user's directory and out", func(t *testing.T) string {
			// Nothing is looked up in user/: ".." is its parent, whatever
			// its owner does.
			link(t, "../../user/../etc/hotplugd/rules.yaml", filepath.Join(l.top, "etc", "up", "rules.yaml"), 0)
			return filepath.Join(l.top, "etc", "up", "rules.yaml")
		}, nil},
		{"dot-dot after a symlink into a user's directory", func(t *testing.T) string {
			// Cleaned, the path would name top/rules.yaml, a safe file;
			// the kernel opens user/rules.yaml.
			for _, p := range []string{filepath.Join(l.top, "rules.yaml"), filepath.Join(l.user, "rules.yaml")} {
				if err := os.WriteFile(p, []byte("rules: []\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := os.MkdirAll(filepath.Join(l.user, "sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			link(t, filepath.Join(l.user, "sub"), filepath.Join(l.top, "lnk"), 0)
			return filepath.Join(l.top, "lnk") + "/../rules.yaml"
		}, []string{userOwned}},
		{"user's directory in a sticky directory, passed through", func(t *testing.T) string {
			// Its owner may rename it and put a symlink in its place.
			udir := filepath.Join(l.sticky, "udir")
			if err := os.Mkdir(udir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(udir, 1000, 1000); err != nil {
				t.Fatal(err)
			}
			return udir + "/../../etc/hotplugd/rules.yaml"
		}, []string{"directory " + filepath.Join(l.sticky, "udir") + " is owned by uid 1000, not root"}},
		{"user's symlink in a sticky directory", func(t *testing.T) string {
			link(t, l.etc, filepath.Join(l.sticky, "link"), 1000)
			return filepath.Join(l.sticky, "link", "rules.yaml")
		}, []string{"symlink " + filepath.Join(l.sticky, "link") + " is owned by uid 1000, not root"}},
		{"root's symlink in a sticky directory", func(t *testing.T) string {
			link(t, l.etc, filepath.Join(l.sticky, "rootlink"), 0)
			return filepath.Join(l.sticky, "rootlink", "rules.yaml")
		}, nil},
		{"symlinks all root's", func(t *testing.T) string {
			link(t, "hotplugd", filepath.Join(l.top, "etc", "hp"), 0)
			link(t, "../hp/rules.yaml", filepath.Join(l.top, "etc", "other", "rules.yaml"), 0)
			return filepath.Join(l.top, "etc", "other", "rules.yaml")
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.setup(t)
			got, err := UnsafePermissions(path, 0)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("UnsafePermissions(%s) (-want +got):\n%s", path, diff)
			}
			// Load reads the file by this path (unless fs.protected_symlinks
			// stops root at a user's symlink in a sticky directory).
			if _, err := Load(path); err != nil && !errors.Is(err, os.ErrPermission) {
				t.Errorf("Load(%s): %v", path, err)
			}
		})
	}
}

// A file reached through a symlink is reported once, where it is.
func TestUnsafePermissionsSymlinkedFile(t *testing.T) {
	l := newSymlinkLayout(t)
	chmod(t, l.real, 0o664)
	p := filepath.Join(l.top, "etc", "rules.yaml")
	link(t, "hotplugd/rules.yaml", p, 0)
	got, err := UnsafePermissions(p, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"file " + l.real + " is writable by its group (mode 0664)"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestUnsafePermissionsSymlinkErrors(t *testing.T) {
	l := newSymlinkLayout(t)
	loop := filepath.Join(l.top, "etc", "loop")
	link(t, "loop", loop, 0)
	if _, err := UnsafePermissions(filepath.Join(loop, "rules.yaml"), 0); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("symlink loop: err = %v, want ELOOP", err)
	}
	dangling := filepath.Join(l.top, "etc", "dangling")
	link(t, "nowhere", dangling, 0)
	if _, err := UnsafePermissions(dangling, 0); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dangling symlink: err = %v, want ErrNotExist", err)
	}
	if _, err := UnsafePermissions(filepath.Join(l.real, "x"), 0); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("file as a directory: err = %v, want ENOTDIR", err)
	}
}
