package replay

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"
)

// defaultHeader starts an expectations file that had no comment.
const defaultHeader = "# What the rules do with a recorded sequence of events: hotplugd test\n" +
	"# --replay EVENTS --expect THIS_FILE compares, --update rewrites it.\n" +
	"# Events not listed match no rule and do nothing.\n"

// Updater makes an expectations file of what the rules do now: every
// event that matches a rule or runs an action, by seqnum when no other
// event has the same, else by index.
type Updater struct {
	outcomes []Outcome
	seqnums  map[uint64]int
}

// NewUpdater returns an empty Updater.
func NewUpdater() *Updater { return &Updater{seqnums: map[uint64]int{}} }

// Add takes the outcome of the next event.
func (u *Updater) Add(o Outcome) {
	u.seqnums[o.Rec.Event.Seqnum]++
	if len(o.Matched) > 0 || len(o.Steps) > 0 {
		u.outcomes = append(u.outcomes, o)
	}
}

// Events returns how many events the file lists.
func (u *Updater) Events() int { return len(u.outcomes) }

// Write writes the file at path, keeping the comment the old one started
// with, through a temporary file renamed over it.
func (u *Updater) Write(path string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	head := header(old)
	if len(bytes.TrimSpace(head)) == 0 {
		head = []byte(defaultHeader)
	}
	var f expectFile
	for _, o := range u.outcomes {
		e := &Expect{Action: o.Rec.Event.Action, DevPath: o.Rec.Event.DevPath, Rules: ruleNames(&o), Actions: &[]ExpectAction{}}
		if s := o.Rec.Event.Seqnum; s != 0 && u.seqnums[s] == 1 {
			e.Seqnum = s
		} else {
			e.Index = o.Index
		}
		for _, st := range o.Steps {
			*e.Actions = append(*e.Actions, stepExpect(st))
		}
		f.Events = append(f.Events, e)
	}
	var b bytes.Buffer
	b.Write(head)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(f); err != nil {
		return err
	}
	if err := enc.Close(); err != nil {
		return err
	}
	return writeFile(path, b.Bytes())
}

// writeFile replaces path with data atomically.
func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
