// Package broker is hotplugd's MQTT 5 client (github.com/eclipse/paho.golang,
// autopaho for reconnects): for the admin of many hosts, each publishes
// under P = <prefix>/<host> its presence (retained P/status, set offline
// by the Last Will when the daemon dies), its events as CloudEvents
// documents on P/events/<subsystem>/<action>, its mounts (retained
// P/mounts) and notifications (P/notify/<rule>), and with commands: true
// answers P/cmd/<verb> through the control socket's own handlers.
//
// Every publish goes through an outbox on disk (outbox.go), so a broker
// that is down, slow or refusing never makes event handling wait, and a
// broker outage or a daemon restart loses nothing up to queue_max
// messages; beyond it the oldest are dropped and counted. Only names
// the kernel or the rules file chose (a subsystem, an action, a rule)
// become topic levels, sanitized; a device's strings stay in payloads.
package broker
