package rules

import (
	"reflect"

	"github.com/expr-lang/expr/ast"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// The names of the expression environment (hotplugd.rules(5), EXPRESSIONS).
const (
	varAction    = "action"
	varSubsystem = "subsystem"
	varDevType   = "devtype"
	varDevPath   = "devpath"
	varDevName   = "devname"
	varDevNode   = "devnode"
	varSeqnum    = "seqnum"
	varSource    = "source"
	varEnv       = "env"
	varFS        = "fs"
	varMount     = "mount"
	varUnlock    = "unlock"
	funcAttr     = "attr"
	funcAttrs    = "attrs"
	funcParent   = "has_parent"
	funcGlob     = "glob"
)

// envTypes is the environment expressions compile against: each name
// with a value of its type, so expr checks types at load time.
//
// It is a map rather than a struct because expr loads a name from a
// map[string]any with one map lookup of an already boxed value, where a
// struct field costs reflection and an allocation on every read; with
// 100 rules per event that is the difference between meeting the match
// budget and missing it several times over.
func envTypes() map[string]any {
	return map[string]any{
		varAction:    "",
		varSubsystem: "",
		varDevType:   "",
		varDevPath:   "",
		varDevName:   "",
		varDevNode:   "",
		varSeqnum:    0,
		varSource:    "",
		varEnv:       map[string]string(nil),
		varFS:        uevent.FS{},
		varMount:     mountVars{},
		varUnlock:    unlockVars{},
		funcAttr:     (func(string) string)(nil),
		funcAttrs:    (func(string) string)(nil),
		funcParent:   (func(string, string) bool)(nil),
		funcGlob:     (func(string, string) bool)(nil),
	}
}

type mountVars struct {
	Path string `expr:"path"`
}

type unlockVars struct {
	Device string `expr:"device"`
}

// needs is what a program reads that is costly to provide, so an Env
// provides it only for programs that read it.
type needs uint8

const (
	needVars needs = 1 << iota // the event's fields: a few allocations per event
	needEnv                    // the env map: one map per event
	needFS                     // fs.*: may probe the device
)

// Env is the expression environment of one event: what match expressions
// and {{ }} templates read. The env map and the filesystem are filled in
// the first time a program that reads them runs.
//
// An Env is not safe for concurrent use.
type Env struct {
	m     map[string]any    // what programs read, by name
	props map[string]string // env, reused across events
	ev    *uevent.Event
	dev   Device
	have  needs
}

// NewEnv returns the environment of ev. dev answers attr, attrs,
// has_parent and fs.*; nil means EventOnly{ev}.
func NewEnv(ev *uevent.Event, dev Device) *Env {
	e := newEnv()
	e.reset(ev, dev)
	return e
}

// SetMountPath sets mount.path for the templates of the actions that
// follow a mount (or unmount) action.
func (e *Env) SetMountPath(path string) { e.m[varMount] = mountVars{Path: path} }

// SetUnlockDevice sets unlock.device, the cleartext device, for the
// templates of the actions that follow an unlock action.
func (e *Env) SetUnlockDevice(dev string) { e.m[varUnlock] = unlockVars{Device: dev} }

// noMount, noUnlock and noFS are what mount, unlock and fs read before
// they are set, boxed once so that resetting an Env allocates nothing for
// them.
var (
	noMount  any = mountVars{}
	noUnlock any = unlockVars{}
	noFS     any = uevent.FS{}
)

func newEnv() *Env {
	e := &Env{m: envTypes()}
	e.m[funcAttr] = e.attr
	e.m[funcAttrs] = e.attrs
	e.m[funcParent] = e.hasParent
	e.m[funcGlob] = glob
	return e
}

func (e *Env) reset(ev *uevent.Event, dev Device) {
	if dev == nil {
		dev = EventOnly{Event: ev}
	}
	e.ev, e.dev, e.have = ev, dev, 0
	e.m[varMount] = noMount
	e.m[varUnlock] = noUnlock
}

// release drops the references to the event and device so a pooled Env
// does not keep them alive.
func (e *Env) release() {
	e.ev, e.dev = nil, nil
	clear(e.props)
	e.m[varFS] = noFS
}

// load provides what n needs and the Env does not have yet.
func (e *Env) load(n needs) {
	missing := n &^ e.have
	if missing == 0 {
		return
	}
	if missing&needVars != 0 {
		// Boxing the strings costs an allocation each, so an event that
		// the pre-filter keeps from every rule does not pay it.
		ev := e.ev
		e.m[varAction] = ev.Action
		e.m[varSubsystem] = ev.Subsystem
		e.m[varDevType] = ev.DevType
		e.m[varDevPath] = ev.DevPath
		e.m[varDevName] = ev.DevName
		e.m[varDevNode] = e.dev.DevNode()
		e.m[varSeqnum] = int(ev.Seqnum)
		e.m[varSource] = string(ev.Source)
	}
	if missing&needEnv != 0 {
		if e.props == nil {
			e.props = make(map[string]string, len(e.ev.Props))
		} else {
			clear(e.props)
		}
		for _, p := range e.ev.Props {
			e.props[p.Key] = p.Value
		}
		e.m[varEnv] = e.props
	}
	if missing&needFS != 0 {
		e.m[varFS] = e.dev.FS()
	}
	e.have |= missing
}

func (e *Env) attr(name string) string  { return e.dev.Attr(name) }
func (e *Env) attrs(name string) string { return e.dev.Attrs(name) }
func (e *Env) hasParent(subsystem, devtype string) bool {
	return e.dev.HasParent(subsystem, devtype)
}

// hasParentArity makes the optional devtype of has_parent explicit, so
// the function has one fixed, fast signature: has_parent("usb") becomes
// has_parent("usb", "").
type hasParentArity struct{}

func (hasParentArity) Visit(n *ast.Node) {
	c, ok := (*n).(*ast.CallNode)
	if !ok || len(c.Arguments) != 1 {
		return
	}
	if id, ok := c.Callee.(*ast.IdentifierNode); ok && id.Value == "has_parent" {
		s := &ast.StringNode{Value: ""}
		s.SetLocation(c.Location())
		c.Arguments = append(c.Arguments, s)
	}
}

// missingIsEmpty keeps the promise that a missing value is "" and never
// an error: it runs after type checking has annotated the tree.
//
//   - env?.KEY on a missing key is nil in expr, which then fails a string
//     comparison at run time; env is never nil here, so the "?" is
//     dropped and a missing key reads as "".
//   - x ?? y on a string x yields y when x is "" (expr's ?? only tests
//     nil, which a string never is), so `fs.label ?? devname` works as
//     the example of hotplugd.rules(5) intends.
type missingIsEmpty struct{}

func (missingIsEmpty) Visit(n *ast.Node) {
	switch x := (*n).(type) {
	case *ast.MemberNode:
		if t := x.Node.Type(); t != nil && t.Kind() == reflect.Map {
			x.Optional = false
		}
	case *ast.BinaryNode:
		if x.Operator != "??" {
			return
		}
		if t := x.Left.Type(); t == nil || t.Kind() != reflect.String {
			return
		}
		cond := &ast.BinaryNode{Operator: "!=", Left: x.Left, Right: &ast.StringNode{Value: ""}}
		cond.SetLocation(x.Location())
		c := &ast.ConditionalNode{Ternary: true, Cond: cond, Exp1: x.Left, Exp2: x.Right}
		c.SetLocation(x.Location())
		ast.Patch(n, c)
	}
}
