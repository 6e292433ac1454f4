package mqtttest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
)

// maxBuffered bounds the messages a Client holds for the test: more
// than any test or benchmark here publishes.
const maxBuffered = 1 << 18

// Client is a test's own MQTT 5 client of a Broker: it subscribes, and
// keeps what arrives, properties included, for Next.
type Client struct {
	t        testing.TB
	c        *paho.Client
	msgs     chan *paho.Publish
	overflow atomic.Bool
}

// Dial connects a client with a clean session to b (over TLS with b's
// CA when b is mqtts) and disconnects it when the test ends.
func Dial(t testing.TB, b *Broker, ca *CA) *Client {
	t.Helper()
	return dial(t, b, ca, fmt.Sprintf("test-%d-%d", os.Getpid(), time.Now().UnixNano()), true)
}

// DialSession connects a client whose session, called id, outlives its
// connection by an hour: what arrives for its subscriptions while it is
// away (the broker stopped, say) waits for the next DialSession of id.
func DialSession(t testing.TB, b *Broker, ca *CA, id string) *Client {
	t.Helper()
	return dial(t, b, ca, id, false)
}

func dial(t testing.TB, b *Broker, ca *CA, id string, clean bool) *Client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", b.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("mqtttest: dial %s: %v", b.Addr(), err)
	}
	if b.TLS {
		pool := x509.NewCertPool()
		pem, err := os.ReadFile(ca.CertFile)
		if err != nil || !pool.AppendCertsFromPEM(pem) {
			t.Fatalf("mqtttest: CA %s: %v", ca.CertFile, err)
		}
		conn = packets.NewThreadSafeConn(tls.Client(conn, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}))
	}
	c := &Client{t: t, msgs: make(chan *paho.Publish, maxBuffered)}
	c.c = paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			select {
			case c.msgs <- pr.Packet:
			default:
				c.overflow.Store(true)
			}
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cp := &paho.Connect{ClientID: id, CleanStart: clean, KeepAlive: 30}
	if !clean {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: new(uint32(3600))}
	}
	if _, err := c.c.Connect(ctx, cp); err != nil {
		t.Fatalf("mqtttest: connect: %v", err)
	}
	t.Cleanup(func() { _ = c.c.Disconnect(&paho.Disconnect{ReasonCode: 0}) })
	return c
}

// Subscribe subscribes to filter at QoS 1.
func (c *Client) Subscribe(filter string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}}); err != nil {
		c.t.Fatalf("mqtttest: subscribe %s: %v", filter, err)
	}
}

// Next returns the next message, or nil after timeout.
func (c *Client) Next(timeout time.Duration) *paho.Publish {
	c.t.Helper()
	if c.overflow.Load() {
		c.t.Fatalf("mqtttest: more than %d messages unread", maxBuffered)
	}
	select {
	case m := <-c.msgs:
		return m
	case <-time.After(timeout):
		return nil
	}
}

// Expect returns the next message on topic, skipping others, and fails
// the test when none comes within timeout.
func (c *Client) Expect(topic string, timeout time.Duration) *paho.Publish {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		m := c.Next(time.Until(deadline))
		if m == nil {
			c.t.Fatalf("mqtttest: nothing on %s within %v", topic, timeout)
		}
		if m.Topic == topic {
			return m
		}
	}
}

// Quiet fails the test if a message whose topic starts with prefix
// arrives within d.
func (c *Client) Quiet(prefix string, d time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		m := c.Next(time.Until(deadline))
		if m == nil {
			return
		}
		if strings.HasPrefix(m.Topic, prefix) {
			c.t.Fatalf("mqtttest: unexpected message on %s: %s", m.Topic, trunc(m.Payload))
		}
	}
}

func trunc(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

// Request publishes payload on topic with a response topic and
// correlation data, as a requester does.
func (c *Client) Request(topic, response string, correlation, payload []byte) {
	c.t.Helper()
	c.Publish(&paho.Publish{Topic: topic, QoS: 1, Payload: payload,
		Properties: &paho.PublishProperties{ResponseTopic: response, CorrelationData: correlation}})
}

// Publish publishes p and waits for the broker's acknowledgement.
func (c *Client) Publish(p *paho.Publish) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.c.Publish(ctx, p); err != nil {
		c.t.Fatalf("mqtttest: publish %s: %v", p.Topic, err)
	}
}
