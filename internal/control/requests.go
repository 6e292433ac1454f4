package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hotplugd/hotplugd/internal/uevent"
)

// MaxRequestBytes bounds the body of a request, on the socket and from
// the broker alike.
const MaxRequestBytes = maxBodyBytes

// Default and longest deadline of an eject.
const (
	DefaultEjectTimeout = 2 * time.Minute
	maxEjectTimeout     = maxSettle
)

// ParseEject decodes the body of an eject request, the same for both
// doors into the daemon, and returns it with its deadline.
func ParseEject(body []byte) (EjectRequest, time.Duration, error) {
	var req EjectRequest
	if err := decodeStrict(body, &req); err != nil {
		return req, 0, fmt.Errorf("eject request: %w", err)
	}
	if len(req.Targets) == 0 {
		return req, 0, errors.New("eject request: no targets")
	}
	timeout := min(max(time.Duration(req.Timeout), 0), maxEjectTimeout)
	if timeout == 0 {
		timeout = DefaultEjectTimeout
	}
	return req, timeout, nil
}

// ParseTrigger decodes the body of a trigger request; an empty body is
// `hotplugd trigger`'s default, add for every device.
func ParseTrigger(body []byte) (TriggerRequest, error) {
	var req TriggerRequest
	if len(bytes.TrimSpace(body)) > 0 {
		if err := decodeStrict(body, &req); err != nil {
			return req, fmt.Errorf("trigger request: %w", err)
		}
	}
	if req.Action == "" {
		req.Action = "add"
	}
	if !slices.Contains(uevent.Actions, req.Action) {
		return req, fmt.Errorf("trigger request: unknown action %q", req.Action)
	}
	return req, nil
}

// ParseEmpty accepts the body of a request that takes no arguments
// (status, reload): nothing, or an empty JSON object.
func ParseEmpty(body []byte) error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return decodeStrict(body, &struct{}{})
}

// decodeStrict decodes one JSON object with no unknown fields and
// nothing after it.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("more than one JSON value")
	}
	return nil
}
