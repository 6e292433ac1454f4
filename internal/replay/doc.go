// Package replay feeds a recorded sequence of events (`hotplugd monitor
// --json --walk`) through rules as the daemon would, and compares what
// the rules do with expectations: `hotplugd test --replay --expect`, a
// unit test for a rules file before it is rolled out.
//
// Each event goes through the daemon's own path: a device.Manager of
// recordings, whose database carries what an add knew to its remove, the
// rules' Match, and actions.Set.Run with a plan-only executor and a
// simulated mounter. Nothing is run, mounted, sent or written, and
// nothing of the machine that replays (its sysfs, mounts, fstab, kernel
// filesystems, state file) enters the outcome.
package replay
