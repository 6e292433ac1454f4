// Package rules loads a hotplugd rules file and matches events against it.
//
// Loading is strict because the file decides what runs as root: every
// key is known, every expression and {{ }} template is compiled and type
// checked against the fixed environment of hotplugd.rules(5) when the file loads,
// and every problem is reported with its FILE:LINE:COL and rule, all of
// them at once. Input is bounded (file size, no YAML anchors or aliases,
// an AST node budget per expression) so a hostile or broken file fails
// fast instead of exhausting the daemon.
//
// Per event only compiled programs run. A pre-filter built from the
// top-level `action == "..."` and `subsystem == "..."` conjuncts of each
// match skips rules that cannot match without running them, and the costly
// parts of the environment (the env map, the filesystem probe) are built
// only when a program reads them.
package rules
