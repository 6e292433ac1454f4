//go:build !linux

package listener

import (
	"fmt"
	"log/slog"
	"runtime"
)

// open fails: uevents and NETLINK_KOBJECT_UEVENT exist only on Linux.
func open(_ uint32, _ int, _ *slog.Logger) (conn, error) {
	return nil, fmt.Errorf("listener: netlink uevents need Linux, not %s", runtime.GOOS)
}
