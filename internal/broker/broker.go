package broker

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/hotplugd/hotplugd/internal/control"
	"github.com/hotplugd/hotplugd/internal/ratelimit"
	"github.com/hotplugd/hotplugd/internal/rules"
)

// Connection parameters.
const (
	keepAlive      = 30 // seconds; the broker sends the Last Will 1.5 times after a silent network
	connectTimeout = 10 * time.Second
	publishTimeout = 10 * time.Second
	// maxInbound is the largest packet the broker may send us (MQTT 5
	// Maximum Packet Size): larger requests are dropped by the broker,
	// smaller ones over control.MaxRequestBytes get an error reply.
	maxInbound = 16 << 20
	// drainTimeout is how long an orderly stop lets the outbox empty
	// before the rest waits on disk for the next start.
	drainTimeout = 3 * time.Second
)

// Config configures a Client.
type Config struct {
	Settings *rules.MQTTSettings
	Version  string
	BootID   string    // the kernel's boot_id: event ids are <boot_id>-<seqnum>
	Since    time.Time // when the daemon started, for presence
	// Handlers answer commands: the control socket's own.
	Handlers control.Handlers
	Log      *slog.Logger

	// backoff is the delay before reconnection attempt n (tests shorten
	// it); nil is an exponential backoff from 250ms to 15s.
	backoff func(int) time.Duration
}

// Client publishes the daemon's events, mounts, notifications and
// presence to one broker, through the on-disk outbox, and answers its
// commands. Nothing it does makes its callers wait for the broker.
type Client struct {
	cfg    Config
	s      *rules.MQTTSettings
	log    *slog.Logger
	topics topics
	ob     *outbox
	drops  drops

	ctx    context.Context // of the connection and the goroutines
	cancel context.CancelFunc
	cm     *autopaho.ConnectionManager
	wg     sync.WaitGroup

	connected atomic.Bool
	published atomic.Uint64
	seq       atomic.Uint64 // of events without a kernel SEQNUM
	errLog    ratelimit.Limiter

	mu         sync.Mutex
	lastErr    string
	lastMounts []byte

	cmds     chan request
	cmdLimit ratelimit.Limiter
}

// New opens the outbox; Start connects. Messages handed over before
// Start wait in the outbox.
func New(cfg Config) (*Client, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := cfg.Settings
	c := &Client{cfg: cfg, s: s, log: cfg.Log, topics: newTopics(s.Prefix, s.Host),
		errLog:   ratelimit.Limiter{Period: 30 * time.Second, Burst: 2},
		cmds:     make(chan request, cmdQueue),
		cmdLimit: ratelimit.Limiter{Period: time.Second, Burst: cmdRate}}
	ob, err := openOutbox(s.QueueDir, s.QueueMax, &c.drops, c.log)
	if err != nil {
		return nil, err
	}
	c.ob = ob
	return c, nil
}

// Start connects to the broker, in the background and again whenever
// the connection is lost, and starts sending the outbox.
func (c *Client) Start() error {
	c.ctx, c.cancel = context.WithCancel(context.Background())
	cm, err := autopaho.NewConnection(c.ctx, c.clientConfig())
	if err != nil {
		c.cancel()
		return fmt.Errorf("mqtt: %w", err)
	}
	c.cm = cm
	c.wg.Go(func() { c.send(c.ctx) })
	if c.s.Commands {
		c.wg.Go(func() { c.serveCommands(c.ctx) })
	}
	c.log.Info("mqtt broker", "url", c.s.URL.String(), "client_id", c.s.ClientID, "topics", c.topics.base+"/#",
		"queued", c.ob.depth())
	return nil
}

func (c *Client) clientConfig() autopaho.ClientConfig {
	s := c.s
	backoff := c.cfg.backoff
	if backoff == nil {
		backoff = autopaho.NewExponentialBackoff(250*time.Millisecond, 15*time.Second, time.Second, 2)
	}
	return autopaho.ClientConfig{
		ServerUrls: []*url.URL{s.URL},
		TlsCfg: &tls.Config{RootCAs: s.RootCAs, Certificates: s.Certificates, ServerName: s.URL.Hostname(),
			MinVersion: tls.VersionTLS12},
		KeepAlive:                     keepAlive,
		CleanStartOnInitialConnection: true,
		ReconnectBackoff:              backoff,
		ConnectTimeout:                connectTimeout,
		ConnectUsername:               s.Username,
		ConnectPassword:               s.Password,
		WillMessage:                   &paho.WillMessage{Topic: c.topics.status, Payload: offline, QoS: 1, Retain: true},
		WillProperties:                &paho.WillProperties{ContentType: jsonType},
		ConnectPacketBuilder: func(cp *paho.Connect, _ *url.URL) (*paho.Connect, error) {
			if cp.Properties == nil {
				cp.Properties = &paho.ConnectProperties{}
			}
			cp.Properties.MaximumPacketSize = new(uint32(maxInbound))
			return cp, nil
		},
		OnConnectionUp:   c.up,
		OnConnectionDown: c.down,
		OnConnectError:   c.connectError,
		ClientConfig: paho.ClientConfig{
			ClientID:          s.ClientID,
			OnPublishReceived: []func(paho.PublishReceived) (bool, error){c.received},
			OnClientError:     func(err error) { c.noteErr("connection", err) },
			OnServerDisconnect: func(d *paho.Disconnect) {
				c.noteErr("broker disconnected", fmt.Errorf("reason code %d", d.ReasonCode))
			},
			PacketTimeout: publishTimeout,
		},
	}
}

// up is the connection coming up: presence, the retained mounts and the
// command subscription are (re)published from a goroutine, as autopaho
// wants its callbacks not to block.
func (c *Client) up(cm *autopaho.ConnectionManager, _ *paho.Connack) {
	c.connected.Store(true)
	c.setErr("")
	c.log.Info("mqtt broker connected", "url", c.s.URL.String())
	c.wg.Go(func() { c.announce(c.ctx, cm) })
}

func (c *Client) down() bool {
	c.connected.Store(false)
	c.log.Warn("mqtt broker connection lost; messages wait in the outbox", "url", c.s.URL.String(), "queued", c.ob.depth())
	return true
}

func (c *Client) connectError(err error) {
	c.noteErr("connecting", err)
}

// noteErr records and logs (at most twice per 30s) a connection problem.
func (c *Client) noteErr(what string, err error) {
	if c.ctx.Err() != nil {
		return
	}
	msg := fmt.Sprintf("%s: %v", what, err)
	c.setErr(msg)
	if ok, suppressed := c.errLog.Allow(time.Now()); ok {
		c.log.Warn("mqtt broker: "+what+" failed; events go on, messages wait in the outbox",
			"url", c.s.URL.String(), "err", err, "suppressed", suppressed)
	}
}

func (c *Client) setErr(s string) {
	c.mu.Lock()
	c.lastErr = s
	c.mu.Unlock()
}

// send publishes the outbox in order, one message at a time, each
// until the broker acknowledges it or it is dropped.
func (c *Client) send(ctx context.Context) {
	for {
		m, err := c.ob.next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Error("mqtt outbox: reading failed; sending stops", "err", err)
			}
			return
		}
		c.deliver(ctx, &m)
	}
}

// deliver publishes m until the broker takes it. A message the broker
// refuses (a reason code of failure other than a quota, or arguments it
// cannot take) would stop everything behind it: it is dropped and
// counted.
func (c *Client) deliver(ctx context.Context, m *message) {
	for attempt := 0; ; attempt++ {
		if err := c.cm.AwaitConnection(ctx); err != nil {
			return
		}
		if c.ob.gone(m.seq) {
			return // dropped as the oldest meanwhile
		}
		resp, err := c.cm.Publish(ctx, &paho.Publish{Topic: m.topic, QoS: m.qos, Retain: m.retain, Payload: m.payload,
			Properties: &paho.PublishProperties{ContentType: m.contentType}})
		switch {
		case err == nil:
			c.published.Add(1)
			c.ob.ack(m.seq)
			return
		case errors.Is(err, paho.ErrInvalidArguments) || resp != nil && resp.ReasonCode >= 0x80 && resp.ReasonCode != 0x97:
			c.drops.refused.Add(1)
			c.ob.ack(m.seq)
			c.noteErr("publishing to "+m.topic, err)
			return
		case ctx.Err() != nil:
			return
		}
		select { // the connection is going down, or the broker is slow
		case <-time.After(min(100*time.Millisecond<<min(attempt, 6), 5*time.Second)):
		case <-ctx.Done():
			return
		}
	}
}

// Close stops the client: it lets the outbox drain for a moment,
// publishes the offline status itself (a Last Will is for deaths), and
// disconnects. What was not sent stays on disk for the next start.
func (c *Client) Close(ctx context.Context) {
	if c.cm == nil {
		c.ob.close()
		return
	}
	if c.connected.Load() {
		c.drain(ctx)
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if _, err := c.cm.Publish(pctx, &paho.Publish{Topic: c.topics.status, QoS: 1, Retain: true, Payload: offline,
			Properties: &paho.PublishProperties{ContentType: jsonType}}); err != nil {
			c.log.Warn("mqtt broker: offline status not published", "err", err)
		}
		cancel()
	}
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_ = c.cm.Disconnect(dctx)
	cancel()
	c.cancel()
	c.wg.Wait()
	c.ob.close()
	c.log.Info("mqtt broker disconnected", "published", c.published.Load(), "queued", c.ob.depth(),
		"dropped", c.drops.total())
}

// drain waits until the outbox is empty, the connection drops or the
// drain timeout passes.
func (c *Client) drain(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for c.ob.depth() > 0 && c.connected.Load() {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Stats are the client's counters, for metrics.
type Stats struct {
	Connected bool
	Published uint64
	Queue     int
	Dropped   map[string]uint64 // by DropReasons
}

// Stats returns the counters.
func (c *Client) Stats() Stats {
	return Stats{Connected: c.connected.Load(), Published: c.published.Load(), Queue: c.ob.depth(),
		Dropped: c.drops.byReason()}
}

// Status is the broker's part of `hotplugd status`.
func (c *Client) Status() *control.BrokerStatus {
	c.mu.Lock()
	last := c.lastErr
	c.mu.Unlock()
	return &control.BrokerStatus{URL: c.s.URL.String(), Connected: c.connected.Load(), Queue: c.ob.depth(),
		Published: c.published.Load(), Dropped: c.drops.total(), LastError: last}
}

// mustJSON marshals what cannot fail to marshal.
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
