//go:build !unix

package device

import "errors"

func mkfifo(string) error { return errors.ErrUnsupported }
