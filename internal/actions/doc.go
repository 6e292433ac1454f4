// Package actions runs the actions of matched rules: it holds the
// one-method Action interface, the table from a rules-file action key to
// its constructor, and Set.Run, the one function that runs a rule's
// actions for both the daemon and the dry run of `hotplugd test`. The
// effects live in its subpackages, one concern each and the only places
// that have them: run executes programs, mount mounts and unmounts,
// notify sends notifications.
//
// Every action treats the strings of the device that triggered it as
// data: they become one argv element, one path component under the mount
// root, or one JSON string, and never reach a shell, a mount-option
// string or a format string. Each can say what it does without doing it
// (Deps.PlanOnly), so a dry run shows the daemon's own decisions.
package actions
