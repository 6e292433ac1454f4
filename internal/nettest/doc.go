// Package nettest is for tests only: it gives root integration tests
// veth pairs of their own, created with ip(8) and deleted again even when
// the test fails, and storms of address changes made straight on a
// NETLINK_ROUTE socket, faster than ip(8) can make them.
//
// A missing prerequisite (root, ip, veth) skips the test, unless
// CI=true, where it fails it.
package nettest
