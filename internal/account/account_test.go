package account

import (
	"errors"
	"os/user"
	"slices"
	"testing"
)

func TestLookupRoot(t *testing.T) {
	for _, name := range []string{"root", "0"} {
		u, err := Lookup(name)
		if err != nil {
			t.Fatalf("Lookup(%q): %v", name, err)
		}
		if u.Name != "root" || u.UID != 0 || u.GID != 0 || u.Home != "/root" || !slices.Contains(u.Groups, 0) {
			t.Errorf("Lookup(%q) = %+v, want root, 0, 0, /root, in group 0", name, u)
		}
	}
	u, err := LookupID(0)
	if err != nil || u.Name != "root" || !slices.Contains(u.Groups, 0) {
		t.Errorf("LookupID(0) = %+v, %v", u, err)
	}
}

func TestLookupUnknown(t *testing.T) {
	var name user.UnknownUserError
	if _, err := Lookup("no-such-user-hotplugd"); !errors.As(err, &name) {
		t.Errorf("Lookup of an unknown name: %v, want a user.UnknownUserError", err)
	}
	var id user.UnknownUserIdError
	if _, err := Lookup("4294967000"); !errors.As(err, &id) {
		t.Errorf("Lookup of an unknown uid: %v, want a user.UnknownUserIdError", err)
	}
	if _, err := LookupID(4294967000); !errors.As(err, &id) {
		t.Errorf("LookupID of an unknown uid: %v, want a user.UnknownUserIdError", err)
	}
}
