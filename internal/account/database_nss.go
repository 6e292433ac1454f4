//go:build cgo && !osusergo

package account

// Database is where this build looks users up: os/user calls the C
// library, which asks NSS.
const Database = "the user database (NSS, as /etc/nsswitch.conf says)"

// NSS is whether Database is NSS.
const NSS = true
