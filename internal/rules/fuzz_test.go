package rules

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds arbitrary files to the loader: it must never panic,
// must answer quickly, and must either load or explain every problem as
// one positioned line.
func FuzzParse(f *testing.F) {
	for _, pattern := range []string{"testdata/*.yaml", "../../configs/*.yaml", "../../configs/examples/*.yaml"} {
		paths, _ := filepath.Glob(pattern)
		for _, p := range paths {
			data, err := os.ReadFile(p)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	for _, tt := range parseErrorTests {
		f.Add([]byte(tt.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		rs, err := parse("fuzz.yaml", data, fakeUsers)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("parse took %v", d)
		}
		if err == nil {
			if rs == nil {
				t.Fatal("nil RuleSet without an error")
			}
			return
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error %v is not a non-empty Errors", err)
		}
		for _, e := range es {
			if e.Line < 1 || e.Col < 1 || e.File != "fuzz.yaml" {
				t.Errorf("bad position in %q", e.Error())
			}
			if strings.ContainsAny(e.Error(), "\n\r") {
				t.Errorf("problem is not one line: %q", e.Error())
			}
		}
	})
}
