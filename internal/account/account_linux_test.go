package account

import (
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/hotplugd/hotplugd/internal/looptest"
	"github.com/hotplugd/hotplugd/internal/nsstest"
)

// TestLookupNSSUser: a user only an NSS module knows resolves by name and
// by uid, with its home and both its groups, all through the C library.
func TestLookupNSSUser(t *testing.T) {
	looptest.Need(t, NSS, "a cgo build: os/user asks NSS only through the C library (CGO_ENABLED=1, no osusergo tag)")
	nu := nsstest.AddUser(t)
	want := &User{Name: nu.Name, UID: nu.UID, GID: nu.GID, Home: nu.Home, Groups: []uint32{nu.GID, nu.GroupGID}}
	byName, err := Lookup(nu.Name)
	if err != nil {
		t.Fatalf("Lookup(%q): %v", nu.Name, err)
	}
	byID, err := LookupID(nu.UID)
	if err != nil {
		t.Fatalf("LookupID(%d): %v", nu.UID, err)
	}
	for what, got := range map[string]*User{"Lookup": byName, "LookupID": byID} {
		slices.Sort(got.Groups)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", what, diff)
		}
	}
}
