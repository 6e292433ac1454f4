package rules

import (
	"fmt"

	"github.com/expr-lang/expr/ast"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// MaxEvalAlloc bounds what one evaluation of an expression may allocate,
// as estimated when the rules load. expr's own memory budget counts the
// elements of ranges and the bytes of repeat (after making them), not
// strings built with +, replace or join: fourteen lets doubling a string
// of 1,000 bytes allocate 32 MB on every event, and forty never end. An
// expression whose estimate exceeds this is refused; a rule needs a few
// kilobytes.
const MaxEvalAlloc = 4 << 20

const (
	// inputMax bounds a value the environment gives an expression: the
	// whole event is at most uevent.MaxMessageSize bytes; attributes,
	// labels and paths are shorter.
	inputMax = uevent.MaxMessageSize
	// rangeMax is the most elements a range with bounds that are not
	// literals may have: expr's budget stops the evaluation beyond.
	rangeMax = 1_000_000
	// reduceMax is how many steps of a reduce whose accumulator keeps
	// growing are followed before the expression is refused.
	reduceMax = 10_000
	// satMax is where estimates stop growing, far above any limit.
	satMax = 1 << 53
	// Bytes per element of an array and per entry of a map.
	elemCost, entryCost = 16, 48
	// regexpCost is what a regular expression compiled per event (matches
	// with a pattern that is not a literal) may take per byte of source:
	// "a{1000}" is 7 bytes and a thousand instructions of 40 bytes.
	regexpCost = 8 << 10
)

// size bounds a value: n is the length of a string in bytes, or the
// number of elements of an array or entries of a map; elem bounds each
// element (nil for strings and scalars); text bounds the length of the
// whole value as text (string, toJSON), escapes aside.
type size struct {
	n    int64
	elem *size
	text int64
}

func (s size) textLen() int64 {
	if s.elem == nil {
		return sat(s.n + 24) // a string, or a number, bool or time as text
	}
	return s.text
}

func arrayOf(n int64, elem size) size {
	return size{n: n, elem: &elem, text: sat(mul(n, elem.textLen()+2) + 2)}
}

// widest bounds a value that is either a or b.
func widest(a, b size) size {
	out := size{n: max(a.n, b.n), elem: a.elem, text: max(a.textLen(), b.textLen())}
	switch {
	case a.elem == nil && b.elem == nil:
		out.text = 0
	case a.elem == nil:
		out.elem = b.elem
	case b.elem != nil && a.elem != b.elem:
		e := widest(*a.elem, *b.elem)
		out.elem = &e
	}
	return out
}

// sat saturates an estimate at satMax (negative values are overflows).
func sat(n int64) int64 {
	if n < 0 || n > satMax {
		return satMax
	}
	return n
}

func mul(a, b int64) int64 {
	if a != 0 && b > satMax/a {
		return satMax
	}
	return sat(a * b)
}

// budget estimates, from the tree as parsed, the most one evaluation of
// an expression allocates: each node that builds a string, an array or a
// map counts the largest it can make, times the iterations of the loops
// around it. Values from the environment are at most inputMax.
type budget struct {
	input    *size           // any value of the environment
	vars     map[string]size // lets in scope
	cur, acc size            // # and #acc
	mult     int64           // iterations of the enclosing loops
	total    int64
	problem  *exprProblem
}

// checkAlloc returns a problem when the expression at n may allocate
// more than MaxEvalAlloc in one evaluation.
func checkAlloc(n ast.Node) *exprProblem {
	in := &size{n: inputMax, text: 4 * inputMax}
	in.elem = in
	b := budget{input: in, vars: map[string]size{}, mult: 1}
	b.of(n)
	return b.problem
}

// charge counts bytes allocated by n, on each iteration of the loops
// around it.
func (b *budget) charge(n ast.Node, bytes int64) {
	b.add(n, mul(bytes, b.mult))
}

func (b *budget) add(n ast.Node, bytes int64) {
	b.total = sat(b.total + bytes)
	if b.total > MaxEvalAlloc && b.problem == nil {
		b.problem = &exprProblem{n.Location().From, fmt.Sprintf(
			"expression may allocate more than %d MiB for one event (%s)", MaxEvalAlloc>>20, amount(bytes))}
	}
}

func amount(n int64) string {
	switch {
	case n >= satMax:
		return "without bound here"
	case n >= 1<<20:
		return fmt.Sprintf("up to %.1f MiB here", float64(n)/(1<<20))
	}
	return fmt.Sprintf("up to %d bytes here", n)
}

func (b *budget) refuse(n ast.Node, msg string) {
	if b.problem == nil {
		b.problem = &exprProblem{n.Location().From, msg}
	}
}

// of returns the bound of n's value, counting what n allocates.
func (b *budget) of(n ast.Node) size {
	if b.problem != nil || n == nil {
		return size{}
	}
	switch n := n.(type) {
	case *ast.StringNode:
		return size{n: int64(len(n.Value))}
	case *ast.BytesNode:
		return size{n: int64(len(n.Value))}
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.NilNode:
		return size{}
	case *ast.IdentifierNode:
		if v, ok := b.vars[n.Value]; ok {
			return v
		}
		return *b.input
	case *ast.PointerNode:
		switch n.Name {
		case "":
			return b.cur
		case "acc":
			return b.acc
		}
		return size{}
	case *ast.UnaryNode:
		b.of(n.Node)
		return size{}
	case *ast.BinaryNode:
		return b.binary(n)
	case *ast.ChainNode:
		return b.of(n.Node)
	case *ast.PredicateNode:
		return b.of(n.Node)
	}
	return b.compound(n)
}

// compound is of for the nodes that hold others.
func (b *budget) compound(n ast.Node) size {
	switch n := n.(type) {
	case *ast.MemberNode:
		base := b.of(n.Node)
		b.of(n.Property)
		return elemOf(base)
	case *ast.SliceNode:
		v := b.of(n.Node)
		b.of(n.From)
		b.of(n.To)
		return v
	case *ast.ConditionalNode:
		b.of(n.Cond)
		return widest(b.of(n.Exp1), b.of(n.Exp2))
	case *ast.VariableDeclaratorNode:
		v := b.of(n.Value)
		old, had := b.vars[n.Name]
		b.vars[n.Name] = v
		out := b.of(n.Expr)
		if had {
			b.vars[n.Name] = old
		} else {
			delete(b.vars, n.Name)
		}
		return out
	case *ast.SequenceNode:
		var v size
		for _, x := range n.Nodes {
			v = b.of(x)
		}
		return v
	case *ast.ArrayNode:
		var el size
		for _, x := range n.Nodes {
			el = widest(el, b.of(x))
		}
		b.charge(n, elemCost*int64(len(n.Nodes)))
		return arrayOf(int64(len(n.Nodes)), el)
	case *ast.MapNode:
		var el size
		for _, p := range n.Pairs {
			if p, ok := p.(*ast.PairNode); ok {
				b.of(p.Key)
				el = widest(el, b.of(p.Value))
			}
		}
		b.charge(n, entryCost*int64(len(n.Pairs)))
		return arrayOf(int64(len(n.Pairs)), el)
	case *ast.CallNode:
		for _, x := range n.Arguments {
			b.of(x)
		}
		if id, ok := n.Callee.(*ast.IdentifierNode); ok && (id.Value == funcGlob || id.Value == funcParent) {
			return size{}
		}
		b.charge(n, inputMax) // attr, attrs: a sysfs value, at most 4 KiB
		return size{n: inputMax}
	case *ast.BuiltinNode:
		return b.builtin(n)
	}
	b.refuse(n, "cannot tell how much memory this part of the expression takes")
	return size{}
}

func elemOf(v size) size {
	if v.elem != nil {
		return *v.elem
	}
	return size{n: v.n} // a character of a string
}

func (b *budget) binary(n *ast.BinaryNode) size {
	l, r := b.of(n.Left), b.of(n.Right)
	switch n.Operator {
	case "+":
		s := size{n: sat(l.n + r.n)}
		b.charge(n, s.n)
		return s
	case "??":
		return widest(l, r)
	case "..":
		count := int64(rangeMax)
		lo, ok1 := intLit(n.Left)
		hi, ok2 := intLit(n.Right)
		if ok1 && ok2 {
			count = max(hi-lo+1, 0)
		}
		b.charge(n, mul(8, count))
		return arrayOf(count, size{})
	case "matches":
		if _, lit := n.Right.(*ast.StringNode); !lit {
			b.charge(n, mul(regexpCost, r.n))
		}
	}
	return size{}
}

func intLit(n ast.Node) (int64, bool) {
	switch n := n.(type) {
	case *ast.IntegerNode:
		return int64(n.Value), true
	case *ast.UnaryNode:
		if v, ok := intLit(n.Node); ok && n.Operator == "-" {
			return -v, true
		}
	}
	return 0, false
}

// arg is the i-th argument of n, or nil.
func arg(n *ast.BuiltinNode, i int) ast.Node {
	if i < len(n.Arguments) {
		return n.Arguments[i]
	}
	return nil
}

// isLoop reports the builtins that run a predicate over an array.
func isLoop(name string) bool {
	switch name {
	case "all", "none", "any", "one", "filter", "map", "find", "findIndex", "findLast", "findLastIndex",
		"count", "sum", "groupBy", "sortBy", "reduce":
		return true
	}
	return false
}

// loop is of for a builtin running a predicate over an array.
func (b *budget) loop(n *ast.BuiltinNode) size {
	arr := b.of(arg(n, 0))
	el := elemOf(arr)
	if n.Name == "reduce" {
		return b.reduce(n, arr, el)
	}
	var body size
	if len(n.Arguments) > 1 {
		body = b.step(n.Arguments[1], el, arr.n)
	}
	for _, x := range n.Arguments[min(2, len(n.Arguments)):] {
		b.of(x)
	}
	switch n.Name {
	case "filter", "sortBy":
		b.charge(n, mul(elemCost, arr.n))
		return size{n: arr.n, elem: &el, text: arr.textLen()}
	case "map":
		b.charge(n, mul(elemCost, arr.n))
		return arrayOf(arr.n, body)
	case "groupBy":
		b.charge(n, mul(entryCost+elemCost, arr.n))
		return arrayOf(arr.n, size{n: arr.n, elem: &el, text: arr.textLen()})
	case "find", "findLast":
		return el
	}
	return size{}
}

// step evaluates a predicate with # bounded by el, times times.
func (b *budget) step(pred ast.Node, el size, times int64) size {
	cur, mult := b.cur, b.mult
	b.cur, b.mult = el, mul(b.mult, times)
	v := b.of(pred)
	b.cur, b.mult = cur, mult
	return v
}

// reduce follows the accumulator step by step while it grows: each step
// may build on the one before.
func (b *budget) reduce(n *ast.BuiltinNode, arr, el size) size {
	acc := el
	if len(n.Arguments) > 2 {
		acc = b.of(n.Arguments[2])
	}
	saved := b.acc
	defer func() { b.acc = saved }()
	for i := int64(0); i < arr.n && b.problem == nil; i++ {
		if i == reduceMax {
			b.refuse(n, "reduce's accumulator may grow on every step")
			break
		}
		b.acc = acc
		before := b.total
		next := b.step(arg(n, 1), el, 1)
		if next.n <= acc.n && (next.elem == nil || acc.elem != nil && next.elem.n <= acc.elem.n) {
			// The remaining steps cost what this one did.
			b.add(n, mul(b.total-before, arr.n-i-1))
			break
		}
		acc = widest(acc, next)
	}
	return acc
}

// builtin is of for the builtins that are not loops.
func (b *budget) builtin(n *ast.BuiltinNode) size {
	if isLoop(n.Name) {
		return b.loop(n)
	}
	args := make([]size, max(3, len(n.Arguments)))
	for i, x := range n.Arguments {
		args[i] = b.of(x)
	}
	s, el := args[0], elemOf(args[0])
	var out size
	switch n.Name {
	case "trim", "trimPrefix", "trimSuffix", "first", "last", "get", "len", "type", "abs", "ceil", "floor", "round",
		"int", "float", "indexOf", "lastIndexOf", "hasPrefix", "hasSuffix", "max", "min", "mean", "median",
		"now", "duration", "date", "timezone", "bitand", "bitor", "bitxor", "bitnand", "bitnot", "bitshl",
		"bitshr", "bitushr":
		return b.scalar(n.Name, s, el) // no more than their arguments
	case "upper", "lower": // invalid UTF-8 becomes U+FFFD, three bytes
		out = size{n: mul(3, s.n)}
	case "string":
		out = size{n: s.textLen()}
	case "toJSON":
		out = size{n: mul(6, s.textLen())}
	case "toBase64":
		out = size{n: sat(s.n/3*4 + 4)}
	case "fromBase64":
		out = size{n: s.n}
	case "fromJSON":
		b.charge(n, mul(entryCost, s.n))
		return size{n: s.n, elem: b.input, text: s.n}
	case "split", "splitAfter":
		b.charge(n, mul(elemCost, s.n+1))
		return size{n: s.n + 1, elem: &size{n: s.n}, text: sat(3*s.n + 4)}
	case "replace":
		out = size{n: sat(s.n + mul(replacements(n, s), args[2].n))}
	case "repeat":
		count := int64(1e6) // repeat's own limit
		if c, ok := intLit(arg(n, 1)); ok {
			count = max(c, 0)
		}
		out = size{n: mul(s.n, count)}
	case "join":
		out = size{n: sat(s.textLen() + mul(s.n, args[1].n))}
	default:
		return b.collection(n, args)
	}
	b.charge(n, out.n)
	return out
}

// replacements bounds how many times replace(s, old, ...) replaces.
func replacements(n *ast.BuiltinNode, s size) int64 {
	if old, ok := arg(n, 1).(*ast.StringNode); ok && old.Value != "" {
		return s.n / int64(len(old.Value))
	}
	return s.n + 1 // "" matches between every two runes
}

// scalar bounds builtins that build nothing larger than their arguments.
func (b *budget) scalar(name string, s, el size) size {
	switch name {
	case "trim", "trimPrefix", "trimSuffix":
		return size{n: s.n}
	case "first", "last", "get":
		return el
	case "type":
		return size{n: 16}
	}
	return size{}
}

// collection is builtin for those that make arrays and maps of others.
func (b *budget) collection(n *ast.BuiltinNode, args []size) size {
	s, el := args[0], elemOf(args[0])
	var out size
	switch n.Name {
	case "keys":
		out = size{n: s.n, elem: &size{n: inputMax}, text: s.textLen()}
	case "values", "sort", "reverse", "uniq", "take":
		out = size{n: s.n, elem: &el, text: s.textLen()}
	case "toPairs":
		out = arrayOf(s.n, arrayOf(2, widest(el, size{n: inputMax})))
	case "fromPairs":
		v := elemOf(el)
		out = size{n: s.n, elem: &v, text: s.textLen()}
	case "concat":
		for _, a := range args[:len(n.Arguments)] {
			out = widest(out, a)
		}
		out.n, out.text = 0, 2
		for _, a := range args[:len(n.Arguments)] {
			out.n, out.text = sat(out.n+a.n), sat(out.text+a.textLen())
		}
	case "flatten":
		inner := elemOf(el)
		out = arrayOf(mul(s.n, max(el.n, 1)), inner)
	default:
		b.refuse(n, fmt.Sprintf("cannot tell how much memory %s() takes", n.Name))
		return size{}
	}
	b.charge(n, mul(entryCost, out.n))
	return out
}
