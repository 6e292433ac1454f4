package mount

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestMountFstabParse(t *testing.T) {
	const fstab = `# /etc/fstab: static file system information.
UUID=0a3407de-014b-458b-b5c1-848e92a327a3 /     ext4 errors=remount-ro 0 1

LABEL=My\040Disk  /mnt/my\040disk  ntfs-3g  noauto 0 0
	PARTUUID=1234abcd-01 none swap sw 0 0
/dev/sdc1 /srv vfat defaults 0 0
LABEL="Quoted" /q auto defaults
`
	got, err := parseFstab(strings.NewReader(fstab))
	if err != nil {
		t.Fatal(err)
	}
	want := []fstabEntry{
		{line: 2, spec: "UUID=0a3407de-014b-458b-b5c1-848e92a327a3", dir: "/"},
		{line: 4, spec: "LABEL=My Disk", dir: "/mnt/my disk"},
		{line: 5, spec: "PARTUUID=1234abcd-01", dir: "none"},
		{line: 6, spec: "/dev/sdc1", dir: "/srv"},
		{line: 7, spec: `LABEL="Quoted"`, dir: "/q"},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(fstabEntry{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestMountFstabMatch(t *testing.T) {
	dev := Device{Label: "My Disk", UUID: "0a3407de-014b-458b-b5c1-848e92a327a3", PartUUID: "1234abcd-01", PartLabel: "data"}
	tests := []struct {
		spec string
		want bool
	}{
		{"LABEL=My Disk", true},
		{`LABEL="My Disk"`, true},
		{"LABEL=my disk", false},
		{"UUID=0A3407DE-014B-458B-B5C1-848E92A327A3", true},
		{"UUID=ffff", false},
		{"PARTUUID=1234ABCD-01", true},
		{"PARTLABEL=data", true},
		{"LABEL=", false},
		{"ID=My Disk", false},
		{"/dev/sdb1", false},
		{`/dev/disk/by-label/My\x20Disk`, true},
		{"/dev/disk/by-uuid/0a3407de-014b-458b-b5c1-848e92a327a3", true},
		{"/dev/disk/by-partuuid/1234abcd-01", true},
		{"/dev/disk/by-partlabel/data", true},
		{"/dev/disk/by-partlabel/other", false},
		{"/dev/disk/by-partlabel/", false},
		{"/dev/disk/by-id/usb-x", false},
	}
	for _, tt := range tests {
		tag, value, ok := fstabTag(tt.spec)
		got := ok && matchesTag(dev, tag, value)
		if got != tt.want {
			t.Errorf("%q matches = %v, want %v", tt.spec, got, tt.want)
		}
	}
}

func TestMountFstabUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`a\040b`:   "a b",
		`a\011b`:   "a\tb",
		`a\134b`:   `a\b`,
		`a\04`:     `a\04`,
		`a\999`:    `a\999`,
		`plain`:    "plain",
		`\040\040`: "  ",
	} {
		if got := unescapeOctal(in); got != want {
			t.Errorf("unescapeOctal(%q) = %q, want %q", in, got, want)
		}
	}
}
