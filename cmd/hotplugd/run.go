package main

import (
	"context"
	"flag"
	"io"
	"log/slog"

	"github.com/hotplugd/hotplugd/internal/daemon"
)

func runRun(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	config := fs.String("config", defaultRulesPath, "rules file")
	if err := fs.Parse(args); err != nil {
		return exitError(2)
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return exitError(2)
	}
	lv := new(slog.LevelVar)
	return daemon.Run(ctx, daemon.Config{
		RulesPath: *config,
		Logger:    daemon.NewLogger(stderr, lv),
		Level:     lv,
	})
}
