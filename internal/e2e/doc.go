// Package e2e is the real-machine suite: hotplugd as its users run it,
// on a distribution kernel with a real USB bus and systemd as PID 1,
// which the machine running the tests may lack. Each group of scenarios
// boots one QEMU guest from the host's /boot/vmlinuz-* with a small
// initramfs built at test time; the guest runs the host's root,
// shared read-only over 9p under a tmpfs overlay, so blkid, the mount
// helpers and systemd are the host's, and the hotplugd binary is the one
// built from this tree. USB sticks are raw images plugged into and pulled
// from an emulated xHCI bus through QMP; a small agent in the guest runs
// the tests' commands over a virtio-serial port.
//
// The tests carry the build tag e2e and need root and QEMU: run them with
// `make e2e`. With CI=true a missing prerequisite fails the test instead
// of skipping it. The environment may name what they use:
//
//	HOTPLUGD_E2E_BIN     the hotplugd to test, static (default: built from this tree)
//	HOTPLUGD_E2E_DEB     the .deb the systemd guest installs (required there)
//	HOTPLUGD_E2E_KERNEL  the kernel to boot (default: the newest /boot/vmlinuz-*)
//	HOTPLUGD_E2E_KEEP    when set, keep the work directory (console log, images)
//	HOTPLUGD_E2E_RECORD  a file TestStickRecording writes its recording to
//	                     (make record-stick: configs/examples/testdata/usb-stick.jsonl)
package e2e
