package nsstest

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Where the module's files are.
const (
	dir      = "/var/lib/extrausers"
	nsswitch = "/etc/nsswitch.conf"
	lockFile = "/run/lock/hotplugd-nsstest.lock"
)

// moduleGlobs find the module: Debian installs it in /usr/lib, other
// builds in the multiarch directory.
var moduleGlobs = []string{"/usr/lib/libnss_extrausers.so.2", "/usr/lib/*/libnss_extrausers.so.2", "/lib/*/libnss_extrausers.so.2"}

// User is the account AddUser made. Neither /etc/passwd nor /etc/group
// knows it or its groups.
type User struct {
	Name string
	UID  uint32
	GID  uint32 // its primary group, also called Name
	// Group is a second group, with the user as a member: a
	// supplementary group.
	Group    string
	GroupGID uint32
	Home     string // never created
}

// need skips the test when a prerequisite is missing, or, with CI=true,
// fails it.
func need(t testing.TB, ok bool, what string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing (CI=true): %s", what)
	}
	t.Skipf("prerequisite missing: %s", what)
}

// AddUser adds a new user and its two groups to the extrausers files,
// makes /etc/nsswitch.conf ask extrausers, and checks that getent(1), so
// the C library, resolves the user. Everything is undone when the test
// ends.
func AddUser(t testing.TB) User {
	t.Helper()
	need(t, os.Geteuid() == 0, "root (the test edits /etc/nsswitch.conf)")
	found := false
	for _, g := range moduleGlobs {
		m, _ := filepath.Glob(g)
		found = found || len(m) > 0
	}
	need(t, found, "libnss-extrausers (the NSS module the test adds a user with)")
	getent, err := exec.LookPath("getent")
	need(t, err == nil, "getent")
	lock(t)

	u := newUser(t)
	passwd := fmt.Sprintf("%s:x:%d:%d:hotplugd test user:%s:/usr/sbin/nologin\n", u.Name, u.UID, u.GID, u.Home)
	group := fmt.Sprintf("%s:x:%d:\n%s:x:%d:%s\n", u.Name, u.GID, u.Group, u.GroupGID, u.Name)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := os.Remove(dir); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
	}
	appendTo(t, filepath.Join(dir, "passwd"), passwd)
	appendTo(t, filepath.Join(dir, "group"), group)
	askExtrausers(t)

	out, err := exec.Command(getent, "passwd", u.Name).CombinedOutput()
	if err != nil || string(out) != passwd {
		t.Fatalf("getent passwd %s after adding it to %s: %v\n%s", u.Name, dir, err, out)
	}
	return u
}

// lock holds an exclusive lock for the rest of the test.
func lock(t testing.TB) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(lockFile), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(lockFile, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("lock %s: %v", lockFile, err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}

// newUser picks a name and ids no database knows.
func newUser(t testing.TB) User {
	t.Helper()
	var b [8]byte
	for range 100 {
		_, _ = rand.Read(b[:])
		name := "hpnss" + hex.EncodeToString(b[:3])
		id := 60000 + uint32(binary.BigEndian.Uint16(b[4:]))%2500*2
		u := User{
			Name: name, UID: id, GID: id,
			Group: name + "g", GroupGID: id + 1,
			Home: "/nonexistent/" + name,
		}
		if unknown(u) {
			return u
		}
	}
	t.Fatal("no free user name and ids found")
	return User{}
}

func unknown(u User) bool {
	_, e1 := user.Lookup(u.Name)
	_, e2 := user.LookupId(strconv.FormatUint(uint64(u.UID), 10))
	_, e3 := user.LookupGroup(u.Name)
	_, e4 := user.LookupGroup(u.Group)
	_, e5 := user.LookupGroupId(strconv.FormatUint(uint64(u.GID), 10))
	_, e6 := user.LookupGroupId(strconv.FormatUint(uint64(u.GroupGID), 10))
	return e1 != nil && e2 != nil && e3 != nil && e4 != nil && e5 != nil && e6 != nil
}

// appendTo adds lines to a file, creating it if need be, and puts it
// back as it was when the test ends.
func appendTo(t testing.TB, name, lines string) {
	t.Helper()
	orig, err := os.ReadFile(name)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if len(orig) > 0 && !bytes.HasSuffix(orig, []byte("\n")) {
		lines = "\n" + lines
	}
	t.Cleanup(func() { restore(t, name, orig, existed) })
	if err := os.WriteFile(name, append(bytes.Clone(orig), lines...), 0o644); err != nil {
		t.Fatal(err)
	}
}

func restore(t testing.TB, name string, orig []byte, existed bool) {
	var err error
	if existed {
		err = os.WriteFile(name, orig, 0)
	} else {
		err = os.Remove(name)
	}
	if err != nil {
		t.Errorf("cleanup: restoring %s: %v", name, err)
	}
}

// askExtrausers adds extrausers to the passwd and group lines of
// nsswitch.conf, after the sources already there.
func askExtrausers(t testing.TB) {
	t.Helper()
	orig, err := os.ReadFile(nsswitch)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	conf := withExtrausers(string(orig))
	if conf == string(orig) {
		return
	}
	t.Cleanup(func() { restore(t, nsswitch, orig, err == nil) })
	if err := os.WriteFile(nsswitch, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// withExtrausers returns an nsswitch.conf whose passwd and group
// databases end with extrausers. A database without a line gets one
// (glibc's default for it is files).
func withExtrausers(conf string) string {
	lines := strings.SplitAfter(conf, "\n")
	for _, db := range []string{"passwd", "group"} {
		found := false
		for i, l := range lines {
			key, sources, ok := strings.Cut(l, ":")
			if !ok || strings.TrimSpace(key) != db {
				continue
			}
			found = true
			text, nl := strings.CutSuffix(sources, "\n")
			body, comment, _ := strings.Cut(text, "#")
			if !strings.Contains(" "+body+" ", " extrausers ") {
				lines[i] = key + ":" + strings.TrimRight(body, " \t") + " extrausers"
				if comment != "" {
					lines[i] += " #" + comment
				}
				if nl {
					lines[i] += "\n"
				}
			}
		}
		if !found {
			if n := len(lines); n > 0 && lines[n-1] != "" && !strings.HasSuffix(lines[n-1], "\n") {
				lines[n-1] += "\n"
			}
			lines = append(lines, db+": files extrausers\n")
		}
	}
	return strings.Join(lines, "")
}
