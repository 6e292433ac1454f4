package account

import (
	"fmt"
	"os/user"
	"strconv"
	"strings"
)

// User is one account of the user database.
type User struct {
	Name string
	UID  uint32
	GID  uint32 // primary group
	// Home is the home directory, "" when the database has none.
	Home string
	// Groups are every group the user is in, the primary group among
	// them, as initgroups(3) would set them.
	Groups []uint32
}

// Lookup resolves a user name, or a numeric uid that is no user's name.
// A user the database does not know is an error that errors.As finds as
// user.UnknownUserError or user.UnknownUserIdError.
func Lookup(name string) (*User, error) {
	u, err := user.Lookup(name)
	if err != nil && name != "" && strings.Trim(name, "0123456789") == "" {
		u, err = user.LookupId(name)
	}
	if err != nil {
		return nil, err
	}
	return resolve(u)
}

// LookupID resolves a uid.
func LookupID(uid uint32) (*User, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, err
	}
	return resolve(u)
}

// resolve completes an entry of the database with its groups, looked up
// by its own name and primary gid.
func resolve(u *user.User) (*User, error) {
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("user %q has non-numeric ids %s:%s", u.Username, u.Uid, u.Gid)
	}
	a := &User{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Home: u.HomeDir}
	gids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("groups of user %s: %w", u.Username, err)
	}
	for _, g := range gids {
		n, err := strconv.ParseUint(g, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("groups of user %s: non-numeric gid %q", u.Username, g)
		}
		a.Groups = append(a.Groups, uint32(n))
	}
	return a, nil
}
