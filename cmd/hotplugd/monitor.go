package main

import (
	"context"
	"errors"
	"io"
)

// runMonitor is filled in with the listener.
func runMonitor(_ context.Context, _ []string, _, _ io.Writer) error {
	return errors.New("monitor: not built yet")
}
