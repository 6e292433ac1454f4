//go:build !cgo || osusergo

package account

// Database is where this build looks users up: without cgo, os/user
// parses the files itself and no NSS module is asked.
const Database = "/etc/passwd and /etc/group (a static build: NSS sources such as LDAP or SSSD are not asked)"

// NSS is whether Database is NSS.
const NSS = false
