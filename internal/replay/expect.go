package replay

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Expect is what one event should do: the rules it matches and,
// optionally, its actions. It names its event by Index (from 1) or by
// Seqnum; Action and DevPath, when given, must agree with the event.
type Expect struct {
	Index   int             `yaml:"index,omitempty"`
	Seqnum  uint64          `yaml:"seqnum,omitempty"`
	Action  string          `yaml:"action,omitempty"`
	DevPath string          `yaml:"devpath,omitempty"`
	Rules   []string        `yaml:"rules,flow"`
	Actions *[]ExpectAction `yaml:"actions,omitempty"` // nil: not compared

	line int
}

// ExpectAction is one action an event should run. Kind and Rule ("" for
// the unmount that follows a removal) are compared always, Error always
// (none when absent), Argv, MountPath and Message when given.
type ExpectAction struct {
	Rule      string   `yaml:"rule,omitempty"`
	Kind      string   `yaml:"kind"`
	Argv      []string `yaml:"argv,omitempty,flow"`
	MountPath *string  `yaml:"mount_path,omitempty"`
	Message   *string  `yaml:"message,omitempty"`
	Error     string   `yaml:"error,omitempty"`
}

// The keys each mapping may have: anything else is an error, as in a
// rules file.
var (
	fileKeys   = []string{"events"}
	expectKeys = []string{"index", "seqnum", "action", "devpath", "rules", "actions"}
	actionKeys = []string{"rule", "kind", "argv", "mount_path", "message", "error"}
)

// UnmarshalYAML decodes an expectation strictly.
func (e *Expect) UnmarshalYAML(n *yaml.Node) error {
	if err := checkKeys(n, "an event's expectation", expectKeys, "rules"); err != nil {
		return err
	}
	type plain Expect
	var p plain
	if err := n.Decode(&p); err != nil {
		return err
	}
	if p.Actions != nil {
		for i, a := range n.Content {
			if a.Value == "actions" {
				if err := checkActions(n.Content[i+1]); err != nil {
					return err
				}
			}
		}
	}
	*e = Expect(p)
	e.line = n.Line
	switch {
	case (e.Index == 0) == (e.Seqnum == 0):
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: give the event's index (from 1) or its seqnum", n.Line)}}
	case e.Index < 0:
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: index %d: events count from 1", n.Line, e.Index)}}
	}
	return nil
}

func checkActions(seq *yaml.Node) error {
	if seq.Kind != yaml.SequenceNode {
		return nil // Decode has said what is wrong
	}
	for _, a := range seq.Content {
		if err := checkKeys(a, "an action", actionKeys, "kind"); err != nil {
			return err
		}
	}
	return nil
}

// checkKeys reports a key of mapping n that is not allowed, or a
// required one missing, at its line.
func checkKeys(n *yaml.Node, what string, allowed []string, required ...string) error {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := n.Content[i]
		if !slices.Contains(allowed, k.Value) {
			return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: unknown field %q in %s (known: %s)",
				k.Line, k.Value, what, strings.Join(allowed, ", "))}}
		}
	}
	for _, r := range required {
		if !slices.ContainsFunc(n.Content, func(k *yaml.Node) bool { return k.Value == r }) {
			return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s needs %s", n.Line, what, r)}}
		}
	}
	return nil
}

// expectFile is the document of an expectations file.
type expectFile struct {
	Events []*Expect `yaml:"events"`
}

func (f *expectFile) UnmarshalYAML(n *yaml.Node) error {
	if err := checkKeys(n, "an expectations file", fileKeys); err != nil {
		return err
	}
	type plain expectFile
	return n.Decode((*plain)(f))
}

// ReadExpectations reads the expectations file at path.
func ReadExpectations(path string) (*Expectations, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f expectFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, yamlError(path, err)
	}
	x := &Expectations{file: path, byIndex: map[int]*Expect{}, bySeqnum: map[uint64]*Expect{}, seen: map[*Expect][]Event{}}
	for _, e := range f.Events {
		if e == nil {
			continue
		}
		if prev := x.lookup(e.Index, e.Seqnum); prev != nil {
			return nil, &InputError{File: path, Line: e.line, Err: fmt.Errorf("%s has an expectation already, at line %d", e.key(), prev.line)}
		}
		if e.Index > 0 {
			x.byIndex[e.Index] = e
		} else {
			x.bySeqnum[e.Seqnum] = e
		}
		x.order = append(x.order, e)
	}
	return x, nil
}

// yamlError makes a decoding error an *InputError at its line when it
// names one ("line N: ...").
func yamlError(path string, err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.TrimPrefix(msg, "unmarshal errors:\n  ")
	var line int
	if _, serr := fmt.Sscanf(msg, "line %d:", &line); serr == nil {
		_, rest, _ := strings.Cut(msg, ": ")
		return &InputError{File: path, Line: line, Err: errors.New(strings.ReplaceAll(rest, "\n  ", "; "))}
	}
	return fmt.Errorf("%s: %s", path, msg)
}

func (e *Expect) key() string {
	if e.Index > 0 {
		return fmt.Sprintf("event %d", e.Index)
	}
	return fmt.Sprintf("seqnum %d", e.Seqnum)
}

// header returns the comment lines a file starts with, which an update
// keeps.
func header(b []byte) []byte {
	var out []byte
	for len(b) > 0 {
		line, rest, _ := bytes.Cut(b, []byte("\n"))
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			break
		}
		out, b = append(append(out, line...), '\n'), rest
	}
	return out
}
