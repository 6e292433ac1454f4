package uevent

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
)

// encoding/json matches a key to a field case-insensitively, and with
// Unicode folding ("ſeqnum" is seqnum), so DisallowUnknownFields alone
// takes "ACtion" for action, and the last of "action" and "Action" wins.
// A recording is read back as `monitor --json --walk` wrote it: its keys
// must be the fields' names exactly.

// keySet is the names the object of a struct may have, each with the
// names of its value when that is a struct too (an object, an array of
// them, or null). nil: a value whose keys are not names of fields (a map
// such as env or attrs, or no object at all).
type keySet map[string]keySet

// recordingKeys are the names of a recording's object, of its fs and of
// the devices of its walk, from their json tags.
var recordingKeys = keysOf(reflect.TypeFor[jsonEvent]())

func keysOf(t reflect.Type) keySet {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return nil
	}
	ks := keySet{}
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		ks[name] = keysOf(f.Type)
	}
	return ks
}

// errKeysSyntax: checkKeys was handed what no decoder would.
var errKeysSyntax = errors.New("malformed JSON")

// checkKeys returns an error for the first key of the JSON value b that
// keys does not name exactly. b is well-formed: it was decoded already.
func checkKeys(b []byte, keys keySet) error {
	s := keyScanner{b: b}
	return s.value(keys, "")
}

// keyScanner walks a JSON value: the objects of structs key by key, the
// rest skipped.
type keyScanner struct {
	b []byte
	i int
}

// value checks the value at s.i, at path (for errors; "" at the top).
func (s *keyScanner) value(keys keySet, path string) error {
	s.space()
	switch {
	case s.is('{'):
		return s.object(keys, path)
	case s.is('['):
		return s.array(keys, path)
	case s.is('"'):
		_, err := s.str(false)
		return err
	}
	for s.i < len(s.b) && !strings.ContainsRune(",:]} \t\r\n", rune(s.b[s.i])) {
		s.i++ // a number, true, false or null
	}
	return nil
}

func (s *keyScanner) object(keys keySet, path string) error {
	s.i++
	for s.space(); !s.is('}'); s.space() {
		key, err := s.str(keys != nil)
		if err != nil {
			return err
		}
		var sub keySet
		if keys != nil {
			var ok bool
			if sub, ok = keys[key]; !ok {
				return unknownKey(key, keys, path)
			}
		}
		if s.space(); !s.is(':') {
			return errKeysSyntax
		}
		s.i++
		subPath := path
		if sub != nil {
			subPath = strings.TrimPrefix(path+"."+key, ".")
		}
		if err := s.value(sub, subPath); err != nil {
			return err
		}
		if s.space(); s.is(',') {
			s.i++
		} else if !s.is('}') {
			return errKeysSyntax
		}
	}
	s.i++
	return nil
}

func (s *keyScanner) array(keys keySet, path string) error {
	s.i++
	for n := 0; ; n++ {
		if s.space(); s.is(']') {
			s.i++
			return nil
		}
		elem := path
		if keys != nil {
			elem = path + "[" + strconv.Itoa(n) + "]"
		}
		if err := s.value(keys, elem); err != nil {
			return err
		}
		if s.space(); s.is(',') {
			s.i++
		} else if !s.is(']') {
			return errKeysSyntax
		}
	}
}

// unknownKey is the error of a key the decoder took for a field of
// another spelling.
func unknownKey(key string, keys keySet, path string) error {
	where := ""
	if path != "" {
		where = " in " + path
	}
	for name := range keys {
		if strings.EqualFold(name, key) {
			return fmt.Errorf("json: unknown field %q%s: the field is %q (names are case-sensitive)", key, where, name)
		}
	}
	return fmt.Errorf("json: unknown field %q%s", key, where)
}

func (s *keyScanner) is(c byte) bool { return s.i < len(s.b) && s.b[s.i] == c }

func (s *keyScanner) space() {
	for s.i < len(s.b) && (s.b[s.i] == ' ' || s.b[s.i] == '\t' || s.b[s.i] == '\n' || s.b[s.i] == '\r') {
		s.i++
	}
}

// str skips the string at s.i and, with decode, returns its value.
func (s *keyScanner) str(decode bool) (string, error) {
	if !s.is('"') {
		return "", errKeysSyntax
	}
	start, escaped := s.i, false
	for s.i++; s.i < len(s.b) && s.b[s.i] != '"'; s.i++ {
		if s.b[s.i] == '\\' {
			escaped = true
			s.i++
		}
	}
	if s.i >= len(s.b) {
		return "", errKeysSyntax
	}
	s.i++
	if !decode {
		return "", nil
	}
	if !escaped {
		return string(s.b[start+1 : s.i-1]), nil
	}
	var v string
	err := json.Unmarshal(s.b[start:s.i], &v)
	return v, err
}
