//go:build !linux

package notify

import (
	"context"
	"errors"
	"fmt"
	"runtime"

	"github.com/hotplugd/hotplugd/internal/actions/run"
)

// runDesktopHelper needs credentials and /proc/self/exe as Linux has them.
func (n *Notifier) runDesktopHelper(context.Context, *run.Credential, string, []byte) (string, error) {
	return "", fmt.Errorf("desktop notifications: %w on %s", errors.ErrUnsupported, runtime.GOOS)
}

// scanRunUserDir: there is no /run/user to scan.
func scanRunUserDir(string) ([]uint32, error) {
	return nil, fmt.Errorf("session buses: %w on %s", errors.ErrUnsupported, runtime.GOOS)
}

// userBus: there is no /run/user/UID/bus.
func userBus(string, uint32) (string, error) {
	return "", fmt.Errorf("session bus: %w on %s", errors.ErrUnsupported, runtime.GOOS)
}
