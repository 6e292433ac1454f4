//go:build !linux

package run

import (
	"context"
	"errors"
	"fmt"
	"runtime"
)

// run needs process groups, credentials and waitid(2) as Linux has them.
func (r *Runner) run(ctx context.Context, req *RunRequest, path string, env []string, out *runOutput) (RunResult, error) {
	return RunResult{ExitCode: -1}, fmt.Errorf("run %s: %w on %s", path, errors.ErrUnsupported, runtime.GOOS)
}
