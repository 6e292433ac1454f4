// Package account resolves the users that rules name, and the users of
// desktop sessions, once and completely: ids, home and every group, all
// from the same entry of the user database. Resolving a uid a second time
// could find another account with that uid (toor and root) and give the
// action its home and groups.
//
// It goes through os/user, so which database answers depends on the
// build: with cgo (the Debian package's build) the C library asks NSS as
// /etc/nsswitch.conf says, so users from LDAP, SSSD, systemd or
// extrausers resolve; without cgo (the static build) os/user reads
// /etc/passwd and /etc/group and nothing else. Database names the one
// this binary asks, for error messages.
package account
