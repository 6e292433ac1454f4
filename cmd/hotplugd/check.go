package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/hotplugd/hotplugd/internal/rules"
)

// defaultRulesPath is where the daemon and the rule tools look for rules
// without --config.
const defaultRulesPath = "/etc/hotplugd/rules.yaml"

// runCheck validates a rules file like a compiler: nothing on success but
// a one-line summary on stdout, and on failure one FILE:LINE:COL line per
// problem on stderr, exit status 1.
func runCheck(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", "check [--config FILE]",
		"Validate a rules file. Exit status 0 when it is valid, 1 with one\n"+
			"FILE:LINE:COL: message line per problem on stderr otherwise.", stderr)
	config := fs.String("config", defaultRulesPath, "the rules `FILE` to check")
	if _, exit, ok := parseFlags(fs, args, false); !ok {
		return exit
	}
	rs, err := loadRules(*config, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok, %d %s\n", *config, len(rs.Rules), plural(len(rs.Rules), "rule", "rules"))
	return nil
}

// loadRules loads the rules file at path, printing its problems (one
// line each) and any permission warnings to stderr. The error, when the
// file is not usable, is exitError(1): everything has been said.
func loadRules(path string, stderr io.Writer) (*rules.RuleSet, error) {
	rs, err := rules.Load(path)
	var problems rules.Errors
	switch {
	case errors.As(err, &problems):
		for _, p := range problems {
			fmt.Fprintln(stderr, p)
		}
		return nil, exitError(1)
	case err != nil:
		fmt.Fprintf(stderr, "hotplugd: %v\n", err)
		return nil, exitError(1)
	}
	warnPermissions(path, stderr)
	return rs, nil
}

// warnPermissions says when someone other than root (and this user)
// could change the file: the daemon refuses such a file, since it decides
// what runs as root, so check says so before it is deployed.
func warnPermissions(path string, stderr io.Writer) {
	problems, err := rules.UnsafePermissions(path, 0) // as the daemon, root, sees it
	if err != nil {
		fmt.Fprintf(stderr, "%s: warning: cannot check permissions: %v\n", path, err)
		return
	}
	for _, p := range problems {
		fmt.Fprintf(stderr, "%s: warning: %s; the daemon, as root, will refuse it\n", path, p)
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
