package replay

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Expectations are the expectations of one file, checked against the
// outcomes of a replay one by one, in order.
type Expectations struct {
	file     string
	order    []*Expect
	byIndex  map[int]*Expect
	bySeqnum map[uint64]*Expect
	seen     map[*Expect][]Event // the events each expectation was checked against
}

func (x *Expectations) lookup(index int, seqnum uint64) *Expect {
	if e, ok := x.byIndex[index]; ok {
		return e
	}
	if seqnum == 0 {
		return nil
	}
	return x.bySeqnum[seqnum]
}

// Diff is an event whose outcome differs from its expectation.
type Diff struct {
	Where string   // the event, and the expectation's line
	Lines []string // "-want", "+got" and " same" lines
}

func (d *Diff) String() string {
	return d.Where + " differs (-want +got):\n" + strings.Join(d.Lines, "\n") + "\n\n"
}

// Check compares an outcome with its expectation (none: no rules and no
// actions) and returns how they differ, or nil when they agree.
func (x *Expectations) Check(o *Outcome) *Diff {
	e := x.lookup(o.Index, o.Rec.Event.Seqnum)
	if e == nil {
		e = &Expect{Actions: &[]ExpectAction{}}
	} else {
		x.seen[e] = append(x.seen[e], o.Event)
	}
	want, got := e.lines(nil), e.lines(o)
	if slices.Equal(want, got) {
		return nil
	}
	where := fmt.Sprintf("event %d (%s:%d, seqnum %d, %s %s)", o.Index, o.File, o.Line, o.Rec.Event.Seqnum, o.Rec.Event.Action, o.Rec.Event.DevPath)
	if e.line > 0 {
		where = fmt.Sprintf("%s:%d: %s", x.file, e.line, where)
	} else {
		where = fmt.Sprintf("%s: %s, which it does not list (want no rules)", x.file, where)
	}
	return &Diff{Where: where, Lines: lineDiff(want, got)}
}

// Finish reports an expectation no event had, or one by seqnum that
// more than one event has: the file is not of this recording.
func (x *Expectations) Finish() error {
	for _, e := range x.order {
		switch evs := x.seen[e]; {
		case len(evs) == 0:
			return &InputError{File: x.file, Line: e.line, Err: fmt.Errorf("no %s in the recording", e.key())}
		case len(evs) > 1:
			return &InputError{File: x.file, Line: e.line, Err: fmt.Errorf("%s is not unique in the recording (events %d and %d): name the event by index",
				e.key(), evs[0].Index, evs[1].Index)}
		}
	}
	return nil
}

// lines renders what e expects, or with o what o did, as far as e
// compares it: one line for the event when e names it, one for the
// rules, one per action.
func (e *Expect) lines(o *Outcome) []string {
	var out []string
	action, devpath, rules := e.Action, e.DevPath, e.Rules
	if o != nil {
		action, devpath, rules = o.Rec.Event.Action, o.Rec.Event.DevPath, ruleNames(o)
	}
	if e.Action != "" || e.DevPath != "" {
		out = append(out, "event: "+orAny(action, e.Action)+" "+orAny(devpath, e.DevPath))
	}
	out = append(out, "rules: ["+strings.Join(rules, ", ")+"]")
	if e.Actions == nil {
		return out
	}
	if o == nil {
		for _, a := range *e.Actions {
			out = append(out, a.line(&a))
		}
		return out
	}
	for i, st := range o.Steps {
		got := stepExpect(st)
		var as *ExpectAction // what the wanted action in its place compares, if it is one of the same rule and kind
		if i < len(*e.Actions) && (*e.Actions)[i].Kind == got.Kind && (*e.Actions)[i].Rule == got.Rule {
			as = &(*e.Actions)[i]
		}
		out = append(out, got.line(as))
	}
	return out
}

// orAny is got where want asks about it, else "*".
func orAny(got, want string) string {
	if want == "" {
		return "*"
	}
	return got
}

// line renders a, with the fields that want compares.
func (a *ExpectAction) line(want *ExpectAction) string {
	rule := a.Rule
	if rule == "" {
		rule = "(removal)"
	}
	s := rule + " " + a.Kind
	if want == nil || want.Argv != nil {
		if a.Argv != nil {
			s += ": argv " + quoteList(a.Argv)
		}
	}
	if (want == nil || want.MountPath != nil) && a.MountPath != nil {
		s += ": mount_path " + strconv.Quote(*a.MountPath)
	}
	if (want == nil || want.Message != nil) && a.Message != nil {
		s += ": message " + strconv.Quote(*a.Message)
	}
	if a.Error != "" {
		s += ": error " + strconv.Quote(a.Error)
	}
	return s
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = strconv.Quote(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func ruleNames(o *Outcome) []string {
	names := make([]string, len(o.Matched))
	for i, r := range o.Matched {
		names[i] = r.Name
	}
	return names
}

// stepExpect is the expectation a step meets, as an update writes it.
func stepExpect(st Step) ExpectAction {
	a := ExpectAction{Kind: st.Kind}
	if st.Rule != nil {
		a.Rule = st.Rule.Name
	}
	if st.Err != nil {
		a.Error = st.Err.Error()
	}
	switch st.Kind {
	case "run":
		a.Argv = st.Argv
		if a.Argv == nil {
			a.Argv = []string{}
		}
	case "unlock":
		a.Argv = st.Argv // the key's path is not in it: the key comes on stdin
	case "mount":
		a.MountPath = &st.MountPath
	case "unmount":
		a.MountPath = &st.MountPath
		a.Argv = st.Argv // the close of the mapping, when it closes one
	case "notify":
		a.Message = &st.Message
	}
	return a
}

// lineDiff returns the lines of want and got, each marked "-" (only in
// want), "+" (only in got) or " " (in both), in the order of a longest
// common subsequence.
func lineDiff(want, got []string) []string {
	n, m := len(want), len(got)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if want[i] == got[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && want[i] == got[j]:
			out, i, j = append(out, "  "+want[i]), i+1, j+1
		case i < n && (j == m || lcs[i+1][j] >= lcs[i][j+1]):
			out, i = append(out, "- "+want[i]), i+1
		default:
			out, j = append(out, "+ "+got[j]), j+1
		}
	}
	return out
}
