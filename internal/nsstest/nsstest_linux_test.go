package nsstest

import (
	"os"
	"os/exec"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWithExtrausers(t *testing.T) {
	for _, tc := range []struct{ name, conf, want string }{
		{
			"debian default",
			"# /etc/nsswitch.conf\n\npasswd:         files systemd\ngroup:          files systemd\nshadow:         files systemd\nhosts:          files dns\n",
			"# /etc/nsswitch.conf\n\npasswd:         files systemd extrausers\ngroup:          files systemd extrausers\nshadow:         files systemd\nhosts:          files dns\n",
		},
		{
			"already there",
			"passwd: files extrausers\ngroup: extrausers files\n",
			"passwd: files extrausers\ngroup: extrausers files\n",
		},
		{
			"comments and no newline",
			"passwd: files # local only\n#group: nis\ngroup: files",
			"passwd: files extrausers # local only\n#group: nis\ngroup: files extrausers",
		},
		{
			"no lines",
			"hosts: files dns",
			"hosts: files dns\npasswd: files extrausers\ngroup: files extrausers\n",
		},
		{"no file", "", "passwd: files extrausers\ngroup: files extrausers\n"},
	} {
		if diff := cmp.Diff(tc.want, withExtrausers(tc.conf)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.name, diff)
		}
	}
}

// TestAddUser: the C library resolves the user while the test runs (AddUser
// checks with getent), and nothing is left behind afterwards.
func TestAddUser(t *testing.T) {
	before, _ := os.ReadFile(nsswitch)
	var u User
	t.Run("add", func(t *testing.T) { u = AddUser(t) })
	if u.Name == "" {
		return // skipped
	}
	if out, err := exec.Command("getent", "passwd", u.Name).CombinedOutput(); err == nil {
		t.Errorf("getent passwd %s after the test: %s", u.Name, out)
	}
	if after, _ := os.ReadFile(nsswitch); string(after) != string(before) {
		t.Errorf("%s after the test (-before +after):\n%s", nsswitch, cmp.Diff(string(before), string(after)))
	}
}
