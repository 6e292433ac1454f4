package rules

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/parser"
	"github.com/expr-lang/expr/vm"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// Bounds of one expression (a match, or one {{ }} of a template).
const (
	// MaxExprLen is the longest expression source accepted, in bytes.
	MaxExprLen = 4096
	// MaxExprNodes is the AST node budget of one expression (expr's
	// MaxNodes): a rule is a handful of comparisons, so this only stops
	// generated or hostile input from making compilation slow.
	MaxExprNodes = 1000
)

// exprProblem is a compile error at a rune offset of the expression.
type exprProblem struct {
	off int
	msg string
}

// compiled is a program with what it reads.
type compiled struct {
	prog       *vm.Program
	needs      needs
	readMount  int // rune offset of the first mount.path read, or -1
	readUnlock int // rune offset of the first unlock.device read, or -1
	filter     prefilter
}

// mode is what an expression is compiled for.
type mode uint8

const (
	// modeTemplate: a {{ }} expression yielding a string, number or bool.
	modeTemplate mode = iota
	// modeMatch: a match; the conjuncts the pre-filter decides are
	// compiled as true, so the program must only run on events the
	// pre-filter lets through.
	modeMatch
	// modeMatchFull: a match compiled whole (for tests of the
	// pre-filter).
	modeMatchFull
)

// compile compiles src against the environment.
func compile(src string, m mode) (compiled, []exprProblem) {
	if len(src) > MaxExprLen {
		return compiled{}, []exprProblem{{0, fmt.Sprintf("expression is %d bytes long, limit %d", len(src), MaxExprLen)}}
	}
	// Analyse the tree as written: expr's optimizer rewrites some of the
	// shapes the pre-filter looks for.
	tree, err := parser.Parse(src)
	if err != nil {
		return compiled{}, []exprProblem{exprErr(src, err)}
	}
	c := compiled{readMount: -1, readUnlock: -1, needs: needVars}
	var decided []ast.Node
	if m != modeTemplate {
		c.filter, decided = prefilterOf(tree.Node)
	}
	opts := []expr.Option{
		expr.Env(envTypes()),
		expr.MaxNodes(MaxExprNodes),
		expr.Patch(hasParentArity{}),
		expr.Patch(missingIsEmpty{}),
	}
	if m != modeTemplate {
		opts = append(opts, expr.AsBool())
	}
	if m == modeMatch && len(decided) > 0 {
		opts = append(opts, expr.Patch(elide(decided)))
	}
	prog, err := expr.Compile(src, opts...)
	if err != nil {
		return compiled{}, []exprProblem{exprErr(src, err)}
	}
	if m == modeTemplate {
		if t := prog.Node().Type(); !renderable(t) {
			return compiled{}, []exprProblem{{0, fmt.Sprintf("expression yields %s; want a string, number or bool", t)}}
		}
	}
	if p := checkAlloc(tree.Node); p != nil {
		return compiled{}, []exprProblem{*p}
	}
	c.prog = prog
	var probs []exprProblem
	walk(tree.Node, func(n ast.Node) {
		switch n := n.(type) {
		case *ast.IdentifierNode:
			switch n.Value {
			case varEnv:
				c.needs |= needEnv
			case varFS:
				c.needs |= needFS
			case "$env":
				c.needs |= needEnv | needFS
			case varMount:
				if c.readMount < 0 {
					c.readMount = n.Location().From
				}
			case varUnlock:
				if c.readUnlock < 0 {
					c.readUnlock = n.Location().From
				}
			}
		case *ast.CallNode:
			id, ok := n.Callee.(*ast.IdentifierNode)
			if !ok || id.Value != funcGlob || len(n.Arguments) == 0 {
				return
			}
			if s, ok := n.Arguments[0].(*ast.StringNode); ok {
				if err := checkGlob(s.Value); err != nil {
					probs = append(probs, exprProblem{s.Location().From, fmt.Sprintf("glob pattern %q: %v", s.Value, err)})
				}
			}
		}
	})
	return c, probs
}

// elide replaces the conjuncts the pre-filter decides with true: on an
// event the pre-filter lets through each of them is true, so testing
// them again would only cost time (two map lookups and two string
// comparisons of nearly every rule). Nodes are recognised by operator
// position and shape in the tree expr parses from the same source.
type elide []ast.Node

func (e elide) Visit(n *ast.Node) {
	b, ok := (*n).(*ast.BinaryNode)
	if !ok {
		return
	}
	for _, d := range e {
		if d.Location() == b.Location() && d.(*ast.BinaryNode).Operator == b.Operator {
			if _, _, ok := constraint(b); ok {
				ast.Patch(n, &ast.BoolNode{Value: true})
			}
			return
		}
	}
}

// renderable reports whether a template expression of type t can be
// rendered as text; nil and interface types are checked when rendered.
func renderable(t reflect.Type) bool {
	if t == nil {
		return true
	}
	switch t.Kind() {
	case reflect.String, reflect.Bool, reflect.Interface,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// exprErr turns an expr error into a problem at its offset, with the
// message alone (expr adds a multi-line snippet that the file position
// replaces).
func exprErr(src string, err error) exprProblem {
	var fe *file.Error
	if errors.As(err, &fe) {
		if strings.Contains(fe.Message, "exceeds maximum allowed nodes") {
			return exprProblem{0, fmt.Sprintf("expression has more than %d nodes", MaxExprNodes)}
		}
		off := min(max(fe.From, 0), utf8.RuneCountInString(src))
		return exprProblem{off, strings.TrimSpace(fe.Message)}
	}
	return exprProblem{0, err.Error()}
}

// runtimeErr is the one-line message of an evaluation error.
func runtimeErr(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		return errors.New(strings.TrimSpace(fe.Message))
	}
	return err
}

// walk calls f for every node of the tree.
func walk(n ast.Node, f func(ast.Node)) {
	ast.Walk(&n, visitor(f))
}

type visitor func(ast.Node)

func (v visitor) Visit(n *ast.Node) { v(*n) }

// prefilter is what the top-level conjuncts of a match require of the
// event's action and subsystem. A nil set allows anything; an empty,
// non-nil set nothing.
type prefilter struct {
	actions    []string
	subsystems []string
	actionMask uint16 // actions as actionBits, for allows
}

// prefilterOf collects the sets from the top-level && conjuncts of n of
// the forms
//
//	action == "add"    "add" == action    action in ["add", "change"]
//	(action == "add" || action == "change")
//
// and the same for subsystem. Only conjuncts are used: when one of them
// is false the whole expression is false, so a rule whose sets exclude
// the event cannot match it. The body of a `let` at the top is the
// expression's value, so its conjuncts count too (expr refuses a let that
// would shadow action or subsystem; so does this).
//
// It also returns the conjuncts it used.
func prefilterOf(n ast.Node) (prefilter, []ast.Node) {
	var pf prefilter
	var used []ast.Node
	var conj func(ast.Node)
	conj = func(n ast.Node) {
		if b, ok := n.(*ast.BinaryNode); ok && (b.Operator == "&&" || b.Operator == "and") {
			conj(b.Left)
			conj(b.Right)
			return
		}
		if v, ok := n.(*ast.VariableDeclaratorNode); ok {
			if !filtered(v.Name) {
				conj(v.Expr)
			}
			return
		}
		name, set, ok := constraint(n)
		if !ok {
			return
		}
		switch name {
		case varAction:
			pf.actions = intersect(pf.actions, set)
		case varSubsystem:
			pf.subsystems = intersect(pf.subsystems, set)
		}
		used = append(used, n)
	}
	conj(n)
	for _, a := range pf.actions {
		pf.actionMask |= actionBit(a)
	}
	return pf, used
}

// actionBit is the bit of action a in a prefilter's actionMask: its
// index in uevent.Actions followed by uevent.RouteActions, the only
// actions an event can have; 0 for any other.
func actionBit(a string) uint16 {
	for i, x := range uevent.Actions {
		if x == a {
			return 1 << i
		}
	}
	for i, x := range uevent.RouteActions {
		if x == a {
			return 1 << (len(uevent.Actions) + i)
		}
	}
	return 0
}

// numActions is how many bits actionBit gives out.
func numActions() int { return len(uevent.Actions) + len(uevent.RouteActions) }

// actionNames lists the actions an event can have, for messages.
func actionNames() string {
	all := append(slices.Clone(uevent.Actions), uevent.RouteActions...)
	return strings.Join(all[:len(all)-1], ", ") + " or " + all[len(all)-1]
}

// unknownActions returns the actions of the pre-filter that no event
// has: a typo, which would make the rule dead.
func (pf *prefilter) unknownActions() []string {
	var out []string
	for _, a := range pf.actions {
		if actionBit(a) == 0 {
			out = append(out, a)
		}
	}
	return out
}

// constraint recognises a conjunct that limits one of the pre-filtered
// names to a set of literals.
func constraint(n ast.Node) (name string, set []string, ok bool) {
	b, isBin := n.(*ast.BinaryNode)
	if !isBin {
		return "", nil, false
	}
	switch b.Operator {
	case "==":
		if id, s, ok := identEqString(b.Left, b.Right); ok {
			return id, []string{s}, true
		}
		if id, s, ok := identEqString(b.Right, b.Left); ok {
			return id, []string{s}, true
		}
	case "in":
		id, ok := b.Left.(*ast.IdentifierNode)
		arr, ok2 := b.Right.(*ast.ArrayNode)
		if !ok || !ok2 || !filtered(id.Value) {
			return "", nil, false
		}
		set := make([]string, 0, len(arr.Nodes))
		for _, e := range arr.Nodes {
			s, ok := e.(*ast.StringNode)
			if !ok {
				return "", nil, false
			}
			set = append(set, s.Value)
		}
		return id.Value, set, true
	case "||", "or":
		ln, ls, ok1 := constraint(b.Left)
		rn, rs, ok2 := constraint(b.Right)
		if ok1 && ok2 && ln == rn {
			return ln, union(ls, rs), true
		}
	}
	return "", nil, false
}

func identEqString(l, r ast.Node) (string, string, bool) {
	id, ok := l.(*ast.IdentifierNode)
	s, ok2 := r.(*ast.StringNode)
	if !ok || !ok2 || !filtered(id.Value) {
		return "", "", false
	}
	return id.Value, s.Value, true
}

func filtered(name string) bool { return name == varAction || name == varSubsystem }

// intersect intersects set into a (nil meaning everything).
func intersect(a, set []string) []string {
	if a == nil {
		return slices.Compact(slices.Sorted(slices.Values(set)))
	}
	out := []string{}
	for _, s := range a {
		if slices.Contains(set, s) {
			out = append(out, s)
		}
	}
	return out
}

func union(a, b []string) []string {
	return slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(a), b...))))
}

// allows reports whether the pre-filter lets ev through, and if not,
// which field stopped it.
// action is the event's actionBit.
func (pf *prefilter) allows(action uint16, subsystem string) (ok bool, field string) {
	if pf.actions != nil && pf.actionMask&action == 0 {
		return false, "action"
	}
	if pf.subsystems != nil && !slices.Contains(pf.subsystems, subsystem) {
		return false, "subsystem"
	}
	return true, ""
}
