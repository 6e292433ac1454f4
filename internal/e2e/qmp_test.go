//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeQEMU answers the QMP client like QEMU does: a greeting, then one
// answer per command; device_del sends DEVICE_DELETED before its answer.
func fakeQEMU(t *testing.T, conn net.Conn) {
	defer conn.Close()
	w := json.NewEncoder(conn)
	_ = w.Encode(map[string]any{"QMP": map[string]any{"version": map[string]any{}, "capabilities": []string{}}})
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		var cmd struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
			ID        json.RawMessage `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			t.Errorf("fake QEMU: %v", err)
			return
		}
		switch cmd.Execute {
		case "qmp_capabilities":
			_ = w.Encode(map[string]any{"return": map[string]any{}, "id": cmd.ID})
		case "device_del":
			_ = w.Encode(map[string]any{"event": "DEVICE_DELETED", "data": map[string]any{"path": "/machine/peripheral/s1/x"}})
			_ = w.Encode(map[string]any{"event": "DEVICE_DELETED", "data": map[string]any{"device": "s1", "path": "/machine/peripheral/s1"}})
			_ = w.Encode(map[string]any{"return": map[string]any{}, "id": cmd.ID})
		case "query-name":
			_ = w.Encode(map[string]any{"return": map[string]any{"name": "guest"}, "id": cmd.ID})
		default:
			_ = w.Encode(map[string]any{"error": map[string]any{"class": "CommandNotFound", "desc": "The command " + cmd.Execute + " has not been found"}, "id": cmd.ID})
		}
	}
}

func TestQMP(t *testing.T) {
	client, server := net.Pipe()
	go fakeQEMU(t, server)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q, err := newQMP(ctx, client)
	if err != nil {
		t.Fatal(err)
	}
	defer q.close()

	raw, err := q.do(ctx, "query-name", nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(`{"name":"guest"}`, string(raw)); diff != "" {
		t.Errorf("query-name (-want +got):\n%s", diff)
	}
	if _, err := q.do(ctx, "no-such-command", nil); err == nil || !strings.Contains(err.Error(), "CommandNotFound") {
		t.Errorf("an unknown command: error %v, want CommandNotFound", err)
	}

	// The event arrives before the command's answer, so before the
	// wait begins: the wait still sees it.
	from := q.mark()
	if _, err := q.do(ctx, "device_del", map[string]any{"id": "s1"}); err != nil {
		t.Fatal(err)
	}
	e, err := q.waitEvent(ctx, from, "DEVICE_DELETED", func(d json.RawMessage) bool {
		var v struct{ Device string }
		return json.Unmarshal(d, &v) == nil && v.Device == "s1"
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(e.Data), `"device":"s1"`) {
		t.Errorf("DEVICE_DELETED data %s, want the device s1", e.Data)
	}

	// A wait for what never comes ends at its deadline.
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := q.waitEvent(short, q.mark(), "DEVICE_DELETED", nil); err == nil {
		t.Errorf("waitEvent with nothing to come returned no error")
	}

	// When QEMU goes away, commands and waits fail at once.
	server.Close()
	if _, err := q.do(ctx, "query-name", nil); err == nil {
		t.Errorf("a command after the connection ended returned no error")
	}
	if _, err := q.waitEvent(ctx, q.mark(), "DEVICE_DELETED", nil); err == nil {
		t.Errorf("a wait after the connection ended returned no error")
	}
}

func TestResolveModules(t *testing.T) {
	dep := strings.Join([]string{
		"kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko",
		"kernel/fs/fat/fat.ko:",
		"kernel/drivers/usb/storage/usb-storage.ko: kernel/drivers/usb/core/usbcore.ko kernel/drivers/usb/common/usb-common.ko",
		"kernel/drivers/usb/core/usbcore.ko: kernel/drivers/usb/common/usb-common.ko",
		"kernel/drivers/usb/common/usb-common.ko:",
		"kernel/fs/btrfs/btrfs.ko.xz: kernel/lib/raid6/raid6_pq.ko.xz",
		"kernel/lib/raid6/raid6_pq.ko.xz:",
	}, "\n")
	m, err := parseModulesDep(strings.NewReader(dep))
	if err != nil {
		t.Fatal(err)
	}
	files, absent := m.resolve([]string{"vfat", "usb_storage", "btrfs", "ext4", "ntfs3"}, map[string]bool{"ext4": true})
	want := []string{
		"kernel/drivers/usb/common/usb-common.ko", "kernel/drivers/usb/core/usbcore.ko", "kernel/drivers/usb/storage/usb-storage.ko",
		"kernel/fs/btrfs/btrfs.ko.xz", "kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko", "kernel/lib/raid6/raid6_pq.ko.xz",
	}
	if diff := cmp.Diff(want, files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ntfs3"}, absent); diff != "" {
		t.Errorf("absent (-want +got):\n%s", diff)
	}
	if got := plainModule("kernel/fs/btrfs/btrfs.ko.xz"); got != "kernel/fs/btrfs/btrfs.ko" {
		t.Errorf("plainModule: %s", got)
	}
}
