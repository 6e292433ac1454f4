package control

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"
)

// DefaultSocket is where the daemon listens unless settings.control says
// otherwise.
const DefaultSocket = "/run/hotplugd/control"

// ErrNoDaemon: nothing answers on the socket.
var ErrNoDaemon = errors.New("no hotplugd daemon answers")

// ErrForbidden: the daemon refused the client (HTTP 403).
var ErrForbidden = errors.New("permission denied")

// Client talks to a daemon's control socket; every verb that asks the
// daemon uses one.
type Client struct {
	Socket string
	http   *http.Client
}

// NewClient returns a client of the socket at path ("" for DefaultSocket).
func NewClient(path string) *Client {
	if path == "" {
		path = DefaultSocket
	}
	c := &Client{Socket: path}
	c.http = &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxResponseHeaderBytes: maxHeaderBytes,
	}}
	return c
}

// Status is GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	return s, c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
}

// Eject is POST /v1/eject.
func (c *Client) Eject(ctx context.Context, req EjectRequest) (EjectResult, error) {
	var res EjectResult
	return res, c.do(ctx, http.MethodPost, "/v1/eject", req, &res)
}

// Reload is POST /v1/reload.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var res ReloadResult
	return res, c.do(ctx, http.MethodPost, "/v1/reload", struct{}{}, &res)
}

// Settle is GET /v1/settle: it returns when the daemon's queue is empty
// and no action runs, or after timeout.
func (c *Client) Settle(ctx context.Context, timeout time.Duration) (SettleResult, error) {
	var res SettleResult
	q := url.Values{"timeout": {timeout.String()}}
	return res, c.do(ctx, http.MethodGet, "/v1/settle?"+q.Encode(), nil, &res)
}

// do sends one request and decodes the answer into out (a *bytes.Buffer
// takes it as it is).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://hotplugd"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if isNoDaemon(err) {
			return fmt.Errorf("%w on %s", ErrNoDaemon, c.Socket)
		}
		if errors.Is(err, syscall.EACCES) {
			return fmt.Errorf("%w: the socket %s is root's and control.group's only", ErrForbidden, c.Socket)
		}
		return fmt.Errorf("control socket %s: %w", c.Socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("control socket %s: %w", c.Socket, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorBody
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = resp.Status
		}
		if resp.StatusCode == http.StatusForbidden {
			return fmt.Errorf("%w: %s", ErrForbidden, e.Error)
		}
		return errors.New(e.Error)
	}
	if b, ok := out.(*bytes.Buffer); ok {
		b.Write(data)
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("control socket %s: answer: %w", c.Socket, err)
	}
	return nil
}

// isNoDaemon tells a socket nobody listens on (or none at all) from
// other failures.
func isNoDaemon(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOTDIR)
}
