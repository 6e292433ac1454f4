package rules

import (
	"errors"
	"unicode/utf8"
)

var errBadPattern = errors.New("syntax error in pattern")

// glob reports whether s matches the shell pattern: "*" any run of
// characters (including "/", as in udev's fnmatch without FNM_PATHNAME),
// "?" one character, "[...]" a class with ranges and "!" or "^"
// negation, "\" quoting the next character. A malformed pattern matches
// nothing.
func glob(pattern, s string) bool {
	ok, err := globMatch(pattern, s)
	return ok && err == nil
}

// checkGlob reports a malformed pattern.
func checkGlob(pattern string) error {
	for p := pattern; p != ""; {
		switch p[0] {
		case '\\':
			if len(p) < 2 {
				return errBadPattern
			}
			_, n := utf8.DecodeRuneInString(p[1:])
			p = p[1+n:]
		case '[':
			_, _, rest, err := matchClass(p, 0)
			if err != nil {
				return err
			}
			p = rest
		default:
			p = p[1:]
		}
	}
	return nil
}

// globMatch matches iteratively, backtracking only to the last "*", so
// it runs in O(len(pattern)*len(s)) time on any input.
func globMatch(pattern, s string) (bool, error) {
	var starP, starS = -1, -1
	p, i := 0, 0
	for i < len(s) || p < len(pattern) {
		if p < len(pattern) {
			switch c := pattern[p]; c {
			case '*':
				starP, starS = p, i
				p++
				continue
			case '?':
				if i < len(s) {
					_, n := utf8.DecodeRuneInString(s[i:])
					p++
					i += n
					continue
				}
			case '[':
				if i < len(s) {
					r, n := utf8.DecodeRuneInString(s[i:])
					ok, _, rest, err := matchClass(pattern[p:], r)
					if err != nil {
						return false, err
					}
					if ok {
						p = len(pattern) - len(rest)
						i += n
						continue
					}
				}
			case '\\':
				if p+1 >= len(pattern) {
					return false, errBadPattern
				}
				r, pn := utf8.DecodeRuneInString(pattern[p+1:])
				if i < len(s) {
					sr, n := utf8.DecodeRuneInString(s[i:])
					if sr == r {
						p += 1 + pn
						i += n
						continue
					}
				}
			default:
				if i < len(s) && s[i] == c {
					p++
					i++
					continue
				}
			}
		}
		if starP >= 0 && starS < len(s) {
			_, n := utf8.DecodeRuneInString(s[starS:])
			starS += n
			p, i = starP+1, starS
			continue
		}
		return false, nil
	}
	return true, nil
}

// matchClass matches r against the class at the start of p ("[...]") and
// returns the pattern after it.
func matchClass(p string, r rune) (match, negated bool, rest string, err error) {
	p = p[1:] // '['
	if p != "" && (p[0] == '!' || p[0] == '^') {
		negated = true
		p = p[1:]
	}
	first := true
	for {
		if p == "" {
			return false, false, "", errBadPattern
		}
		if p[0] == ']' && !first {
			return match != negated, negated, p[1:], nil
		}
		first = false
		lo, n, err := classChar(p)
		if err != nil {
			return false, false, "", err
		}
		p = p[n:]
		hi := lo
		if len(p) > 1 && p[0] == '-' && p[1] != ']' {
			hi, n, err = classChar(p[1:])
			if err != nil {
				return false, false, "", err
			}
			if hi < lo {
				return false, false, "", errBadPattern
			}
			p = p[1+n:]
		}
		if lo <= r && r <= hi {
			match = true
		}
	}
}

func classChar(p string) (rune, int, error) {
	if p[0] == '\\' {
		if len(p) < 2 {
			return 0, 0, errBadPattern
		}
		r, n := utf8.DecodeRuneInString(p[1:])
		return r, 1 + n, nil
	}
	r, n := utf8.DecodeRuneInString(p)
	return r, n, nil
}
