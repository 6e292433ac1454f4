package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hotplugd/hotplugd/internal/device"
	"github.com/hotplugd/hotplugd/internal/host"
	"github.com/hotplugd/hotplugd/internal/keyfile/keytest"
	"go.uber.org/goleak"
)

var updateGolden = flag.Bool("update", false, "rewrite the testdata/*.golden files of `hotplugd test`")

// runCmd runs hotplugd in-process and returns a transcript of the call:
// its arguments, exit status, stdout and stderr.
func runCmd(t *testing.T, args ...string) (transcript string, code int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	var ee exitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = int(ee)
	default:
		code = 1
		fmt.Fprintf(&stderr, "hotplugd: %v\n", err)
	}
	return fmt.Sprintf("$ hotplugd %s\nexit status %d\n--- stdout\n%s--- stderr\n%s",
		strings.Join(args, " "), code, stdout.String(), stderr.String()), code
}

// golden compares got with testdata/name.golden, or rewrites it with
// -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *updateGolden {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s differs (-want +got); if the change is right, run go test -update:\n%s", path, diff)
	}
}

// TestDryRunGolden runs `hotplugd test` on recorded events against
// testdata/rules.yaml.
func TestDryRunGolden(t *testing.T) {
	const rules = "testdata/rules.yaml"
	tests := []struct {
		name string
		args []string
		code int
	}{
		{"loop0p1-add-kernel", []string{"--event", "testdata/loop0p1-partition-add.kernel"}, 0},
		{"loop0p1-add-udev", []string{"--event", "testdata/loop0p1-partition-add.udev"}, 0},
		{"loop0p1-remove-kernel", []string{"--event", "testdata/loop0p1-partition-remove.kernel"}, 0},
		{"net-lo-change", []string{"--event", "testdata/net-lo-change.kernel"}, 0},
		{"usb-stick-json", []string{"--event", "testdata/usb-stick-add.json"}, 0},
		{"usb-stick-json-remove", []string{"--event", "testdata/usb-stick-add.json", "--action", "remove"}, 0},
		{"usb-stick-text", []string{"--event", "testdata/usb-stick-add.txt"}, 0},
		{"hostile-label", []string{"--event", "testdata/hostile-label.json"}, 0},
		{"key-value", []string{
			"DEVPATH=/devices/pci0000:00/0000:00:14.0/usb1/1-4/1-4:1.0/host2/target2:0:0/2:0:0:0/block/sde/sde1",
			"SUBSYSTEM=block", "DEVTYPE=partition", "DEVNAME=/dev/sde1", "--action", "add",
			"ID_FS_USAGE=filesystem", "ID_FS_TYPE=ext4", "ID_FS_UUID=5E2F-1A3B", "ID_FS_LABEL=backup",
		}, 0},
		{"key-value-net", []string{"DEVPATH=/devices/virtual/net/lo", "SUBSYSTEM=net", "INTERFACE=lo", "ACTION=change"}, 0},
		{"no-event", nil, 2},
		{"two-events", []string{"--event", "testdata/usb-stick-add.json", "SUBSYSTEM=block"}, 2},
		{"bad-key-value", []string{"SUBSYSTEM=block", "ACTION=add"}, 1},
		{"not-key-value", []string{"DEVPATH=/devices/x", "SUBSYSTEM=block", "oops"}, 1},
		{"bad-action", []string{"--event", "testdata/net-lo-change.kernel", "--action", "explode"}, 1},
		{"missing-event-file", []string{"--event", "testdata/nope"}, 1},
		{"not-an-event", []string{"--event", "testdata/rules.yaml"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"test", "--config", rules}, tt.args...)
			got, code := runCmd(t, args...)
			if code != tt.code {
				t.Errorf("exit status %d, want %d", code, tt.code)
			}
			golden(t, "test-"+tt.name, got)
		})
	}
}

func TestDryRunBadConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(path, []byte("rules:\n  - name: a\n    match: nope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"test", "--config", path, "--event", "testdata/net-lo-change.kernel"}, &stdout, &stderr)
	if err != exitError(1) || stdout.Len() != 0 || stderr.String() != path+":3:12: rule \"a\": match: unknown name nope\n" {
		t.Errorf("err %v, stdout %q, stderr %q", err, stdout.String(), stderr.String())
	}
}

// TestDryRunSyspath builds the event of a real device from /sys: the
// loopback interface, present on every Linux machine.
func TestDryRunSyspath(t *testing.T) {
	if _, err := os.Stat("/sys/class/net/lo/uevent"); err != nil {
		t.Skip("no /sys/class/net/lo:", err)
	}
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	rules := `rules:
  - name: lo
    match: subsystem == "net" && env.INTERFACE == "lo" && attr("mtu") != "" && attr("address") == "00:00:00:00:00:00"
    actions:
      - notify: {message: "{{ action }} {{ env.INTERFACE }} mtu {{ attr(\"mtu\") }} on a usb? {{ has_parent(\"usb\") }}"}
`
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	got, code := runCmd(t, "test", "--config", path, "--syspath", "/sys/class/net/lo", "--action", "change")
	if code != 0 {
		t.Fatalf("exit status %d:\n%s", code, got)
	}
	for _, want := range []string{
		"event: change /devices/virtual/net/lo (net)\n",
		"  INTERFACE=lo\n",
		"  source=test\n",
		"rule lo (" + path + ":2:5): matched\n",
		`  notify "change lo mtu `,
		` on a usb? false"`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}

	got, code = runCmd(t, "test", "--config", path, "--syspath", "/etc")
	if code != 1 || !strings.Contains(got, "hotplugd test: /etc is not a device under /sys/devices\n") {
		t.Errorf("--syspath /etc: exit %d\n%s", code, got)
	}
}

func TestQuoting(t *testing.T) {
	for in, want := range map[string]string{
		"":                `""`,
		"/dev/sdb1":       "/dev/sdb1",
		"a b":             `"a b"`,
		"$(reboot)":       `"$(reboot)"`,
		"x\x1b[2J":        `"x\x1b[2J"`,
		"--label=PHOTOS,": "--label=PHOTOS,",
	} {
		if got := quoteArg(in); got != want {
			t.Errorf("quoteArg(%q) = %s, want %s", in, got, want)
		}
	}
	for in, want := range map[string]string{
		"PHOTOS 2024": "PHOTOS 2024",
		" x":          `" x"`,
		"a\nb":        `"a\nb"`,
		"\x1b]0;pwn":  `"\x1b]0;pwn"`,
	} {
		if got := display(in); got != want {
			t.Errorf("display(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestDryRunFSAsDaemon feeds one event through the daemon's path (the
// device manager's view, which the rules read) and through `hotplugd test
// --event`: both must see the same fs.*, _ENC properties decoded.
func TestDryRunFSAsDaemon(t *testing.T) {
	dir := t.TempDir()
	evFile := filepath.Join(dir, "event")
	text := "ACTION=add\nDEVPATH=/devices/virtual/block/loop0/loop0p1\nSUBSYSTEM=block\nDEVNAME=loop0p1\n" +
		"MAJOR=259\nMINOR=0\nSEQNUM=9\nID_FS_TYPE=vfat\nID_FS_USAGE=filesystem\nID_FS_LABEL=My_Disk\n" +
		`ID_FS_LABEL_ENC=My\x20Disk` + "\nID_FS_UUID=5E2F-1A3B\nID_FS_UUID_ENC=5E2F-1A3B\nID_FS_VERSION=FAT32\n"
	if err := os.WriteFile(evFile, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	rulesFile := filepath.Join(dir, "rules.yaml")
	if err := os.WriteFile(rulesFile, []byte("rules:\n  - name: label\n    match: fs.label == \"My Disk\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	ev, err := readEventFile(evFile)
	if err != nil {
		t.Fatal(err)
	}
	m, err := device.New(device.Config{Roots: host.Roots{Sys: dir}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d := m.For(context.Background(), ev)
	daemonFS := d.FS()
	d.Done()

	got, code := runCmd(t, "test", "--config", rulesFile, "--event", evFile)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, got)
	}
	line := fmt.Sprintf("  fs.type=%s fs.usage=%s fs.label=%s fs.uuid=%s fs.version=%s\n",
		quoteArg(daemonFS.Type), quoteArg(daemonFS.Usage), quoteArg(daemonFS.Label), quoteArg(daemonFS.UUID), quoteArg(daemonFS.Version))
	if daemonFS.Label != "My Disk" || !strings.Contains(got, line) || !strings.Contains(got, "rule label (") || !strings.Contains(got, "): matched\n") {
		t.Errorf("the daemon sees %+v; the dry run printed:\n%s", daemonFS, got)
	}
}

// TestDryRunRouteGolden runs `hotplugd test` on events of a network link
// recorded with `hotplugd monitor --json --source route`, against the
// network example.
func TestDryRunRouteGolden(t *testing.T) {
	const rules = "../../configs/examples/network-carrier.yaml"
	tests := []struct {
		name string
		args []string
	}{
		{"enp3s0-carrier-json", []string{"--event", "testdata/enp3s0-carrier.json"}},
		{"enp3s0-no-carrier-json", []string{"--event", "testdata/enp3s0-carrier.json", "--action", "no-carrier"}},
		{"enp3s0-address-add-json", []string{"--event", "testdata/enp3s0-address-add.json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, code := runCmd(t, append([]string{"test", "--config", rules}, tt.args...)...)
			if code != 0 {
				t.Errorf("exit status %d, want 0", code)
			}
			golden(t, "test-"+tt.name, got)
		})
	}
}

// TestDryRunUnlock: `hotplugd test` of an encrypted stick's add shows the
// cryptsetup command with the keyfile's path (never its contents), the
// mapping and its node, and a mount of the cleartext to come; its remove
// shows the removal. The keyfile is the test's, so its directory is
// shown as $KEYS.
func TestDryRunUnlock(t *testing.T) {
	key := keytest.Key(t, "the key itself")
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rules, []byte(`rules:
  - name: backup-luks
    match: action == "add" && subsystem == "block" && fs.type == "crypto_LUKS"
    actions:
      - unlock: {keyfile: `+key+`, read_only: true}
      - mount: {options: [noatime]}
      - run: {argv: [/usr/local/bin/backup, --to, "{{ mount.path }}", --device, "{{ unlock.device }}"]}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ name, action string }{{"luks-stick-add", "add"}, {"luks-stick-remove", "remove"}} {
		got, code := runCmd(t, "test", "--config", rules, "--event", "testdata/luks-stick-add.json", "--action", tt.action)
		if code != 0 {
			t.Errorf("%s: exit status %d", tt.name, code)
		}
		if strings.Contains(got, "the key itself") {
			t.Errorf("%s: the output holds the key:\n%s", tt.name, got)
		}
		got = strings.ReplaceAll(got, filepath.Dir(key), "$KEYS")
		golden(t, "test-"+tt.name, strings.ReplaceAll(got, rules, "$RULES"))
	}
}
