// Package keytest makes keyfiles for tests: the keys a rules file names
// live on the machines that use it, so a test makes its own, as an
// unlock accepts them (root's, mode 0600). It needs root.
package keytest

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/hotplugd/hotplugd/internal/looptest"
)

// Key writes a keyfile holding content and returns its path.
func Key(t testing.TB, content string) string {
	t.Helper()
	looptest.Need(t, os.Geteuid() == 0, "root (a keyfile must be root's)")
	p := filepath.Join(t.TempDir(), "test.key")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// keyfileLine is a keyfile setting of a rules file, in block or flow
// style.
var keyfileLine = regexp.MustCompile(`(keyfile:\s*)("[^"]*"|'[^']*'|[^\s,}]+)`)

// Rules returns the rules file at path, or when it names keyfiles, a
// copy of it in which each is one made by Key.
func Rules(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !keyfileLine.Match(data) {
		return path
	}
	key := Key(t, "a key of the tests")
	out := filepath.Join(t.TempDir(), filepath.Base(path))
	if err := os.WriteFile(out, keyfileLine.ReplaceAll(data, []byte("${1}"+key)), 0o644); err != nil {
		t.Fatal(err)
	}
	return out
}
