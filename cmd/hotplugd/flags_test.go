package main

import (
	"strings"
	"testing"
)

// TestVerbUsage: -h prints the verb's usage and exits 0 for every verb;
// an unknown flag or a stray argument is a usage error, exit 2.
func TestVerbUsage(t *testing.T) {
	for name := range commands() {
		t.Run(name, func(t *testing.T) {
			got, code := runCmd(t, name, "-h")
			if code != 0 || !strings.Contains(got, "usage: hotplugd "+name) {
				t.Errorf("%s -h: exit %d\n%s", name, code, got)
			}
			if got, code := runCmd(t, name, "--no-such-flag"); code != 2 {
				t.Errorf("%s --no-such-flag: exit %d, want 2\n%s", name, code, got)
			}
			if name == "test" || name == "eject" {
				return // takes KEY=VALUE arguments, or targets
			}
			if got, code := runCmd(t, name, "stray"); code != 2 || !strings.Contains(got, `unexpected argument "stray"`) {
				t.Errorf("%s stray: exit %d, want 2\n%s", name, code, got)
			}
		})
	}
}
