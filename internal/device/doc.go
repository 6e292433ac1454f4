// Package device enriches an event with what the rules may ask about its
// device: sysfs attributes (attr), attributes of its parents (attrs),
// whether it has a parent of a subsystem (has_parent), and its filesystem
// (fs.*). Nothing is read until a rule asks, and each answer is read at
// most once per event.
//
// Every sysfs read goes through an os.Root opened on the configured sysfs
// root, so neither an attribute name nor a symlink can lead outside it;
// reads are bounded to 4 KiB.
//
// Filesystems are probed with util-linux blkid rather than a built-in
// prober: it is the libblkid udev uses, it knows every filesystem, RAID
// and crypto signature, and a hostile superblock meets a short-lived
// process instead of the daemon. The cost is one fork per block device,
// only for events whose rules read fs.* and that carry no ID_FS_*
// properties. It runs as `blkid -p -o udev -s TYPE -s USAGE -s VERSION
// -s UUID -s LABEL`: low-level probing (no cache), and udev's encoding,
// which writes every unsafe byte of a label as \xNN and so is lossless
// and one line per key. `-o export` is not: it writes bytes >= 0x80 as
// "M-x" and controls as "^x", which cannot be told from a label that
// says "TEAM-A" or "^_^". `-d` is never passed: it would let a newline in
// a label start a forged output line. blkid's output and udev's ID_FS_*
// properties are decoded by the same code.
//
// On remove, sysfs is already gone and the device node with it. The
// device database keeps, per devpath, what was known while the device was
// present (its properties, filesystem, attributes read, parents) so a
// remove rule can match the same disk its add rule matched. It is bounded
// and evicts the least recently used device.
//
// A recording (`hotplugd monitor --json --walk`) keeps with each event
// what the rules may read of its device: Record reads its filesystem and
// its attribute walk, the answers of the same sysfs code for every
// attribute file of the device and its parents. A Manager of recordings
// (NewRecorded, ForRecording) answers from them by that same code, with
// the same database, so a replayed remove answers as the daemon's would.
package device
