package control

import (
	"encoding/json"
	"fmt"
	"time"
)

// Status is GET /v1/status and `hotplugd status --json`.
type Status struct {
	Version       string        `json:"version"`
	UptimeSeconds float64       `json:"uptime_seconds"`
	Config        ConfigStatus  `json:"config"`
	Events        EventStatus   `json:"events"`
	Queue         QueueStatus   `json:"queue"`
	Rules         []RuleStatus  `json:"rules"`
	Mounts        []MountStatus `json:"mounts"`
	// Mappings are the LUKS devices hotplugd unlocked.
	Mappings []MappingStatus `json:"mappings"`
	// LeftBehind counts processes of stopped actions and probes that did
	// not die of SIGKILL (asleep in the kernel on a hung device).
	LeftBehind int64         `json:"processes_left_behind"`
	LastError  string        `json:"last_error"`
	Broker     *BrokerStatus `json:"broker,omitempty"`
}

// ConfigStatus is the rules file in force and how its last load went.
type ConfigStatus struct {
	Path     string    `json:"path"`
	LoadedAt time.Time `json:"loaded_at"`
	ReloadOK bool      `json:"reload_ok"`
	Error    string    `json:"error"`
}

// EventStatus counts events since start.
type EventStatus struct {
	Received uint64            `json:"received"`
	BySource map[string]uint64 `json:"by_source"` // received, by source: kernel or udev, and route
	Handled  uint64            `json:"handled"`
	Dropped  map[string]uint64 `json:"dropped"` // by reason
	Overruns uint64            `json:"overruns"`
}

// QueueStatus is the dispatcher now.
type QueueStatus struct {
	Depth    int `json:"depth"`    // events queued or being handled
	Capacity int `json:"capacity"` // the bound of Depth
	Running  int `json:"running"`  // events whose actions run now
	Stuck    int `json:"stuck"`    // of Running, those past their deadline
}

// RuleStatus is one rule of the file in force.
type RuleStatus struct {
	Name          string     `json:"name"`
	Matches       uint64     `json:"matches"`
	ActionsOK     uint64     `json:"actions_ok"`
	ActionsFailed uint64     `json:"actions_failed"`
	LastMatch     *time.Time `json:"last_match"`
}

// MountStatus is one mount hotplugd made.
type MountStatus struct {
	Devnode string    `json:"devnode"`
	UUID    string    `json:"uuid"`
	Label   string    `json:"label"`
	FSType  string    `json:"fstype"`
	Path    string    `json:"path"`
	Rule    string    `json:"rule"`
	Since   time.Time `json:"since"`
}

// BrokerStatus is the MQTT client, when one is configured.
type BrokerStatus struct {
	URL       string `json:"url"`
	Connected bool   `json:"connected"`
	Queue     int    `json:"queue"`     // messages waiting in the outbox
	Published uint64 `json:"published"` // messages the broker acknowledged
	Dropped   uint64 `json:"dropped"`   // messages that never reached it
	LastError string `json:"last_error"`
}

// EjectRequest is POST /v1/eject.
type EjectRequest struct {
	Targets  []string `json:"targets"`
	PowerOff bool     `json:"power_off"`
	Force    bool     `json:"force"` // detach lazily when busy
	Timeout  Duration `json:"timeout"`
}

// EjectResult is the outcome for each target, in order.
type EjectResult struct {
	Targets []EjectTarget `json:"targets"`
}

// EjectTarget is what eject did with one target.
type EjectTarget struct {
	Target     string        `json:"target"`
	Unmounted  []MountStatus `json:"unmounted"`
	Lazy       bool          `json:"lazy"`
	PoweredOff bool          `json:"powered_off"`
	// Busy lists the processes that hold a mount of the target, when it
	// was busy and not forced.
	Busy  []Holder `json:"busy,omitempty"`
	Error string   `json:"error,omitempty"`
	// Closed names the LUKS mappings closed, after their cleartext was
	// unmounted when hotplugd had mounted it; Deferred, those still in
	// use then, which the kernel removes once their last user lets go.
	Closed   []string `json:"closed,omitempty"`
	Deferred []string `json:"deferred,omitempty"`
}

// Holder is a process using a filesystem.
type Holder struct {
	PID     int    `json:"pid"`
	Command string `json:"command"`
}

// TriggerRequest is POST /v1/trigger: make the kernel emit an event for
// every present device (of a subsystem), like `hotplugd trigger`.
type TriggerRequest struct {
	Action    string `json:"action"`    // default add
	Subsystem string `json:"subsystem"` // "" for every device
}

// TriggerResult is what a trigger did.
type TriggerResult struct {
	Action    string   `json:"action"`
	Triggered int      `json:"triggered"`        // devices whose uevent file took the action
	Errors    []string `json:"errors,omitempty"` // the first few failures
}

// ReloadResult is POST /v1/reload: the rules in force after it.
type ReloadResult struct {
	OK       bool     `json:"ok"`
	Rules    int      `json:"rules"`
	Problems []string `json:"problems,omitempty"` // FILE:LINE:COL: message each
}

// SettleResult is GET /v1/settle.
type SettleResult struct {
	Settled bool `json:"settled"`
	Depth   int  `json:"depth"` // events queued or running when it returned
}

// ErrorBody is the body of an answer other than 200.
type ErrorBody struct {
	Error string `json:"error"`
}

// Duration is a time.Duration written as "1m30s" in JSON.
type Duration time.Duration

// MarshalJSON writes the duration as Go writes it.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads "90s" or a number of seconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("duration: want \"90s\" or seconds: %w", err)
	}
	*d = Duration(secs * float64(time.Second))
	return nil
}

// MappingStatus is one LUKS mapping hotplugd opened.
type MappingStatus struct {
	Name    string    `json:"name"`
	Device  string    `json:"device"`  // the cleartext, /dev/mapper/<name>
	Backing string    `json:"backing"` // the encrypted device
	UUID    string    `json:"uuid"`    // of its LUKS header
	Path    string    `json:"path"`    // where hotplugd mounted the cleartext; "" when it did not
	Rule    string    `json:"rule"`
	Since   time.Time `json:"since"`
}
