package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// Limits of the server: a client that sends nothing, sends slowly or sends
// too much is cut off without delaying anything else.
const (
	maxHeaderBytes    = 8 << 10
	maxBodyBytes      = 64 << 10
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second // settle and eject extend their own
	idleTimeout       = 30 * time.Second
	maxConns          = 64
	maxSettle         = time.Hour
)

// Handlers are what the socket serves; the daemon implements them, and
// the broker calls the same ones.
type Handlers interface {
	Status() Status
	Eject(ctx context.Context, req EjectRequest) EjectResult
	Reload() ReloadResult
	Trigger(ctx context.Context, req TriggerRequest) TriggerResult
	Settle(ctx context.Context, timeout time.Duration) SettleResult
	WriteMetrics(w io.Writer) error
}

// Config configures a Server.
type Config struct {
	Socket string // the socket's path
	// Group may read (status, settle, metrics); -1 for nobody but root
	// and the daemon's own user, who may do everything.
	Group    int
	Handlers Handlers
	Log      *slog.Logger
}

// Server is the control socket.
type Server struct {
	cfg    Config
	ln     net.Listener
	http   *http.Server
	uid    int // the daemon's own
	closed sync.Once
}

// Listen makes the control socket: mode 0660, owned by root and Group. A
// socket file left by a crashed daemon is replaced; one a live daemon
// answers on is an error.
func Listen(cfg Config) (*Server, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ln, err := listenUnix(cfg.Socket, cfg.Group)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, ln: limitListener(ln, maxConns), uid: os.Geteuid()}
	s.http = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ConnContext:       withPeer,
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Serve answers until Close.
func (s *Server) Serve() error {
	err := s.http.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the server within ctx and removes the socket file, once.
func (s *Server) Close(ctx context.Context) error {
	var err error
	s.closed.Do(func() {
		if err = s.http.Shutdown(ctx); err != nil {
			s.http.Close()
		}
		if rerr := os.Remove(s.cfg.Socket); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	})
	return err
}

// access is what a request needs of its client.
type access int

const (
	read  access = iota // status, settle, metrics
	admin               // eject, reload, trigger
)

func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.guard(read, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.cfg.Handlers.Status())
	}))
	mux.HandleFunc("POST /v1/eject", s.guard(admin, s.eject))
	mux.HandleFunc("POST /v1/reload", s.guard(admin, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.cfg.Handlers.Reload())
	}))
	mux.HandleFunc("POST /v1/trigger", s.guard(admin, s.trigger))
	mux.HandleFunc("GET /v1/settle", s.guard(read, s.settle))
	mux.HandleFunc("GET /metrics", s.guard(read, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		if err := s.cfg.Handlers.WriteMetrics(w); err != nil {
			s.cfg.Log.Error("writing metrics", "err", err)
		}
	}))
	return mux
}

// guard lets a request through when its client, as the kernel vouches
// for it (SO_PEERCRED, SO_PEERGROUPS), may do what it asks: root and the
// daemon's own user everything, members of the control group read.
func (s *Server) guard(need access, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, ok := r.Context().Value(peerKey{}).(peer)
		switch {
		case !ok:
			writeError(w, http.StatusForbidden, "the peer's credentials are unknown")
			return
		case p.uid == 0 || int(p.uid) == s.uid:
		case need == read && s.cfg.Group >= 0 && p.inGroup(s.cfg.Group):
		default:
			what := "read the daemon's state"
			if need == admin {
				what = "change the daemon's state"
			}
			writeError(w, http.StatusForbidden, fmt.Sprintf("uid %d may not %s", p.uid, what))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes)
		h(w, r)
	}
}

func (s *Server) eject(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "eject request: "+err.Error())
		return
	}
	req, timeout, err := ParseEject(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout + writeTimeout))
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	writeJSON(w, http.StatusOK, s.cfg.Handlers.Eject(ctx, req))
}

func (s *Server) trigger(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, "trigger request: "+err.Error())
		return
	}
	req, err := ParseTrigger(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, s.cfg.Handlers.Trigger(r.Context(), req))
}

func (s *Server) settle(w http.ResponseWriter, r *http.Request) {
	timeout := 120 * time.Second
	if v := r.URL.Query().Get("timeout"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			if secs, serr := strconv.ParseFloat(v, 64); serr == nil {
				d, err = time.Duration(secs*float64(time.Second)), nil
			}
		}
		if err != nil || d < 0 {
			writeError(w, http.StatusBadRequest, "settle: timeout: want a duration like 120s")
			return
		}
		timeout = min(d, maxSettle)
	}
	http.NewResponseController(w).SetWriteDeadline(time.Now().Add(timeout + writeTimeout))
	writeJSON(w, http.StatusOK, s.cfg.Handlers.Settle(r.Context(), timeout))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorBody{Error: msg})
}
