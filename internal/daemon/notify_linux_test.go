package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestBinaryWebhook: a change of lo, matched by a rule with a webhook
// target, reaches a test server as the documented JSON document, while a
// second, dead webhook target holds nothing up.
func TestBinaryWebhook(t *testing.T) {
	bin := needBinary(t)
	type hook struct {
		Rule    string `json:"rule"`
		Message string `json:"message"`
		Event   struct {
			Action    string            `json:"action"`
			DevPath   string            `json:"devpath"`
			Subsystem string            `json:"subsystem"`
			Source    string            `json:"source"`
			Env       map[string]string `json:"env"`
		} `json:"event"`
	}
	got := make(chan hook, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var h hook
		b, _ := io.ReadAll(r.Body)
		if err := json.Unmarshal(b, &h); err != nil {
			t.Errorf("webhook body is not the JSON document: %v: %s", err, b)
		}
		if ct := r.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
		got <- h
	}))
	t.Cleanup(srv.Close)
	// A server that accepts and never answers. Cleanups run after the
	// daemon (started later) is killed.
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(release) })

	dir := t.TempDir()
	tag, out := newTag(), filepath.Join(dir, "out")
	rulesPath := filepath.Join(dir, "rules.yaml")
	rules := fmt.Sprintf(`settings:
  coldplug: false
  state_dir: %[1]s/state
  mount_root: %[1]s/media
  control: {socket: %[1]s/control}
rules:
  - name: lo-hook
    match: %[2]s
    actions:
      - notify:
          message: "{{ env.INTERFACE }} changed ({{ env.SYNTH_ARG_T }})"
          targets:
            - webhook: {url: %[3]q, timeout: 30s, max_attempts: 1}
            - webhook: {url: %[4]q, timeout: 2s, max_attempts: 3}
      - run: {argv: ["/bin/sh", "-c", "echo $HOTPLUG_SYNTH_UUID >> \"$0\"", %[5]q]}
`, dir, jsonString(loMatch(tag)), hung.URL, srv.URL+"/hotplug", out)
	if err := os.WriteFile(rulesPath, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, bin, rulesPath)
	d.ready(t)

	uuid := newUUID()
	trigger(t, loUevent, uuid, tag)
	// The run action after the notify ran without waiting for delivery.
	waitFile(t, out, waitAction, func(s string) bool { return s == uuid+"\n" })
	select {
	case h := <-got:
		if h.Rule != "lo-hook" || h.Message != "lo changed ("+tag+")" {
			t.Errorf("rule %q message %q", h.Rule, h.Message)
		}
		if h.Event.Action != "change" || h.Event.DevPath != "/devices/virtual/net/lo" || h.Event.Subsystem != "net" ||
			h.Event.Source != "kernel" || h.Event.Env["SYNTH_UUID"] != uuid {
			t.Errorf("event in the webhook: %+v", h.Event)
		}
	case <-time.After(waitAction):
		t.Fatal("the webhook was not delivered")
	}

	// Events keep being handled while the dead target holds its request.
	uuid2 := newUUID()
	trigger(t, loUevent, uuid2, tag)
	waitFile(t, out, waitAction, func(s string) bool { return s == uuid+"\n"+uuid2+"\n" })
	select {
	case <-got:
	case <-time.After(waitAction):
		t.Fatal("the second webhook was not delivered")
	}
	d.signal(t, syscall.SIGTERM)
	if code := d.wait(t, waitExit); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
}
