//go:build !unix

package keyfile

import (
	"errors"
	"io/fs"
	"os"
)

// errUnsupported: files have no unix owner here to check.
var errUnsupported = errors.New("keyfiles are only supported on unix")

// Check fails where files have no unix owner.
func Check(string) error { return errUnsupported }

// Open fails where files have no unix owner.
func Open(string) (*os.File, error) { return nil, errUnsupported }

func owner(fs.FileInfo) (int, bool) { return -1, false }
