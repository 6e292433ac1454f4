package host

import "testing"

func TestRoots(t *testing.T) {
	var zero Roots
	for got, want := range map[string]string{
		zero.SysPath("class", "block"):                      "/sys/class/block",
		zero.ProcPath("self", "mountinfo"):                  "/proc/self/mountinfo",
		zero.EtcPath("fstab"):                               "/etc/fstab",
		zero.RunPath("udev", "control"):                     "/run/udev/control",
		zero.DevNode("sdb1"):                                "/dev/sdb1",
		zero.DevNode("input/event3"):                        "/dev/input/event3",
		zero.DevNode(""):                                    "",
		Roots{Dev: "/tmp/dev"}.DevNode("sdb1"):              "/tmp/dev/sdb1",
		Roots{Proc: "/tmp/p"}.ProcPath("filesystems"):       "/tmp/p/filesystems",
		Roots{Sys: "/x"}.WithDefaults().Proc:                "/proc",
		Roots{Sys: "/x"}.WithDefaults().Sys:                 "/x",
		Roots{Run: "/tmp/r"}.RunPath("user", "1000", "bus"): "/tmp/r/user/1000/bus",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}
