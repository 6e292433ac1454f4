// Package looptest is for tests only: it gives root integration tests a
// disk image with a partition table on a real loop device, filesystems
// made with the real mkfs tools, and a cleanup that leaves no mount,
// partition or loop device behind, even when the test fails.
//
// A missing prerequisite (root, /dev/loop-control, a tool) skips the
// test, unless CI=true, where it fails it.
package looptest
