// Package nsstest is for tests only: it adds a user that only an NSS
// module knows, the way an LDAP or SSSD user is unknown to /etc/passwd.
// The module is Debian's libnss-extrausers, which reads passwd and group
// files under /var/lib/extrausers once /etc/nsswitch.conf lists
// "extrausers" for passwd and group. Both files and nsswitch.conf are put
// back as they were when the test ends, even when it fails; a lock
// keeps tests of several packages, run at once, from interleaving.
//
// A missing prerequisite (root, the module) skips the test, unless
// CI=true, where it fails it.
package nsstest
