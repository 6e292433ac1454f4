package rules

import (
	"strings"
	"testing"
)

func TestCheckMountOption(t *testing.T) {
	tests := []struct {
		opt     string
		wantErr string // "" means allowed
	}{
		{opt: "ro"}, {opt: "rw"}, {opt: "noatime"}, {opt: "nodiratime"}, {opt: "relatime"},
		{opt: "strictatime"}, {opt: "lazytime"}, {opt: "sync"}, {opt: "dirsync"},
		{opt: "flush"}, {opt: "discard"},
		{opt: "", wantErr: "empty"},
		{opt: "noatime,exec", wantErr: `contains ","`},
		{opt: "a,uid=0,exec", wantErr: `contains ","`},
		{opt: "no\tatime", wantErr: "control character"},
		{opt: "noatime\n", wantErr: "control character"},
		{opt: "uid=0", wantErr: "set owner"},
		{opt: "errors=continue", wantErr: "values are not allowed"},
		{opt: "exec", wantErr: "exec: true"},
		{opt: "suid", wantErr: "nosuid,nodev"},
		{opt: "dev", wantErr: "nosuid,nodev"},
		{opt: "uid", wantErr: "owner"},
		{opt: "remount", wantErr: "not allowed"},
		{opt: "bind", wantErr: "not allowed"},
		{opt: "user", wantErr: "fstab option"},
		{opt: "defaults", wantErr: "implied"},
		{opt: "no atime", wantErr: "space"},
		{opt: `no\atime`, wantErr: "allow-list"},
		{opt: "x-gvfs-show", wantErr: "allow-list"},
		{opt: "NOATIME", wantErr: "allow-list"},
	}
	for _, tt := range tests {
		t.Run(tt.opt, func(t *testing.T) {
			err := CheckMountOption(tt.opt)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("CheckMountOption(%q) = %v, want nil", tt.opt, err)
			case tt.wantErr != "" && err == nil:
				t.Errorf("CheckMountOption(%q) = nil, want an error containing %q", tt.opt, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("CheckMountOption(%q) = %v, want it to contain %q", tt.opt, err, tt.wantErr)
			}
		})
	}
}

func TestCheckMountOptionsConflicts(t *testing.T) {
	tests := []struct {
		opts    []string
		wantErr string
	}{
		{opts: nil},
		{opts: []string{"noatime", "sync", "flush"}},
		{opts: []string{"ro", "rw"}, wantErr: `"ro" and "rw"`},
		{opts: []string{"noatime", "relatime"}, wantErr: "noatime and relatime contradict"},
		{opts: []string{"noatime", "exec", "a,b"}, wantErr: "exec: true"},
	}
	for _, tt := range tests {
		err := CheckMountOptions(tt.opts)
		if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("CheckMountOptions(%q) = %v, want %q", tt.opts, err, tt.wantErr)
		}
	}
	// Every problem is reported, not just the first.
	err := CheckMountOptions([]string{"exec", "a,b"})
	if err == nil || !strings.Contains(err.Error(), "exec: true") || !strings.Contains(err.Error(), "own list item") {
		t.Errorf("both problems not reported: %v", err)
	}
}
