package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/hotplugd/hotplugd/internal/daemon"
)

func runRun(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("run", "run [--config FILE]",
		"Run the daemon in the foreground: listen to uevents and run the rules'\nactions until SIGTERM or SIGINT; SIGHUP reloads the rules.", stderr)
	config := fs.String("config", defaultRulesPath, "the rules `FILE`")
	if _, exit, ok := parseFlags(fs, args, false); !ok {
		return exit
	}
	lv := new(slog.LevelVar)
	return daemon.Run(ctx, daemon.Config{
		RulesPath: *config,
		Logger:    daemon.NewLogger(stderr, lv),
		Level:     lv,
		Version:   version,
	})
}
