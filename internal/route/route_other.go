//go:build !linux

package route

import (
	"fmt"
	"log/slog"
	"runtime"
)

// open fails: NETLINK_ROUTE exists only on Linux.
func open(int, *slog.Logger) (conn, error) {
	return nil, fmt.Errorf("route: NETLINK_ROUTE needs Linux, not %s", runtime.GOOS)
}

// decode is never reached: there is no socket to read from.
func decode([]byte, []msg) ([]msg, error) {
	return nil, fmt.Errorf("route: NETLINK_ROUTE needs Linux, not %s", runtime.GOOS)
}

func dumpRequest(dumpKind, uint32) []byte { return nil }
