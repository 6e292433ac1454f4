package rules

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Pos is a place in a rules file. Line and Col count from 1.
type Pos struct {
	File string
	Line int
	Col  int
}

func (p Pos) String() string { return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col) }

// Error is one problem in a rules file.
type Error struct {
	File string
	Line int
	Col  int
	Rule string // name of the rule the problem is in, "" outside a rule
	Msg  string
}

// Error formats the problem as "FILE:LINE:COL: rule "NAME": message", the
// format compilers use, so editors can jump to it.
func (e *Error) Error() string {
	if e.Rule != "" {
		return fmt.Sprintf("%s:%d:%d: rule %q: %s", e.File, e.Line, e.Col, e.Rule, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// Errors is every problem found in one rules file, in file order. Load and
// Parse return it (as an error) when the file is not valid.
type Errors []*Error

// Error returns one line per problem.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// Unwrap lets errors.As find each *Error.
func (es Errors) Unwrap() []error {
	errs := make([]error, len(es))
	for i, e := range es {
		errs[i] = e
	}
	return errs
}

func (es Errors) sort() {
	slices.SortStableFunc(es, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
}
