// Package actions is the only place where hotplugd executes programs,
// mounts or unmounts filesystems, or sends notifications. Every action runs
// under a deadline and treats the strings of the device that triggered it
// as data: they become one argv element, one path component under the
// mount root, or one JSON string, and never reach a shell, a mount-option
// string or a format string.
package actions
