package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hotplugd/hotplugd/internal/actions/scope"
	"github.com/hotplugd/hotplugd/internal/rules"
	"github.com/hotplugd/hotplugd/internal/uevent"
)

// Defaults of NotifierConfig.
const (
	// DefaultNotifyQueue is how many notifications may wait per target.
	DefaultNotifyQueue = 64
	// DefaultWebhookBackoff is the delay before a webhook's second
	// attempt; each further retry doubles it.
	DefaultWebhookBackoff = 500 * time.Millisecond
	// DefaultWebhookMaxBackoff caps the delay between two attempts.
	DefaultWebhookMaxBackoff = 30 * time.Second
	// DefaultDesktopTimeout bounds the delivery of one notification to
	// one desktop session, after which the helper is killed.
	DefaultDesktopTimeout = 5 * time.Second
	// DefaultRunUserDir holds each logged-in user's runtime directory,
	// with the session bus socket at UID/bus (pam_systemd, elogind).
	DefaultRunUserDir = "/run/user"
	// DefaultSystemBusAddress is where logind is asked for sessions.
	DefaultSystemBusAddress = "unix:path=/run/dbus/system_bus_socket"
)

// dropLogEvery rate-limits the warning about a full queue: one record
// per target and interval, carrying the count since the last one.
const dropLogEvery = 10 * time.Second

// NotifierConfig configures a Notifier; zero fields take the defaults.
type NotifierConfig struct {
	Log *slog.Logger
	// QueueSize bounds the notifications waiting per target, not counting
	// the one being delivered. A notification for a full queue is dropped
	// and counted (default DefaultNotifyQueue).
	QueueSize int
	// Transport sends webhook requests (default: a clone of
	// http.DefaultTransport). Redirects are never followed.
	Transport http.RoundTripper
	// WebhookBackoff and WebhookMaxBackoff shape the retry delays
	// (defaults DefaultWebhookBackoff, DefaultWebhookMaxBackoff).
	WebhookBackoff, WebhookMaxBackoff time.Duration
	// DesktopTimeout bounds one desktop delivery to one user (default
	// DefaultDesktopTimeout).
	DesktopTimeout time.Duration
	// RunUserDir is where users' session buses are found, as
	// RunUserDir/UID/bus (default DefaultRunUserDir).
	RunUserDir string
	// SystemBusAddress is the D-Bus address of the system bus, where
	// logind lists sessions (default DefaultSystemBusAddress).
	SystemBusAddress string
	// Scopes starts the desktop helper in a scope of the session user's
	// slice under systemd; nil starts it in the daemon's cgroup.
	Scopes *scope.Starter
	// MQTT publishes the mqtt target's notifications (the broker's
	// client); nil when settings.mqtt configures no broker.
	MQTT Publisher

	// helperArgs are the arguments of the desktop helper after argv[0];
	// tests point the re-executed test binary at its helper test.
	helperArgs []string
	// helperEnv is added to the helper's environment, for tests too.
	helperEnv []string
}

// NotifyStats counts what a Notifier did since it was made.
type NotifyStats struct {
	// Delivered: a webhook answered 2xx, or a desktop session's
	// notification server accepted the notification.
	Delivered uint64
	// Failed: a webhook gave up (last attempt failed, or a final answer
	// like 4xx), or the delivery to one desktop session failed or timed
	// out.
	Failed uint64
	// Dropped: not delivered because the target's queue was full, or the
	// Notifier was closing.
	Dropped uint64
	// Retries: webhook attempts after the first.
	Retries uint64
}

// Notifier delivers notifications to their targets other than the log:
// webhooks and desktop sessions. It lives as long as the daemon, so queues
// and counters survive a reload; actions built from any rule set share it.
//
// Each target (a webhook URL with its headers, or the desktop) has a
// bounded queue and at most one worker goroutine, started when the queue
// gets work and gone when it is empty. Handing a notification over never
// waits: a dead webhook or a hung desktop fills its own queue and makes
// it drop, while events and other targets carry on.
type Notifier struct {
	cfg    NotifierConfig
	log    *slog.Logger
	client *http.Client

	// ctx is the workers' context; Close cancels it once the drain
	// deadline has passed, aborting requests and killing helpers.
	ctx    context.Context
	cancel context.CancelFunc

	mu      sync.Mutex // guards closed, webhook and the WaitGroup's Add
	closed  bool
	wg      sync.WaitGroup // running workers
	webhook map[string]*notifyQueue
	desktop *notifyQueue

	delivered, failed, dropped, retries atomic.Uint64
}

// NewNotifier returns a Notifier with no worker running; Close stops it.
func NewNotifier(cfg NotifierConfig) *Notifier {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = DefaultNotifyQueue
	}
	if cfg.Transport == nil {
		cfg.Transport = http.DefaultTransport.(*http.Transport).Clone()
	}
	if cfg.WebhookBackoff <= 0 {
		cfg.WebhookBackoff = DefaultWebhookBackoff
	}
	if cfg.WebhookMaxBackoff <= 0 {
		cfg.WebhookMaxBackoff = DefaultWebhookMaxBackoff
	}
	if cfg.DesktopTimeout <= 0 {
		cfg.DesktopTimeout = DefaultDesktopTimeout
	}
	if cfg.RunUserDir == "" {
		cfg.RunUserDir = DefaultRunUserDir
	}
	if cfg.SystemBusAddress == "" {
		cfg.SystemBusAddress = DefaultSystemBusAddress
	}
	n := &Notifier{
		cfg: cfg,
		log: cfg.Log,
		client: &http.Client{
			Transport: cfg.Transport,
			// A webhook is configured with its final URL; following a
			// redirect would resend the body (and maybe the rule's
			// headers) somewhere the rule never named.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		webhook: make(map[string]*notifyQueue),
	}
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.desktop = &notifyQueue{n: n, target: "desktop", deliver: n.deliverDesktop}
	return n
}

// Stats returns the counters.
func (n *Notifier) Stats() NotifyStats {
	return NotifyStats{
		Delivered: n.delivered.Load(),
		Failed:    n.failed.Load(),
		Dropped:   n.dropped.Load(),
		Retries:   n.retries.Load(),
	}
}

// Close stops taking notifications and waits for the queued ones to be
// delivered until ctx is done; then it aborts what is left (requests in
// flight, backoff waits, desktop helpers) and returns once every worker
// has returned, with ctx's error if anything was abandoned. Close may be
// called more than once.
func (n *Notifier) Close(ctx context.Context) error {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	done := make(chan struct{})
	go func() {
		n.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		select {
		case <-done: // finished just in time
		default:
			err = fmt.Errorf("notifications abandoned: %w", context.Cause(ctx))
		}
	}
	n.cancel()
	<-done
	if t, ok := n.cfg.Transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	return err
}

// webhookQueue returns the queue of t, shared by every rule that names
// the same URL with the same headers, in this rule set or the next: a
// reload keeps what is queued. The queue of a target no rule names any
// more stays behind, empty and without a goroutine.
func (n *Notifier) webhookQueue(t *rules.WebhookTarget) *notifyQueue {
	var key strings.Builder
	key.WriteString(t.URL.String())
	for _, k := range slices.Sorted(maps.Keys(t.Headers)) {
		key.WriteString("\x00" + k + "\x00" + t.Headers[k])
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	q, ok := n.webhook[key.String()]
	if !ok {
		q = &notifyQueue{n: n, target: "webhook " + t.URL.Redacted(), deliver: n.deliverWebhook}
		n.webhook[key.String()] = q
	}
	return q
}

// notification is one message on its way to one target: everything the
// target needs, copied out of the event so that nothing of the event's
// handling is referenced once Do has returned.
type notification struct {
	rule    string
	message string
	// webhook, for a webhook target: the target and the JSON document.
	webhook *rules.WebhookTarget
	body    []byte
}

// notifyQueue is the bounded FIFO of one target with its worker.
type notifyQueue struct {
	n       *Notifier
	target  string // for the log: "desktop", "webhook URL"
	deliver func(ctx context.Context, m *notification)

	mu          sync.Mutex
	pending     []*notification
	running     bool // a worker goroutine is on it
	dropsToLog  uint64
	lastDropLog time.Time
}

// push queues m, or drops and counts it when the queue is full or the
// Notifier closed. It never waits for anything but the queue's lock.
func (q *notifyQueue) push(m *notification) {
	n := q.n
	q.mu.Lock()
	ok := len(q.pending) < n.cfg.QueueSize
	if ok && !q.running {
		// Starting a worker is decided under n.mu, so that no worker
		// starts after Close has begun waiting for them.
		n.mu.Lock()
		if ok = !n.closed; ok {
			n.wg.Add(1)
			q.running = true
			go q.work()
		}
		n.mu.Unlock()
	}
	if ok {
		q.pending = append(q.pending, m)
		q.mu.Unlock()
		return
	}
	n.dropped.Add(1)
	q.dropsToLog++
	now := time.Now()
	logIt := q.lastDropLog.IsZero() || now.Sub(q.lastDropLog) >= dropLogEvery
	drops := q.dropsToLog
	if logIt {
		q.lastDropLog, q.dropsToLog = now, 0
	}
	q.mu.Unlock()
	if logIt {
		n.log.LogAttrs(context.Background(), slog.LevelWarn, "notification dropped: queue full or closing",
			slog.String("target", q.target), slog.String("rule", m.rule),
			slog.Uint64("dropped", drops), slog.Int("queue_size", n.cfg.QueueSize))
	}
}

// work delivers the queue's notifications in order until it is empty.
func (q *notifyQueue) work() {
	defer q.n.wg.Done()
	for {
		q.mu.Lock()
		if len(q.pending) == 0 {
			q.running = false
			q.pending = nil
			q.mu.Unlock()
			return
		}
		m := q.pending[0]
		q.pending[0] = nil
		q.pending = q.pending[1:]
		q.mu.Unlock()
		if q.n.ctx.Err() != nil {
			q.n.dropped.Add(1) // abandoned by Close
			continue
		}
		q.deliver(q.n.ctx, m)
	}
}

// Publisher hands a notification's document to the MQTT broker's
// outbox, for its topic notify/<rule>; it must not wait for the broker.
type Publisher interface {
	PublishNotify(rule string, doc []byte)
}

// ErrNoBroker: a rule names the mqtt target, and the daemon started
// without settings.mqtt.
var ErrNoBroker = errors.New("the mqtt target needs settings.mqtt when the daemon starts (restart it)")

// ErrNoNotifier is a programming error: a sender with targets besides
// the log was built without a Notifier.
var ErrNoNotifier = errors.New("webhook and desktop targets need a Notifier")

// webhookRoute is one webhook target of a sender and its queue.
type webhookRoute struct {
	target *rules.WebhookTarget
	queue  *notifyQueue
}

// Notification is one rendered message of a rule, with what a webhook's
// document says about the event it is for.
type Notification struct {
	Rule    string
	Message string
	Event   *uevent.Event
	DevNode string
	// FS tells the filesystem, for a webhook's document; it may probe the
	// device, so it is called only when there is a webhook target.
	FS        func() uevent.FS
	MountPath string // "" unless a mount came before
}

// Sender hands the notifications of one notify action to its targets. It
// is built when rules load.
type Sender struct {
	log      *slog.Logger
	webhooks []webhookRoute // one per webhook target, in order
	desktop  *notifyQueue   // nil without a desktop target
	mqtt     Publisher      // nil without an mqtt target
	targets  []string       // for the log
}

// NewSender returns the sender of targets, through n's queues. n may be
// nil when the only target is the log.
func NewSender(n *Notifier, log *slog.Logger, targets []rules.Target) (*Sender, error) {
	s := &Sender{log: log, targets: []string{"log"}}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for _, t := range targets {
		switch t := t.(type) {
		case *rules.LogTarget:
			continue
		case *rules.WebhookTarget:
			if n == nil {
				return nil, ErrNoNotifier
			}
			s.webhooks = append(s.webhooks, webhookRoute{t, n.webhookQueue(t)})
		case *rules.DesktopTarget:
			if n == nil {
				return nil, ErrNoNotifier
			}
			s.desktop = n.desktop
		case *rules.MQTTTarget:
			if n == nil || n.cfg.MQTT == nil {
				return nil, ErrNoBroker
			}
			s.mqtt = n.cfg.MQTT
		default:
			return nil, fmt.Errorf("unknown notify target %q", t.Kind())
		}
		s.targets = append(s.targets, t.Kind())
	}
	return s, nil
}

// Send logs nt (the log is always a target) and hands it to the other
// targets' queues. It returns without waiting for any delivery; a full
// queue drops the notification and counts it, so a dead webhook or a
// hung desktop never holds up the event.
func (s *Sender) Send(ctx context.Context, nt Notification) error {
	s.log.LogAttrs(ctx, slog.LevelInfo, "notification", slog.String("rule", nt.Rule),
		slog.String("devpath", nt.Event.DevPath), slog.String("message", nt.Message),
		slog.Any("targets", s.targets))
	if len(s.webhooks) > 0 || s.mqtt != nil {
		body, err := webhookBody(nt, time.Now())
		if err != nil {
			return fmt.Errorf("webhook document: %w", err)
		}
		for _, w := range s.webhooks {
			w.queue.push(&notification{rule: nt.Rule, message: nt.Message, webhook: w.target, body: body})
		}
		if s.mqtt != nil {
			s.mqtt.PublishNotify(nt.Rule, body) // the broker's document is the webhook's
		}
	}
	if s.desktop != nil {
		s.desktop.push(&notification{rule: nt.Rule, message: nt.Message})
	}
	return nil
}

// webhookDoc is the JSON document a webhook receives. Every string is a
// JSON string built by encoding/json, so a device-controlled label with
// quotes or braces stays one value; bytes that are not UTF-8 become
// U+FFFD, as encoding/json does.
type webhookDoc struct {
	Rule    string       `json:"rule"`
	Message string       `json:"message"`
	Time    string       `json:"time"` // RFC 3339
	Event   webhookEvent `json:"event"`
}

type webhookEvent struct {
	Action    string            `json:"action"`
	DevPath   string            `json:"devpath"`
	Subsystem string            `json:"subsystem"`
	DevType   string            `json:"devtype"`
	DevName   string            `json:"devname"`
	DevNode   string            `json:"devnode"`
	Seqnum    uint64            `json:"seqnum"`
	Source    string            `json:"source"`
	FS        uevent.FS         `json:"fs"` // the keys of a recording's fs
	Env       map[string]string `json:"env"`
	MountPath string            `json:"mount_path,omitempty"`
}

// webhookBody builds the document of one notification.
func webhookBody(nt Notification, now time.Time) ([]byte, error) {
	ev := nt.Event
	var fs uevent.FS
	if nt.FS != nil {
		fs = nt.FS()
	}
	return json.Marshal(webhookDoc{
		Rule:    nt.Rule,
		Message: nt.Message,
		Time:    now.Format(time.RFC3339Nano),
		Event: webhookEvent{
			Action:    ev.Action,
			DevPath:   ev.DevPath,
			Subsystem: ev.Subsystem,
			DevType:   ev.DevType,
			DevName:   ev.DevName,
			DevNode:   nt.DevNode,
			Seqnum:    ev.Seqnum,
			Source:    string(ev.Source),
			FS:        fs,
			Env:       ev.Env(),
			MountPath: nt.MountPath,
		},
	})
}
