package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// newFlags returns the flag set of a verb, whose -h prints synopsis, the
// about text and the flags.
func newFlags(verb, synopsis, about string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: hotplugd %s\n", synopsis)
		if about != "" {
			fmt.Fprintf(stderr, "\n%s\n", about)
		}
		if hasFlags(fs) {
			fmt.Fprintln(stderr, "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parseFlags parses a verb's arguments. With takesArgs, flags may come
// before, between and after positional arguments, which it returns;
// without, a positional argument is a usage error. When ok is false the
// verb returns exit at once: nil after -h (exit 0), exitError(2) after a
// usage error, whose message and the usage are printed.
func parseFlags(fs *flag.FlagSet, args []string, takesArgs bool) (pos []string, exit error, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, nil, false
			}
			return nil, exitError(2), false
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil, true
		}
		if !takesArgs {
			fmt.Fprintf(fs.Output(), "hotplugd %s: unexpected argument %q\n", fs.Name(), args[0])
			fs.Usage()
			return nil, exitError(2), false
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
