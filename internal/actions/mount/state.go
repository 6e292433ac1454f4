package mount

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// stateVersion is the version of the state file format.
const stateVersion = 1

// stateFile is the JSON document in the state file. Mappings is left
// out when there are none, so a file without any reads as before.
type stateFile struct {
	Version  int       `json:"version"`
	Mounts   []Entry   `json:"mounts"`
	Mappings []Mapping `json:"mappings,omitempty"`
}

// readStateFile reads and decodes the state file; a missing file is an
// empty state.
func readStateFile(path string) (stateFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return stateFile{Version: stateVersion}, nil
	}
	if err != nil {
		return stateFile{}, fmt.Errorf("read mount state: %w", err)
	}
	var st stateFile
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return stateFile{}, fmt.Errorf("read mount state %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return stateFile{}, fmt.Errorf("read mount state %s: version %d, want %d", path, st.Version, stateVersion)
	}
	return st, nil
}

// readState reads the mounts of the state file.
func readState(path string) (map[string]Entry, error) {
	st, err := readStateFile(path)
	if err != nil {
		return nil, err
	}
	entries := make(map[string]Entry, len(st.Mounts))
	for _, e := range st.Mounts {
		if err := checkEntry(e); err != nil {
			return nil, fmt.Errorf("read mount state %s: %w", path, err)
		}
		entries[e.Device.DevNum()] = e
	}
	return entries, nil
}

// checkEntry refuses entries cleanup must not act on: the state file is
// root's, but a mount point it names is unmounted and rmdir'ed, so it must
// be a clean absolute path whose last component is a plain name.
func checkEntry(e Entry) error {
	mp := e.MountPoint
	name := filepath.Base(mp)
	if !filepath.IsAbs(mp) || filepath.Clean(mp) != mp || mp == "/" ||
		name == "." || name == ".." || strings.ContainsRune(mp, 0) {
		return fmt.Errorf("entry %s: bad mount point %q", e.Device.DevNum(), mp)
	}
	return nil
}

// readMappings reads the mappings of the state file, by name.
func readMappings(path string) (map[string]Mapping, error) {
	st, err := readStateFile(path)
	if err != nil {
		return nil, err
	}
	mappings := make(map[string]Mapping, len(st.Mappings))
	for _, mp := range st.Mappings {
		if err := checkMappingName(mp.Name); err != nil {
			return nil, fmt.Errorf("read mount state %s: %w", path, err)
		}
		mappings[mp.Name] = mp
	}
	return mappings, nil
}

// writeStateFile replaces the state file atomically: a temporary file in
// the same directory, written, fsynced, renamed over the old one, then
// the directory fsynced so the rename itself is durable. The file is
// 0600.
func writeStateFile(path string, entries map[string]Entry, mappings map[string]Mapping) error {
	st := stateFile{Version: stateVersion, Mounts: sortedEntries(entries), Mappings: sortedMappings(mappings)}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("write mount state: %w", err)
	}
	b = append(b, '\n')
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write mount state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*") // mode 0600
	if err != nil {
		return fmt.Errorf("write mount state: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename: ENOENT, ignored
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write mount state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write mount state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write mount state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write mount state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write mount state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write mount state: fsync %s: %w", dir, err)
	}
	return nil
}

// sortedEntries returns the entries ordered by mount point, then device.
func sortedEntries(entries map[string]Entry) []Entry {
	out := make([]Entry, 0, len(entries))
	for _, e := range entries {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		if c := strings.Compare(a.MountPoint, b.MountPoint); c != 0 {
			return c
		}
		return strings.Compare(a.Device.DevNum(), b.Device.DevNum())
	})
	return out
}
