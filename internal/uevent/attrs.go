package uevent

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"unicode/utf8"
)

// Attrs are the attribute files of a device in a walk, by path. It
// decodes from JSON as a map[string]string does, only faster: a walk
// holds a hundred of them per device, and a replay reads them for every
// event.
type Attrs map[string]string

// errAttrsSyntax: UnmarshalJSON was handed what no decoder would.
var errAttrsSyntax = errors.New("attrs: malformed JSON object")

// UnmarshalJSON decodes a JSON object of strings. The keys and values
// without escapes or non-ASCII bytes become substrings of one copy of b;
// the others are decoded by encoding/json. A value that is not a string
// is an error, a repeated key keeps its last value, and invalid UTF-8
// becomes U+FFFD, as for a map[string]string. (A decoder hands it
// well-formed JSON; anything else it may reject less precisely.)
func (a *Attrs) UnmarshalJSON(b []byte) error {
	s := string(b)
	p := attrsParser{s: s}
	p.space()
	if p.i+4 <= len(s) && s[p.i:p.i+4] == "null" {
		*a = nil
		return nil
	}
	if !p.is('{') {
		return &json.UnmarshalTypeError{Value: "non-object", Type: reflect.TypeFor[Attrs](), Offset: int64(p.i)}
	}
	m := make(Attrs, countEntries(s))
	p.i++
	for p.space(); !p.is('}'); p.space() {
		key, err := p.str()
		if err != nil {
			return err
		}
		if p.space(); !p.is(':') {
			return errAttrsSyntax
		}
		p.i++
		if p.space(); !p.is('"') {
			return fmt.Errorf("attribute %q: the value is not a string", key)
		}
		if m[key], err = p.str(); err != nil {
			return err
		}
		if p.space(); p.is(',') {
			p.i++
		} else if !p.is('}') {
			return errAttrsSyntax
		}
	}
	*a = m
	return nil
}

type attrsParser struct {
	s string
	i int
}

func (p *attrsParser) is(c byte) bool { return p.i < len(p.s) && p.s[p.i] == c }

func (p *attrsParser) space() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t' || p.s[p.i] == '\n' || p.s[p.i] == '\r') {
		p.i++
	}
}

// str decodes the string at p.i, its opening quote.
func (p *attrsParser) str() (string, error) {
	if !p.is('"') {
		return "", errAttrsSyntax
	}
	start, plain := p.i, true
	for p.i++; p.i < len(p.s) && p.s[p.i] != '"'; p.i++ {
		switch c := p.s[p.i]; {
		case c == '\\':
			plain = false
			p.i++
		case c >= utf8.RuneSelf || c < 0x20:
			plain = false
		}
	}
	if p.i >= len(p.s) {
		return "", errAttrsSyntax
	}
	p.i++
	if plain {
		return p.s[start+1 : p.i-1], nil
	}
	var v string
	err := json.Unmarshal([]byte(p.s[start:p.i]), &v)
	return v, err
}

// countEntries bounds the entries of the object s: one more than its
// commas.
func countEntries(s string) int {
	n := 1
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			n++
		}
	}
	return n
}
