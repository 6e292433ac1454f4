package daemon

import (
	"log/slog"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/google/go-cmp/cmp"
)

type journalEntry struct {
	msg  string
	pri  journal.Priority
	vars map[string]string
}

func TestJournalHandler(t *testing.T) {
	var got []journalEntry
	lv := new(slog.LevelVar)
	h := newJournalHandler(lv, func(msg string, p journal.Priority, vars map[string]string) error {
		got = append(got, journalEntry{msg, p, vars})
		return nil
	})
	log := slog.New(h).With("rule", "usb-automount")
	label := "%s\n$(reboot)"
	log.Info("mounted", "devpath", "/devices/x", "label", label)
	log.Debug("hidden")
	lv.Set(slog.LevelDebug)
	log.WithGroup("fs").Error("probe failed", "type", "vfat")

	want := []journalEntry{
		{
			msg: `msg=mounted rule=usb-automount devpath=/devices/x label="%s\n$(reboot)"`,
			pri: journal.PriInfo,
			vars: map[string]string{
				"SYSLOG_IDENTIFIER": "hotplugd", "RULE": "usb-automount",
				"DEVPATH": "/devices/x", "LABEL": label,
			},
		},
		{
			msg:  `msg="probe failed" rule=usb-automount fs.type=vfat`,
			pri:  journal.PriErr,
			vars: map[string]string{"SYSLOG_IDENTIFIER": "hotplugd", "RULE": "usb-automount", "FS_TYPE": "vfat"},
		},
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(journalEntry{})); diff != "" {
		t.Errorf("journal entries (-want +got):\n%s", diff)
	}
}

func TestJournalField(t *testing.T) {
	for in, want := range map[string]string{
		"devpath":    "DEVPATH",
		"mount.path": "MOUNT_PATH",
		"_hostname":  "HOSTNAME",
		"1x":         "X",
		"message":    "",
		"":           "",
		"ünï":        "N",
	} {
		if got := journalField("", in); got != want {
			t.Errorf("journalField(%q) = %q, want %q", in, got, want)
		}
	}
}
