package configs

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hotplugd/hotplugd/internal/replay"
)

// TestExamplesReplay replays each recording of examples/testdata through
// the rules each of its expectations names, as `hotplugd test --replay
// --expect` does: examples/testdata/R--E.expect.yaml holds what the
// rules R (examples/R.yaml, or rules.yaml for R "rules") do with the
// recording E.jsonl. Every recording has expectations.
func TestExamplesReplay(t *testing.T) {
	expects, _ := filepath.Glob("examples/testdata/*.expect.yaml")
	recordings, _ := filepath.Glob("examples/testdata/*.jsonl")
	checked := map[string]bool{}
	for _, x := range expects {
		rulesName, rec, ok := strings.Cut(strings.TrimSuffix(filepath.Base(x), ".expect.yaml"), "--")
		if !ok {
			t.Errorf("%s: name it RULES--RECORDING.expect.yaml", x)
			continue
		}
		rulesPath := filepath.Join("examples", rulesName+".yaml")
		if rulesName == "rules" {
			rulesPath = "rules.yaml"
		}
		events := filepath.Join("examples", "testdata", rec+".jsonl")
		checked[events] = true
		t.Run(rulesName+"--"+rec, func(t *testing.T) { replayExpect(t, rulesPath, events, x) })
	}
	for _, r := range recordings {
		if !checked[r] {
			t.Errorf("%s has no expectations (examples/testdata/RULES--%s.expect.yaml)", r, strings.TrimSuffix(filepath.Base(r), ".jsonl"))
		}
	}
	if len(recordings) == 0 {
		t.Error("no recordings in examples/testdata")
	}
}

func replayExpect(t *testing.T, rulesPath, events, expect string) {
	r, err := replay.New(load(t, rulesPath))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	x, err := replay.ReadExpectations(expect)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(events)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for rd := replay.NewReader(f, events); ; {
		ev, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		o := r.Replay(context.Background(), ev)
		if d := x.Check(&o); d != nil {
			t.Errorf("%s(if the change is right: hotplugd test --config configs/%s --replay configs/%s --expect configs/%s --update)",
				d, rulesPath, events, expect)
		}
	}
	if err := x.Finish(); err != nil {
		t.Error(err)
	}
}
