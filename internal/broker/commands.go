package broker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/hotplugd/hotplugd/internal/control"
)

// Bounds of commands: a publisher on P/cmd/ may send much and often,
// and what it asks for (an eject, a reload) may take long.
const (
	cmdQueue  = 8  // requests waiting for the one worker
	cmdRate   = 10 // requests answered per second; more get an error
	maxReply  = 1024
	verbsList = "status, eject, trigger or reload"
)

// request is one command received, copied out of its packet.
type request struct {
	verb          string
	payload       []byte
	responseTopic string
	correlation   []byte
	err           string // refused before it reached the worker
}

// received takes a PUBLISH on P/cmd/<verb> (the only subscription) to
// the command worker. It runs on the client's reading goroutine, so it
// only copies and queues; a full queue drops the request, as the broker
// would for a slow consumer.
func (c *Client) received(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	verb, ok := strings.CutPrefix(p.Topic, c.topics.cmd)
	if !ok || !c.s.Commands {
		return false, nil
	}
	r := request{verb: verb}
	if p.Properties != nil {
		r.responseTopic, r.correlation = p.Properties.ResponseTopic, bytes.Clone(p.Properties.CorrelationData)
	}
	if err := c.replyTopicOK(r.responseTopic); err != nil {
		c.noteErr("command "+level(verb), err)
		return true, nil
	}
	if len(p.Payload) > control.MaxRequestBytes {
		r.err = fmt.Sprintf("request too large: %d bytes, at most %d", len(p.Payload), control.MaxRequestBytes)
	} else {
		r.payload = bytes.Clone(p.Payload)
	}
	select {
	case c.cmds <- r:
	default:
		c.noteErr("command "+level(verb), errors.New("too many commands waiting; request dropped"))
	}
	return true, nil
}

// replyTopicOK refuses a response topic that is no topic, or one of the
// daemon's own topics other than P/reply/...: a request must not make
// the daemon speak for itself on its status, events or commands.
func (c *Client) replyTopicOK(t string) error {
	switch {
	case t == "":
		return errors.New("request without a response topic: nothing to answer on")
	case len(t) > maxReply || strings.ContainsAny(t, "+#\x00"):
		return errors.New("request with a response topic that is not a topic name")
	case strings.HasPrefix(t, c.topics.base+"/") && !strings.HasPrefix(t, c.topics.reply):
		return fmt.Errorf("response topic %q is one of this host's own; use one under %s", t, c.topics.reply)
	}
	return nil
}

// serveCommands answers requests one at a time until ctx ends.
func (c *Client) serveCommands(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-c.cmds:
			c.answer(ctx, r)
		}
	}
}

// answer runs one request through the control socket's handlers and
// publishes their JSON, or {"error": ...}, on its response topic with
// its correlation data.
func (c *Client) answer(ctx context.Context, r request) {
	if ok, _ := c.cmdLimit.Allow(time.Now()); !ok && r.err == "" {
		r.err = fmt.Sprintf("too many requests: at most %d a second", cmdRate)
	}
	var body any
	if r.err == "" {
		var err error
		if body, err = c.run(ctx, r); err != nil {
			r.err = err.Error()
		}
	}
	if r.err != "" {
		body = control.ErrorBody{Error: r.err}
	}
	c.log.Info("mqtt command", "verb", level(r.verb), "response_topic", r.responseTopic, "err", r.err)
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	_, err := c.cm.Publish(pctx, &paho.Publish{Topic: r.responseTopic, QoS: 1, Payload: mustJSON(body),
		Properties: &paho.PublishProperties{CorrelationData: r.correlation, ContentType: jsonType}})
	if err != nil {
		c.noteErr("answering on "+r.responseTopic, err)
	}
}

// run is the command: the same handler, with the same parsing, as the
// control socket's endpoint of that name.
func (c *Client) run(ctx context.Context, r request) (any, error) {
	h := c.cfg.Handlers
	switch r.verb {
	case "status":
		if err := control.ParseEmpty(r.payload); err != nil {
			return nil, fmt.Errorf("status request: %w", err)
		}
		return h.Status(), nil
	case "reload":
		if err := control.ParseEmpty(r.payload); err != nil {
			return nil, fmt.Errorf("reload request: %w", err)
		}
		return h.Reload(), nil
	case "eject":
		req, timeout, err := control.ParseEject(r.payload)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return h.Eject(ctx, req), nil
	case "trigger":
		req, err := control.ParseTrigger(r.payload)
		if err != nil {
			return nil, err
		}
		return h.Trigger(ctx, req), nil
	}
	return nil, fmt.Errorf("unknown command %q (want %s)", level(r.verb), verbsList)
}
