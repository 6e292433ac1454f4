package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/hotplugd/hotplugd/internal/logtest"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// hookRequest is one request a hookServer received.
type hookRequest struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// hookServer is a webhook endpoint. handle answers the n-th request
// (from 1); it may block until the request's context is done.
type hookServer struct {
	*httptest.Server
	got chan hookRequest // every request, as it arrives

	mu   sync.Mutex
	n    int
	reqs []hookRequest
}

func newHookServer(t *testing.T, handle func(n int, w http.ResponseWriter, r *http.Request)) *hookServer {
	t.Helper()
	s := &hookServer{got: make(chan hookRequest, 100)}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("hook server: reading body: %v", err)
		}
		req := hookRequest{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
		s.mu.Lock()
		s.n++
		n := s.n
		s.reqs = append(s.reqs, req)
		s.mu.Unlock()
		s.got <- req
		handle(n, w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *hookServer) requests() []hookRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]hookRequest(nil), s.reqs...)
}

// wait returns the next request, failing the test after a while.
func (s *hookServer) wait(t *testing.T) hookRequest {
	t.Helper()
	select {
	case r := <-s.got:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("no webhook request arrived")
		return hookRequest{}
	}
}

// ok answers 200.
func ok(int, http.ResponseWriter, *http.Request) {}

// hang never answers: it returns when the client gives up.
func hang(_ int, _ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// notifyFixture is a Notifier with fast retries whose log goes to t.Log
// and is kept for inspection; Cleanup closes it.
type notifyFixture struct {
	n    *Notifier
	log  *slog.Logger
	recs func() []logtest.Record
}

func newNotifyFixture(t *testing.T, mod func(*NotifierConfig)) *notifyFixture {
	t.Helper()
	log, recs := logtest.New(t)
	cfg := NotifierConfig{
		Log:               log,
		WebhookBackoff:    5 * time.Millisecond,
		WebhookMaxBackoff: 20 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	n := NewNotifier(cfg)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return &notifyFixture{n: n, log: log, recs: recs}
}

// testAction is the last action of a rule, a notify action, as the
// rules' notify action drives a Sender: render the message, then Send.
type testAction struct {
	spec   *rules.NotifySpec
	sender *Sender
}

// testContext is what a notify action knows of its event.
type testContext struct {
	Event     *uevent.Event
	Env       *rules.Env
	Rule      string
	MountPath string
}

func newTestContext(ev *uevent.Event, rule string) *testContext {
	return &testContext{Event: ev, Env: rules.NewEnv(ev, nil), Rule: rule}
}

func (a testAction) Do(ctx context.Context, c *testContext) error {
	msg, err := a.spec.Message.Render(c.Env)
	if err != nil {
		return err
	}
	dev := rules.EventOnly{Event: c.Event}
	return a.sender.Send(ctx, Notification{
		Rule: c.Rule, Message: msg, Event: c.Event, DevNode: dev.DevNode(), FS: dev.FS, MountPath: c.MountPath,
	})
}

// action builds the sender of the single rule in yaml, whose last action
// is the notify action under test.
func (f *notifyFixture) action(t *testing.T, yaml string) (testAction, string) {
	t.Helper()
	rs, err := rules.Parse("rules.yaml", []byte(yaml))
	if err != nil {
		t.Fatalf("rules: %v", err)
	}
	r := rs.Rules[0]
	spec, ok := r.Actions[len(r.Actions)-1].(*rules.NotifySpec)
	if !ok {
		t.Fatalf("rule %s: the last action is %T, not notify", r.Name, r.Actions[len(r.Actions)-1])
	}
	s, err := NewSender(f.n, f.log, spec.Targets)
	if err != nil {
		t.Fatalf("NewSender: %v", err)
	}
	return testAction{spec: spec, sender: s}, r.Name
}

// drain closes the Notifier, waiting for every queued notification.
func (f *notifyFixture) drain(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := f.n.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// hookRule is a rule whose notify action has one webhook target with the
// given extra YAML flow fields (like `timeout: 100ms`).
func hookRule(name, message, url, fields string) string {
	if fields != "" {
		fields = ", " + fields
	}
	return fmt.Sprintf(`
rules:
  - name: %s
    match: action == "add"
    actions:
      - notify:
          message: %q
          targets:
            - log: {}
            - webhook: {url: %q%s}
`, name, message, url, fields)
}

// testEvent builds an event the way the listener would, through the
// checks of uevent.FromProps.
func testEvent(t testing.TB, props ...string) *uevent.Event {
	t.Helper()
	var ps []uevent.Property
	for _, kv := range props {
		k, v, _ := strings.Cut(kv, "=")
		ps = append(ps, uevent.Property{Key: k, Value: v})
	}
	ev, err := uevent.FromProps(ps)
	if err != nil {
		t.Fatalf("FromProps: %v", err)
	}
	ev.Source = uevent.SourceKernel
	return &ev
}

// stickEvent is the add event of a USB stick's first partition, with
// the filesystem as udev would have probed it.
func stickEvent(t testing.TB, label string) *uevent.Event {
	return testEvent(t,
		"ACTION=add",
		"DEVPATH=/devices/pci0000:00/0000:00:14.0/usb2/2-1/2-1:1.0/host6/target6:0:0/6:0:0:0/block/sdb/sdb1",
		"SUBSYSTEM=block", "DEVNAME=sdb1", "DEVTYPE=partition", "SEQNUM=5187", "MAJOR=8", "MINOR=17",
		"ID_FS_TYPE=vfat", "ID_FS_USAGE=filesystem", "ID_FS_UUID=5E2F-1A3B", "ID_FS_VERSION=FAT32",
		"ID_FS_LABEL="+label,
	)
}

// doQuickly runs the action and fails if it took long: handing a
// notification over must never wait for its delivery.
func doQuickly(t *testing.T, a testAction, c *testContext) {
	t.Helper()
	start := time.Now()
	if err := a.Do(context.Background(), c); err != nil {
		t.Fatalf("Do: %v", err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("Do took %v: it must not wait for delivery", d)
	}
}

func TestWebhookDocument(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	srv := newHookServer(t, ok)
	f := newNotifyFixture(t, nil)
	a, rule := f.action(t, `
rules:
  - name: usb-stick
    match: action == "add"
    actions:
      - mount: {}
      - notify:
          message: "Mounted {{ fs.label }} at {{ mount.path }}"
          targets:
            - webhook:
                url: `+srv.URL+`/hotplug
                timeout: 5s
                headers: {Authorization: "Bearer t0k", X-Source: lab}
`)

	ev := stickEvent(t, "STICK")
	c := newTestContext(ev, rule)
	c.MountPath = "/media/STICK"
	c.Env.SetMountPath(c.MountPath)
	before := time.Now().Add(-time.Second)
	doQuickly(t, a, c)
	f.drain(t)

	reqs := srv.requests()
	if len(reqs) != 1 {
		t.Fatalf("got %d requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.Method != http.MethodPost || r.Path != "/hotplug" {
		t.Errorf("request %s %s, want POST /hotplug", r.Method, r.Path)
	}
	for k, want := range map[string]string{
		"Content-Type":  "application/json",
		"User-Agent":    "hotplugd",
		"Authorization": "Bearer t0k",
		"X-Source":      "lab",
	} {
		if got := r.Header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}

	var doc map[string]any
	if err := json.Unmarshal(r.Body, &doc); err != nil {
		t.Fatalf("body is not JSON: %v\n%s", err, r.Body)
	}
	ts, _ := doc["time"].(string)
	when, err := time.Parse(time.RFC3339, ts)
	if err != nil || when.Before(before) || when.After(time.Now()) {
		t.Errorf("time %q: not an RFC 3339 time of now (%v)", ts, err)
	}
	delete(doc, "time")
	env := map[string]any{}
	for _, p := range ev.Props {
		env[p.Key] = p.Value
	}
	want := map[string]any{
		"rule":    "usb-stick",
		"message": "Mounted STICK at /media/STICK",
		"event": map[string]any{
			"action":    "add",
			"devpath":   ev.DevPath,
			"subsystem": "block",
			"devtype":   "partition",
			"devname":   "sdb1",
			"devnode":   "/dev/sdb1",
			"seqnum":    float64(5187),
			"source":    "kernel",
			"fs": map[string]any{
				"type": "vfat", "label": "STICK", "uuid": "5E2F-1A3B", "usage": "filesystem", "version": "FAT32",
			},
			"env":        env,
			"mount_path": "/media/STICK",
		},
	}
	if diff := cmp.Diff(want, doc); diff != "" {
		t.Errorf("document (-want +got):\n%s", diff)
	}
	if got, want := f.n.Stats(), (NotifyStats{Delivered: 1}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

// TestWebhookBodyBytes: the document's bytes, its keys in their order;
// fs has all five keys, set or not.
func TestWebhookBodyBytes(t *testing.T) {
	ev := testEvent(t, "ACTION=add", "DEVPATH=/devices/x/block/sdb/sdb1", "SUBSYSTEM=block", "DEVNAME=sdb1",
		"DEVTYPE=partition", "SEQNUM=5187")
	now := time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)
	fs := uevent.FS{Type: "vfat", Label: `"}<b>`, UUID: "5E2F-1A3B", Usage: "filesystem", Version: "FAT32"}
	const head = `{"rule":"usb-stick","message":"Mounted","time":"2025-01-02T03:04:05.000006Z",` +
		`"event":{"action":"add","devpath":"/devices/x/block/sdb/sdb1","subsystem":"block","devtype":"partition",` +
		`"devname":"sdb1","devnode":"/dev/sdb1","seqnum":5187,"source":"kernel",`
	const env = `"env":{"ACTION":"add","DEVNAME":"sdb1","DEVPATH":"/devices/x/block/sdb/sdb1","DEVTYPE":"partition",` +
		`"SEQNUM":"5187","SUBSYSTEM":"block"}`
	for _, tt := range []struct {
		name string
		nt   Notification
		want string
	}{
		{"probed and mounted", Notification{Rule: "usb-stick", Message: "Mounted", Event: ev, DevNode: "/dev/sdb1",
			FS: func() uevent.FS { return fs }, MountPath: "/media/STICK"},
			head + `"fs":{"type":"vfat","label":"\"}\u003cb\u003e","uuid":"5E2F-1A3B","usage":"filesystem","version":"FAT32"},` +
				env + `,"mount_path":"/media/STICK"}}`},
		{"no filesystem", Notification{Rule: "usb-stick", Message: "Mounted", Event: ev, DevNode: "/dev/sdb1"},
			head + `"fs":{"type":"","label":"","uuid":"","usage":"","version":""},` + env + `}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := webhookBody(tt.nt, now)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, string(b)); diff != "" {
				t.Errorf("document (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWebhookRetries(t *testing.T) {
	tests := []struct {
		name     string
		statuses []int // answers, in order; 200 after the last
		attempts int
		want     NotifyStats
		requests int
	}{
		{"500 then 200 is delivered once", []int{500}, 3, NotifyStats{Delivered: 1, Retries: 1}, 2},
		{"503 502 then 200", []int{503, 502}, 3, NotifyStats{Delivered: 1, Retries: 2}, 3},
		{"429 is retried", []int{429}, 3, NotifyStats{Delivered: 1, Retries: 1}, 2},
		{"500 until max_attempts gives up", []int{500, 500, 500}, 3, NotifyStats{Failed: 1, Retries: 2}, 3},
		{"400 is final", []int{400}, 3, NotifyStats{Failed: 1}, 1},
		{"404 is final", []int{404}, 3, NotifyStats{Failed: 1}, 1},
		{"a redirect is not followed", []int{307}, 3, NotifyStats{Failed: 1}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Cleanup(func() { goleak.VerifyNone(t) })
			srv := newHookServer(t, func(n int, w http.ResponseWriter, r *http.Request) {
				if n <= len(tt.statuses) {
					if tt.statuses[n-1] == 307 {
						w.Header().Set("Location", "/elsewhere")
					}
					w.Header().Set("Retry-After", "0")
					w.WriteHeader(tt.statuses[n-1])
				}
			})
			f := newNotifyFixture(t, nil)
			a, rule := f.action(t, hookRule("r", "{{ devname }} added", srv.URL,
				fmt.Sprintf("timeout: 5s, max_attempts: %d", tt.attempts)))
			doQuickly(t, a, newTestContext(stickEvent(t, "STICK"), rule))
			f.drain(t)
			if got := f.n.Stats(); got != tt.want {
				t.Errorf("Stats = %+v, want %+v", got, tt.want)
			}
			reqs := srv.requests()
			if len(reqs) != tt.requests {
				t.Fatalf("server got %d requests, want %d", len(reqs), tt.requests)
			}
			for i, r := range reqs[1:] {
				if string(r.Body) != string(reqs[0].Body) {
					t.Errorf("attempt %d sent another document:\n%s\nfirst:\n%s", i+2, r.Body, reqs[0].Body)
				}
			}
		})
	}
}

func TestWebhookDeadServerDoesNotBlock(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	dead := newHookServer(t, hang)
	alive := newHookServer(t, ok)
	f := newNotifyFixture(t, func(c *NotifierConfig) { c.QueueSize = 2 })
	stuck, stuckRule := f.action(t, hookRule("dead-hook", "{{ devname }}", dead.URL, "timeout: 200ms, max_attempts: 2"))
	other, otherRule := f.action(t, hookRule("live-hook", "{{ devname }} {{ fs.label }}", alive.URL, "timeout: 5s"))

	ev := stickEvent(t, "STICK")
	doQuickly(t, stuck, newTestContext(ev, stuckRule))
	dead.wait(t) // the worker is now blocked on the dead server
	for range 4 {
		// Two more wait in the queue; two find it full.
		doQuickly(t, stuck, newTestContext(ev, stuckRule))
	}
	// Another rule's target has a queue and a worker of its own.
	doQuickly(t, other, newTestContext(ev, otherRule))
	r := alive.wait(t)
	var doc struct{ Rule, Message string }
	if err := json.Unmarshal(r.Body, &doc); err != nil || doc.Rule != "live-hook" || doc.Message != "sdb1 STICK" {
		t.Errorf("live webhook got %s (%v)", r.Body, err)
	}

	f.drain(t)
	// Three notifications each timed out twice; two were dropped.
	want := NotifyStats{Delivered: 1, Failed: 3, Dropped: 2, Retries: 3}
	if got := f.n.Stats(); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	if n := len(dead.requests()); n != 6 {
		t.Errorf("dead server got %d requests, want 6", n)
	}
	var gaveUp int
	for _, rec := range f.recs() {
		if rec.Msg == "webhook failed, giving up" {
			gaveUp++
			if !strings.Contains(rec.Str("err"), "deadline exceeded") {
				t.Errorf("give-up error %q does not say it timed out", rec.Str("err"))
			}
		}
	}
	if gaveUp != 3 {
		t.Errorf("%d give-up records, want 3", gaveUp)
	}
}

func TestWebhookUnreachable(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String() + "/hook"
	l.Close() // nothing listens there now: connection refused

	f := newNotifyFixture(t, nil)
	a, rule := f.action(t, hookRule("r", "{{ devname }}", url, "timeout: 1s, max_attempts: 3"))
	doQuickly(t, a, newTestContext(stickEvent(t, "STICK"), rule))
	f.drain(t)
	if got, want := f.n.Stats(), (NotifyStats{Failed: 1, Retries: 2}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	var found bool
	for _, rec := range f.recs() {
		if rec.Msg == "webhook failed, giving up" {
			found = true
			if rec.Str("attempts") != "3" || !strings.Contains(rec.Str("err"), "connection refused") {
				t.Errorf("give-up record: attempts %s, err %q", rec.Str("attempts"), rec.Str("err"))
			}
		}
	}
	if !found {
		t.Error("no give-up record in the log")
	}
}

func TestWebhookQueueFull(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	release := make(chan struct{})
	srv := newHookServer(t, func(_ int, _ http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	f := newNotifyFixture(t, func(c *NotifierConfig) { c.QueueSize = 1 })
	a, rule := f.action(t, hookRule("r", "{{ seqnum }}", srv.URL, "timeout: 30s"))
	ev := stickEvent(t, "STICK")
	doQuickly(t, a, newTestContext(ev, rule))
	srv.wait(t)
	for range 3 {
		doQuickly(t, a, newTestContext(ev, rule)) // one is queued, two dropped
	}
	if got := f.n.Stats().Dropped; got != 2 {
		t.Errorf("Dropped = %d, want 2", got)
	}
	var drops []logtest.Record
	for _, rec := range f.recs() {
		if strings.HasPrefix(rec.Msg, "notification dropped") {
			drops = append(drops, rec)
		}
	}
	// Rate-limited: the first drop is logged, the second is only counted
	// (and reported with the next record).
	if len(drops) != 1 || drops[0].Level != slog.LevelWarn || drops[0].Str("dropped") != "1" || drops[0].Str("queue_size") != "1" {
		t.Errorf("drop records: %+v, want one warning with dropped=1", drops)
	}
	close(release)
	f.drain(t)
	if got, want := f.n.Stats(), (NotifyStats{Delivered: 2, Dropped: 2}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

// hostileLabels are filesystem labels an attacker could put on a stick.
var hostileLabels = []string{
	`"},"admin":true,"x":{"`,
	"line\r\nX-Injected: 1\r\n\r\n",
	`<a href="http://evil.example/">click</a><img src="x" onerror="alert(1)"><b>bold</b>`,
	`%s%d%n%x%!`,
	`'single' "double" \back\slash &amp; &lt;`,
	"{{ devnode }} $(reboot) `id`",
	"\u202etxt.exe \u00e9t\u00e9 \U0001F600",
}

func TestNotifyHostileLabels(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	srv := newHookServer(t, ok)
	f := newNotifyFixture(t, nil)
	a, rule := f.action(t, hookRule("r", "{{ fs.label }}", srv.URL+"/hook?k=v", "headers: {X-Static: static}"))
	for _, label := range hostileLabels {
		doQuickly(t, a, newTestContext(stickEvent(t, label), rule))
		r := srv.wait(t)
		var doc struct {
			Message string
			Event   struct {
				FS  struct{ Label string }
				Env map[string]string
			}
		}
		if err := json.Unmarshal(r.Body, &doc); err != nil {
			t.Fatalf("label %q: body is not JSON: %v\n%s", label, err, r.Body)
		}
		for what, got := range map[string]string{
			"message": doc.Message, "event.fs.label": doc.Event.FS.Label, "event.env.ID_FS_LABEL": doc.Event.Env["ID_FS_LABEL"],
		} {
			if got != label {
				t.Errorf("%s = %q, want %q byte for byte", what, got, label)
			}
		}
		var top map[string]json.RawMessage
		if err := json.Unmarshal(r.Body, &top); err != nil {
			t.Fatal(err)
		}
		if _, ok := top["admin"]; ok || len(top) != 4 {
			t.Errorf("label %q changed the document's keys: %s", label, r.Body)
		}
		if r.Path != "/hook" || r.Header.Get("X-Injected") != "" || r.Header.Get("X-Static") != "static" {
			t.Errorf("label %q reached the request line or headers: path %q, headers %v", label, r.Path, r.Header)
		}
		for k, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, "STICK") || strings.Contains(v, label) {
					t.Errorf("header %s carries the label: %q", k, v)
				}
			}
		}
		want := markupEscape(label)
		if strings.ContainsAny(want, `<>"'`) {
			t.Errorf("desktop body %q is not escaped", want)
		}
	}
	f.drain(t)
}

func TestNotifyLogsMessage(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	f := newNotifyFixture(t, nil)
	a, rule := f.action(t, `
rules:
  - name: usb-stick
    match: action == "add"
    actions:
      - notify: {message: "Mounted {{ fs.label }}"}
`)
	label := "%s\n<b>\"x\""
	doQuickly(t, a, newTestContext(stickEvent(t, label), rule))
	var got []logtest.Record
	for _, rec := range f.recs() {
		if rec.Msg == "notification" {
			got = append(got, rec)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d notification records, want 1", len(got))
	}
	if got[0].Str("message") != "Mounted "+label || got[0].Str("rule") != "usb-stick" ||
		got[0].Str("targets") != "[log]" || got[0].Level != slog.LevelInfo {
		t.Errorf("record %+v", got[0])
	}
}

func TestNotifyNeedsNotifier(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	for _, target := range []string{`webhook: {url: "http://127.0.0.1:9/"}`, `desktop: {}`} {
		rs, err := rules.Parse("rules.yaml", []byte(`
rules:
  - name: r
    match: action == "add"
    actions:
      - notify: {message: m, targets: [`+target+`]}
`))
		if err != nil {
			t.Fatal(err)
		}
		spec := rs.Rules[0].Actions[0].(*rules.NotifySpec)
		if _, err := NewSender(nil, nil, spec.Targets); !errors.Is(err, ErrNoNotifier) {
			t.Errorf("%s without a Notifier: NewSender error %v, want %v", target, err, ErrNoNotifier)
		}
	}
}

func TestNotifyCloseAbandons(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	srv := newHookServer(t, hang)
	f := newNotifyFixture(t, nil)
	a, rule := f.action(t, hookRule("r", "m", srv.URL, "timeout: 1m"))
	doQuickly(t, a, newTestContext(stickEvent(t, "STICK"), rule))
	doQuickly(t, a, newTestContext(stickEvent(t, "STICK"), rule))
	srv.wait(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := f.n.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v after its deadline", d)
	}
	// The one in flight failed, the queued one was abandoned; anything
	// after Close is dropped.
	doQuickly(t, a, newTestContext(stickEvent(t, "STICK"), rule))
	if got, want := f.n.Stats(), (NotifyStats{Failed: 1, Dropped: 2}); got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
}

func TestWebhookBackoff(t *testing.T) {
	n := NewNotifier(NotifierConfig{WebhookBackoff: 500 * time.Millisecond, WebhookMaxBackoff: 4 * time.Second})
	defer n.Close(context.Background())
	for _, tt := range []struct {
		attempt  int
		min, max time.Duration
	}{
		{1, 250 * time.Millisecond, 500 * time.Millisecond},
		{2, 500 * time.Millisecond, time.Second},
		{3, time.Second, 2 * time.Second},
		{4, 2 * time.Second, 4 * time.Second},
		{5, 2 * time.Second, 4 * time.Second},
		{40, 2 * time.Second, 4 * time.Second},
	} {
		for range 100 {
			if d := n.webhookBackoff(tt.attempt); d < tt.min || d > tt.max {
				t.Fatalf("backoff after attempt %d = %v, want in [%v, %v]", tt.attempt, d, tt.min, tt.max)
			}
		}
	}
}
