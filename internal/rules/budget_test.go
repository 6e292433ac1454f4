package rules

import (
	"fmt"
	"strings"
	"testing"
)

// doubling is a match of n lets, each twice the one before, from a
// string of 1,000 bytes: expr's budget counts ranges, not string growth,
// and 14 doublings allocate 31 MB on every event.
func doubling(n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "let v0 = %q; ", strings.Repeat("x", 1000))
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "let v%d = v%d + v%d; ", i, i-1, i-1)
	}
	fmt.Fprintf(&b, `action == "add" && v%d == ""`, n)
	return b.String()
}

func TestMatchMemoryRefused(t *testing.T) {
	src := doubling(14)
	_, probs := compile(src, modeMatch)
	if len(probs) != 1 {
		t.Fatalf("compile: %d problems %v, want the program refused", len(probs), probs)
	}
	// At the + of the first let that takes the program over 4 MiB: by
	// then it has built 2,000 + 4,000 + ... + 4,096,000 bytes.
	want := strings.Index(src, "let v12 = v11 + v11") + len("let v12 = v11 ")
	if p := probs[0]; p.off != want || !strings.Contains(p.msg, "4 MiB") {
		t.Errorf("problem at %d: %q; want one at %d about the 4 MiB an evaluation may allocate", p.off, p.msg, want)
	}

	_, err := parseTest(t, fmt.Sprintf("rules:\n  - name: r\n    match: '%s'\n", src))
	got := errLines(err)
	if len(got) != 1 || !strings.HasPrefix(got[0], fmt.Sprintf("t.yaml:3:%d: ", 13+want)) || !strings.Contains(got[0], "match: expression may allocate") {
		t.Errorf("load: %q; want one error at t.yaml:3:%d", got, 13+want)
	}
}

func TestExpressionMemory(t *testing.T) {
	refused := []string{
		`reduce(1..30, #acc + #acc, "xxxxxxxx") == ""`,
		`repeat(env.X, 1000) == ""`,
		`len(join(map(1..100000, env.X), "")) > 0`,
		`len(map(1..1000, map(1..1000, #))) > 0`,
		`len(1..int(env.N)) > 0`,
		`replace(env.X, "", env.Y) == ""`,
		`toJSON(map(1..1000, $env)) == ""`,
		`let a = split(env.X, ""); len(map(a, upper(env.Y))) > 0`,
		`let a = concat(1..1000, 1..1000); let b = concat(a, a, a, a); let c = concat(b, b, b, b); len(concat(c, c, c, c)) > 0`,
	}
	for _, src := range refused {
		if _, probs := compile(src, modeMatch); len(probs) == 0 {
			t.Errorf("%s: accepted, want refused", src)
		}
	}
	accepted := []string{
		`action == "add" && env.A + env.B + env.C == "x"`,
		`upper(env.X) == "A" && lower(fs.label) contains "backup"`,
		`repeat("ab", 3) == "ababab"`,
		`len(split(devpath, "/")) > 3 && split(devpath, "/")[2] == "usb1"`,
		`any(split(env.DEVLINKS, " "), # startsWith "/dev/disk/by-id/")`,
		`reduce(1..10, #acc + 1, 0) == 55`,
		`let x = fs.label; x != "" && (x + "-" + fs.uuid) matches "^B"`,
		`join(filter(split(devpath, "/"), # != ""), "-") != ""`,
		`toJSON(env) != "" && len(keys(env)) > 0`,
	}
	for _, src := range accepted {
		if _, probs := compile(src, modeMatch); len(probs) > 0 {
			t.Errorf("%s: refused: %s", src, probs[0].msg)
		}
	}
	if _, probs := compile(`mount.path + "/" + fs.label + "/" + repeat("-", 10)`, modeTemplate); len(probs) > 0 {
		t.Errorf("template refused: %s", probs[0].msg)
	}
}

// FuzzCompile: compiling any expression, the memory estimate included,
// never panics, and a refusal is a problem, not a crash.
func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		doubling(3),
		`reduce(1..30, #acc + #acc, "xxxxxxxx") == ""`,
		`let a = split(env.X, ""); len(map(a, upper(env.Y))) > 0`,
		`toJSON(fromPairs(toPairs(env))) != "" && len(flatten([[1], [2]])) == 2`,
		`join(filter(split(devpath, "/"), # != ""), "-") != ""`,
		`groupBy(1..3, # % 2)[1][0] == 1 && sortBy(values(env), #)[0] == ""`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		compile(src, modeMatch)
		compile(src, modeTemplate)
	})
}
