// Package daemon is `hotplugd run`: it takes events from the listener,
// orders them per device, enriches them, matches them against the rules
// and runs the matching actions on a bounded worker pool. It also owns the
// daemon's life under systemd: readiness, status, watchdog, reload on
// SIGHUP and an orderly stop on SIGTERM.
package daemon
