package packaging

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// completionDir makes a working directory with a few files for --config
// and --event to complete.
func completionDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"rules.yaml", "old.yml", "notes.txt", "stick.jsonl"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "examples"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// bashComplete loads the bash completion (after bash-completion itself
// when preload is set) and asks _hotplugd to complete line, which ends
// where the cursor is. It returns the sorted candidates.
func bashComplete(t *testing.T, dir, preload, line string) []string {
	t.Helper()
	script := filepath.Join(repoRoot(t), "contrib/completion/hotplugd.bash")
	// COMP_WORDS is split as readline does, with "=" as a word of its own.
	words := strings.Fields(strings.ReplaceAll(line, "=", " = "))
	if strings.HasSuffix(line, " ") {
		words = append(words, "")
	}
	var quoted []string
	for _, w := range words {
		quoted = append(quoted, "'"+w+"'")
	}
	prog := preload + `
source "$1"
COMP_LINE=$2
COMP_POINT=${#COMP_LINE}
COMP_WORDS=(` + strings.Join(quoted, " ") + `)
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_TYPE=9
COMP_KEY=9
_hotplugd hotplugd "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%s\n' "${COMPREPLY[@]}"
`
	out := run(t, dir, os.Environ(), "bash", "--norc", "--noprofile", "-c", prog, "bash", script, line)
	got := strings.Fields(out)
	slices.Sort(got)
	return got
}

func TestBashCompletion(t *testing.T) {
	needTool(t, "bash")
	dir := completionDir(t)
	cases := []struct {
		line string
		want []string
	}{
		{"hotplugd mo", []string{"monitor"}},
		{"hotplugd monitor --j", []string{"--json"}},
		{"hotplugd ", []string{"--help", "check", "eject", "help", "monitor", "reload", "run", "settle", "status", "test", "trigger", "version"}},
		{"hotplugd monitor --", []string{"--help", "--json", "--source", "--subsystem", "--walk"}},
		{"hotplugd monitor --source ", []string{"auto", "kernel", "route", "udev"}},
		{"hotplugd monitor --source=k", []string{"kernel"}},
		{"hotplugd monitor --source=", []string{"auto", "kernel", "route", "udev"}},
		{"hotplugd run --", []string{"--config", "--help"}},
		{"hotplugd check --config ", []string{"examples", "old.yml", "rules.yaml"}},
		{"hotplugd check --config=r", []string{"rules.yaml"}},
		{"hotplugd test --", []string{"--action", "--config", "--event", "--expect", "--help", "--replay", "--syspath", "--update"}},
		{"hotplugd test --event ", []string{"examples", "notes.txt", "old.yml", "rules.yaml", "stick.jsonl"}},
		{"hotplugd test --replay ", []string{"examples", "stick.jsonl"}},
		{"hotplugd test --replay stick.jsonl --expect ", []string{"examples", "old.yml", "rules.yaml"}},
		{"hotplugd test --action ", []string{"add", "bind", "change", "move", "offline", "online", "remove", "unbind"}},
		{"hotplugd test SUB", []string{"SUBSYSTEM="}},
		{"hotplugd trigger --", []string{"--action", "--dry-run", "--help", "--subsystem"}},
		{"hotplugd trigger --action o", []string{"offline", "online"}},
		{"hotplugd trigger --dry-run --action a", []string{"add"}},
		{"hotplugd monitor --subsystem bloc", []string{"block"}},
		{"hotplugd version ", []string{"--help"}},
		{"hotplugd st", []string{"status"}},
		{"hotplugd status --", []string{"--help", "--json", "--socket"}},
		{"hotplugd eject --", []string{"--force", "--help", "--json", "--power-off", "--socket", "--timeout"}},
		{"hotplugd eject LA", []string{"LABEL="}},
		{"hotplugd settle --", []string{"--help", "--socket", "--timeout"}},
		{"hotplugd reload --", []string{"--help", "--socket"}},
	}
	// The script works on its own and, as installed, under bash-completion.
	const bc = "/usr/share/bash-completion/bash_completion"
	for _, mode := range []struct{ name, preload string }{
		{"plain bash", ""},
		{"with bash-completion", "source " + bc},
	} {
		t.Run(mode.name, func(t *testing.T) {
			if mode.preload != "" {
				_, err := os.Stat(bc)
				need(t, err == nil, "bash-completion is not installed (%s)", bc)
			}
			for _, c := range cases {
				if diff := cmp.Diff(c.want, bashComplete(t, dir, mode.preload, c.line)); diff != "" {
					t.Errorf("completing %q (-want +got):\n%s", c.line, diff)
				}
			}
		})
	}
}

func TestZshCompletion(t *testing.T) {
	zsh := needTool(t, "zsh")
	script := filepath.Join(repoRoot(t), "contrib/completion/_hotplugd")
	run(t, "", os.Environ(), zsh, "-n", script)

	// Drive an interactive zsh through a pseudo-terminal (zsh/zpty): type
	// the line and TAB twice, then wait for the expected text to appear in
	// what zsh draws, either completed into the line or listed below it.
	dir := completionDir(t)
	const driver = `
zmodload zsh/zpty || exit 3
zpty z 'TERM=dumb PS1="%% " zsh -f -i'
zpty -w z "fpath=(${(q)1} \$fpath); autoload -Uz compinit; compinit -u -D; unsetopt beep; LISTMAX=1000; print READY\$((1+1))"
zpty -r z out '*READY2*%*' || exit 2
zpty -w -n z "$2"$'\t\t'
zpty -r z out "*${3}*" || exit 1
zpty -d z
`
	cases := []struct{ line, want string }{
		{"hotplugd mo", "monitor"},
		{"hotplugd monitor --j", "--json"},
		{"hotplugd monitor --source ", "kernel"},
		{"hotplugd check --config ", "rules.yaml"},
		{"hotplugd trigger --action ", "offline"},
		{"hotplugd test SUB", "SUBSYSTEM="},
		{"hotplugd monitor --json --w", "--walk"},
		{"hotplugd test --rep", "--replay"},
		{"hotplugd test --replay ", "stick.jsonl"},
		{"hotplugd sta", "status"},
		{"hotplugd eject --po", "--power-off"},
	}
	for _, c := range cases {
		t.Run(c.line, func(t *testing.T) {
			stdout, stderr, err := runTimeout(t, 20*time.Second, dir, os.Environ(),
				zsh, "-f", "-c", driver, "zsh", filepath.Dir(script), c.line, c.want)
			if err != nil {
				t.Errorf("zsh does not complete %q to show %q: %v\n%s%s", c.line, c.want, err, stdout, stderr)
			}
		})
	}
}
