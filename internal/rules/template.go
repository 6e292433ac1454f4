package rules

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/expr-lang/expr/vm"
)

// MaxRendered bounds the text one Template renders, in bytes.
const MaxRendered = 64 << 10

// Template is an action string with {{ EXPR }} substitutions, compiled
// when the rules load with the environment of match. A substituted value
// is data: Render returns plain text that the caller uses as one argv
// element, one header-free JSON string or one notification body, never
// anything a shell or a format string sees.
type Template struct {
	src   string
	parts []tmplPart
	needs needs
}

type tmplPart struct {
	lit  string      // literal text, when prog is nil
	prog *vm.Program // an expression
}

// String returns the template as written.
func (t *Template) String() string { return t.src }

// IsLiteral reports whether the template has no {{ }}.
func (t *Template) IsLiteral() bool {
	for _, p := range t.parts {
		if p.prog != nil {
			return false
		}
	}
	return true
}

// Render evaluates the template in env.
func (t *Template) Render(env *Env) (string, error) {
	if t.IsLiteral() {
		return t.src, nil
	}
	env.load(t.needs)
	var b strings.Builder
	var m vm.VM
	for _, p := range t.parts {
		if p.prog == nil {
			b.WriteString(p.lit)
			continue
		}
		out, err := m.Run(p.prog, env.m)
		if err != nil {
			return "", fmt.Errorf("{{ %s }}: %w", strings.TrimSpace(p.prog.Source().String()), runtimeErr(err))
		}
		if err := writeValue(&b, out); err != nil {
			return "", fmt.Errorf("{{ %s }}: %w", strings.TrimSpace(p.prog.Source().String()), err)
		}
		if b.Len() > MaxRendered {
			return "", fmt.Errorf("template renders more than %d bytes", MaxRendered)
		}
	}
	return b.String(), nil
}

func writeValue(b *strings.Builder, v any) error {
	switch v := v.(type) {
	case nil:
	case string:
		b.WriteString(v)
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case int:
		b.WriteString(strconv.Itoa(v))
	case int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		fmt.Fprint(b, v)
	case float32:
		b.WriteString(strconv.FormatFloat(float64(v), 'g', -1, 32))
	case float64:
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
	default:
		return fmt.Errorf("cannot render a %T as text", v)
	}
	return nil
}

// tmplProblem is a template error at a byte offset of its source.
type tmplProblem struct {
	off int
	msg string
}

// compileTemplate splits src at {{ }} and compiles each expression.
func compileTemplate(src string) (*Template, compiled, []tmplProblem) {
	t := &Template{src: src}
	var info compiled // what the expressions read, merged
	info.readMount, info.readUnlock = -1, -1
	var probs []tmplProblem
	rest, off := src, 0
	for rest != "" {
		i := strings.Index(rest, "{{")
		lit := rest
		if i >= 0 {
			lit = rest[:i]
		}
		if j := strings.Index(lit, "}}"); j >= 0 {
			probs = append(probs, tmplProblem{off + j, `"}}" without "{{" (write {{ "}}" }} for the text "}}")`})
		}
		if lit != "" {
			t.parts = append(t.parts, tmplPart{lit: lit})
		}
		if i < 0 {
			break
		}
		start := off + i
		body := rest[i+2:]
		end, ok := exprEnd(body)
		if !ok {
			probs = append(probs, tmplProblem{start, `"{{" without "}}"`})
			break
		}
		code := body[:end]
		codeOff := start + 2
		if strings.TrimSpace(code) == "" {
			probs = append(probs, tmplProblem{start, "empty {{ }}"})
		} else {
			c, eps := compile(code, modeTemplate)
			lead := len(code) - len(strings.TrimLeft(code, " \t\n"))
			for _, p := range eps {
				// Point at the expression, not at the space after "{{".
				o := max(runeToByte(code, p.off), lead)
				probs = append(probs, tmplProblem{codeOff + o, p.msg})
			}
			if len(eps) == 0 {
				t.parts = append(t.parts, tmplPart{prog: c.prog})
				info.needs |= c.needs
				if c.readMount >= 0 && info.readMount < 0 {
					info.readMount = codeOff + runeToByte(code, c.readMount)
				}
				if c.readUnlock >= 0 && info.readUnlock < 0 {
					info.readUnlock = codeOff + runeToByte(code, c.readUnlock)
				}
			}
		}
		off = codeOff + end + 2
		rest = src[off:]
	}
	t.needs = info.needs
	return t, info, probs
}

// exprEnd returns the index of the "}}" that closes the expression s
// starts, skipping string literals so that {{ "}}" }} works.
func exprEnd(s string) (int, bool) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\'', '`':
			j := i + 1
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(s) {
				return 0, false
			}
			i = j
		case '}':
			if i+1 < len(s) && s[i+1] == '}' {
				return i, true
			}
		}
	}
	return 0, false
}

// runeToByte converts a rune offset of s to a byte offset.
func runeToByte(s string, runes int) int {
	for i := range s {
		if runes == 0 {
			return i
		}
		runes--
	}
	return len(s)
}
