package uevent

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFSFromProps(t *testing.T) {
	udev := []string{
		"ID_FS_LABEL=My__Disk__$x",
		`ID_FS_LABEL_ENC=My\x20\x22Disk\x22\x20\x24x`,
		"ID_FS_UUID=5E2F-1A3B",
		"ID_FS_UUID_ENC=5E2F-1A3B",
		"ID_FS_VERSION=FAT32",
		"ID_FS_TYPE=vfat",
		"ID_FS_USAGE=filesystem",
	}
	tests := []struct {
		name   string
		props  []string
		want   FS
		wantOK bool
	}{
		{"udev vfat", udev, FS{Type: "vfat", Label: `My "Disk" $x`, UUID: "5E2F-1A3B", Usage: "filesystem", Version: "FAT32"}, true},
		{"written by hand", []string{"ID_FS_TYPE=ext4", "ID_FS_LABEL=My Disk", "ID_FS_USAGE=filesystem"},
			FS{Type: "ext4", Label: "My Disk", Usage: "filesystem"}, true},
		{"_ENC wins in either order", []string{`ID_FS_LABEL_ENC=a\x0ab`, "ID_FS_LABEL=a_b"}, FS{Label: "a\nb"}, true},
		{"_ENC decoded: the daemon and the dry run see one label", []string{"ID_FS_LABEL=My_Disk", `ID_FS_LABEL_ENC=My\x20Disk`}, FS{Label: "My Disk"}, true},
		{"UTF-8 kept", []string{`ID_FS_LABEL_ENC=Fotos\x20Müller`}, FS{Label: "Fotos Müller"}, true},
		{"bad escape kept", []string{`ID_FS_LABEL_ENC=a\xZZ\`}, FS{Label: `a\xZZ\`}, true},
		{"only usage", []string{"ID_FS_USAGE=raid"}, FS{Usage: "raid"}, true},
		{"none", []string{"ID_PART_ENTRY_TYPE=0x83"}, FS{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var props []Property
			for _, s := range tt.props {
				k, v, _ := strings.Cut(s, "=")
				props = append(props, Property{Key: k, Value: v})
			}
			got, ok := FSFromProps(props)
			if diff := cmp.Diff(tt.want, got); diff != "" || ok != tt.wantOK {
				t.Errorf("ok = %v, want %v; (-want +got):\n%s", ok, tt.wantOK, diff)
			}
		})
	}
}

func TestWellEncoded(t *testing.T) {
	for s, want := range map[string]bool{
		"STICK":          true,
		`My\x20Disk`:     true,
		"Müller":         true,
		`a\x2`:           false,
		`a\y20`:          false,
		"a\nb":           false,
		"\xff":           false,
		`trailing\`:      false,
		`\xZZ`:           false,
		`ok\x0a\x0A\x7f`: true,
		"del\x7f":        false,
		"":               true,
	} {
		if got := WellEncoded(s); got != want {
			t.Errorf("WellEncoded(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestPartitionFromProps(t *testing.T) {
	for _, tt := range []struct {
		props  []Property
		want   Partition
		wantOK bool
	}{
		{[]Property{{"ID_PART_ENTRY_UUID", "0b3e6e3c-01"}, {"ID_PART_ENTRY_NAME", `My\x20Data`}}, Partition{UUID: "0b3e6e3c-01", Name: "My Data"}, true},
		{[]Property{{"PARTN", "1"}, {"PARTNAME", "My Data"}}, Partition{Name: "My Data"}, true},
		{[]Property{{"ID_PART_ENTRY_NAME", `udev`}, {"PARTNAME", "kernel"}}, Partition{Name: "udev"}, true},
		{[]Property{{"PARTNAME", "kernel"}, {"ID_PART_ENTRY_NAME", `udev`}}, Partition{Name: "udev"}, true},
		{[]Property{{"PARTN", "1"}}, Partition{}, false},
	} {
		got, ok := PartitionFromProps(tt.props)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%v: %+v %v, want %+v %v", tt.props, got, ok, tt.want, tt.wantOK)
		}
	}
}
