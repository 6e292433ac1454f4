package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/hotplugd/hotplugd/internal/rules"
)

// Webhook request defaults: the rules loader fills both in, but a target
// made in code may leave them zero.
const (
	defaultWebhookTimeout = 10 * time.Second
	// maxWebhookDrain is how much of a response body is read (and
	// discarded) so the connection can be reused.
	maxWebhookDrain = 64 << 10
)

// webhookUserAgent is the User-Agent of every webhook request, unless the
// rule sets its own.
const webhookUserAgent = "hotplugd"

// errWebhookStatus is the error of an attempt the server answered with a
// status other than 2xx.
var errWebhookStatus = errors.New("unexpected status")

// deliverWebhook POSTs m's document until an attempt succeeds, a final
// answer arrives (2xx, or a 3xx or 4xx other than 429), MaxAttempts is
// reached or ctx (the Notifier's) is cancelled. Network errors, timeouts,
// 5xx and 429 are retried after an exponential, jittered backoff.
func (n *Notifier) deliverWebhook(ctx context.Context, m *notification) {
	t := m.webhook
	attempts := max(t.MaxAttempts, 1)
	for attempt := 1; ; attempt++ {
		retry, after, err := n.postWebhook(ctx, t, m.body)
		if err == nil {
			n.delivered.Add(1)
			n.log.LogAttrs(ctx, slog.LevelDebug, "webhook delivered", slog.String("rule", m.rule),
				slog.String("url", t.URL.Redacted()), slog.Int("attempt", attempt))
			return
		}
		if !retry || attempt >= attempts || ctx.Err() != nil {
			n.failed.Add(1)
			n.log.LogAttrs(ctx, slog.LevelWarn, "webhook failed, giving up", slog.String("rule", m.rule),
				slog.String("url", t.URL.Redacted()), slog.Int("attempts", attempt), slog.Any("err", err))
			return
		}
		delay := max(n.webhookBackoff(attempt), min(after, n.cfg.WebhookMaxBackoff))
		n.log.LogAttrs(ctx, slog.LevelDebug, "webhook attempt failed, retrying", slog.String("rule", m.rule),
			slog.String("url", t.URL.Redacted()), slog.Int("attempt", attempt), slog.Duration("delay", delay),
			slog.Any("err", err))
		n.retries.Add(1)
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
		}
	}
}

// webhookBackoff is the delay after the given failed attempt: the base
// doubled per attempt, capped, then jittered down by up to half so that
// targets failing together do not retry in step.
func (n *Notifier) webhookBackoff(attempt int) time.Duration {
	d := n.cfg.WebhookBackoff
	for i := 1; i < attempt && d < n.cfg.WebhookMaxBackoff; i++ {
		d *= 2
	}
	d = min(d, n.cfg.WebhookMaxBackoff)
	return d/2 + rand.N(d/2+1)
}

// postWebhook makes one attempt. It reports whether a failure is worth
// retrying, and the server's Retry-After (seconds form) if it sent one.
// Only the rule's static headers are sent: nothing from the device goes
// into a header or the URL, only into the JSON body.
func (n *Notifier) postWebhook(ctx context.Context, t *rules.WebhookTarget, body []byte) (retry bool, after time.Duration, err error) {
	timeout := t.Timeout
	if timeout <= 0 {
		timeout = defaultWebhookTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL.String(), bytes.NewReader(body))
	if err != nil {
		return false, 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", webhookUserAgent)
	for k, v := range t.Headers {
		req.Header.Set(k, v)
	}
	resp, err := n.client.Do(req)
	if err != nil {
		// The *url.Error names the URL without its password.
		return true, 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxWebhookDrain))
	resp.Body.Close()
	code := resp.StatusCode
	if code >= 200 && code < 300 {
		return false, 0, nil
	}
	err = fmt.Errorf("%w %s", errWebhookStatus, resp.Status)
	if code == http.StatusTooManyRequests || code >= 500 {
		return true, retryAfter(resp.Header.Get("Retry-After")), err
	}
	return false, 0, err
}

// retryAfter parses the delay-seconds form of Retry-After (RFC 9110,
// section 10.2.3); the date form and anything else count as no advice.
func retryAfter(v string) time.Duration {
	s, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return 0
	}
	return time.Duration(s) * time.Second
}
