// Package api is a node's HTTP API, served over TLS with a certificate
// from the cluster CA that names the node (Identity), and its client
// (Client), which checks that name: GET /health, /role, /primary,
// /replica, /status, /sessions and /metrics, which only read from its
// Source and need no client certificate, and POST /failsafe, a leader's ask (while the store is
// unreachable) that this member not take over for a lease TTL, which
// must come with the leader's own node certificate and a MAC. /health,
// /role, /primary, /replica and /metrics may also be served over plain
// HTTP on a port of their own (PlainHandler) for load balancers and
// Prometheus.
package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/petrel-db/petrel/internal/connlimit"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Source is what the API reports on (the agent).
type Source interface {
	Role() string
	Status(ctx context.Context) model.Status
	Health() []string
}

// PostgresAddrSource is a Source that knows its own Postgres address (the
// agent: its member record's postgres_addr). GET /role then names it in
// HeaderPostgresAddr, so that a proxy, which reads the address from the
// store, routes to it only when the member itself, behind its node
// certificate, says so: a forged record cannot pair a genuine API with
// another server's Postgres.
type PostgresAddrSource interface {
	PostgresAddr() string
}

// HeaderPostgresAddr is GET /role's header naming the member's Postgres
// address as its own record publishes it.
const HeaderPostgresAddr = "Petrel-Postgres-Addr"

// SessionsSource answers GET /sessions (the agent): the ports of its
// Postgres' authenticated client sessions from addr, and its
// authentication_timeout.
type SessionsSource interface {
	Sessions(ctx context.Context, addr netip.Addr) (ports []uint16, authTimeout time.Duration, err error)
}

// Sessions is GET /sessions?addr=A's answer. A proxy that forwarded a TLS
// session (opaque to it) from its address A and port P to this member
// knows the session is authenticated once P is listed; until then, for at
// most AuthTimeoutSeconds, it counts the session as authenticating.
type Sessions struct {
	Ports              []uint16 `json:"ports"`
	AuthTimeoutSeconds float64  `json:"authentication_timeout_seconds"`
}

// FailsafeSource answers POST /failsafe (the agent). peer is the TLS
// connection the request came on (nil over plain HTTP): the agent checks
// the client certificate names the asking leader.
type FailsafeSource interface {
	Failsafe(ctx context.Context, req model.FailsafeRequest, peer *tls.ConnectionState) model.FailsafeReply
}

// PlainHandler is what may be served over plain HTTP: /health, /role,
// /primary, /replica and /metrics, for load balancers and Prometheus.
func PlainHandler(src Source, reg prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	readRoutes(mux, src, reg)
	return mux
}

func readRoutes(mux *http.ServeMux, src Source, reg prometheus.Gatherer) {
	mux.HandleFunc("GET /role", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if as, ok := src.(PostgresAddrSource); ok {
			w.Header().Set(HeaderPostgresAddr, as.PostgresAddr())
		}
		_, _ = w.Write([]byte(src.Role()))
	})
	// Load-balancer checks by status code alone (HAProxy's httpchk,
	// Kubernetes probes): 200 only in the named role, else 503.
	for _, want := range []string{model.RolePrimary, model.RoleReplica} {
		mux.HandleFunc("GET /"+want, func(w http.ResponseWriter, r *http.Request) {
			role := src.Role()
			code := http.StatusOK
			if role != want {
				code = http.StatusServiceUnavailable
			}
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(code)
			_, _ = w.Write([]byte(role))
		})
	}
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		fails := src.Health()
		code := http.StatusOK
		if len(fails) > 0 {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"ok": len(fails) == 0, "role": src.Role(), "failing": fails})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
}

// Handler returns the API's routes (served over TLS).
func Handler(src Source, reg prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	readRoutes(mux, src, reg)
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		writeJSON(w, http.StatusOK, src.Status(ctx))
	})
	if ss, ok := src.(SessionsSource); ok {
		mux.HandleFunc("GET /sessions", func(w http.ResponseWriter, r *http.Request) {
			addr, err := netip.ParseAddr(r.URL.Query().Get("addr"))
			if err != nil {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "addr: want an IP address"})
				return
			}
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			ports, timeout, err := ss.Sessions(ctx, addr)
			if err != nil {
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
				return
			}
			if ports == nil {
				ports = []uint16{}
			}
			writeJSON(w, http.StatusOK, Sessions{Ports: ports, AuthTimeoutSeconds: timeout.Seconds()})
		})
	}
	if fs, ok := src.(FailsafeSource); ok {
		mux.HandleFunc("POST /failsafe", func(w http.ResponseWriter, r *http.Request) {
			var req model.FailsafeRequest
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				writeJSON(w, http.StatusBadRequest, model.FailsafeReply{Reason: "bad request body: " + err.Error()})
				return
			}
			rep := fs.Failsafe(r.Context(), req, r.TLS)
			code := http.StatusOK
			if !rep.OK {
				code = http.StatusConflict
			}
			writeJSON(w, code, rep)
		})
	}
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Limits bound the API's connections, so that a flood of connections
// (slow ones above all) from one host cannot keep the members, proxies,
// edges and operators out of /health, /role and /status.
type Limits struct {
	// MaxConns bounds the connections open at once; further ones wait in
	// the kernel's backlog until one closes. 0: 512.
	MaxConns int
	// MaxConnsPerSource bounds the connections from one source (an IPv4
	// address or an IPv6 /64); further ones are closed at once, before
	// they take one of MaxConns. 0: 128 (the processes of `petrel up` all
	// share loopback). Negative: no bound.
	MaxConnsPerSource int
}

// The server's timeouts: a connection that sends its headers slowly is
// closed after apiReadHeaderTimeout, one idle between requests after
// apiIdleTimeout, so a slow client holds a connection slot only so long.
const (
	apiReadHeaderTimeout = 5 * time.Second
	apiReadTimeout       = 10 * time.Second
	apiWriteTimeout      = 10 * time.Second
	apiIdleTimeout       = 30 * time.Second
)

// Serve runs the API on ln until ctx ends, and closes ln; over TLS with
// tlsCfg (nil: plain HTTP, for PlainHandler only). reg (optional) receives
// the count of connections refused by lim.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, tlsCfg *tls.Config, lim Limits, reg prometheus.Registerer, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if lim.MaxConns <= 0 {
		lim.MaxConns = 512
	}
	if lim.MaxConnsPerSource == 0 {
		lim.MaxConnsPerSource = 128
	}
	refused := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "petrel_api_connections_refused_total",
		Help: "HTTP API connections closed at once because their source already held its share (api_max_conns_per_source).",
	})
	if reg != nil {
		if err := reg.Register(refused); err != nil {
			// A node's TLS and plain listeners share the series.
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				_ = ln.Close()
				return fmt.Errorf("registering the API's metrics: %w", err)
			}
			refused = are.ExistingCollector.(prometheus.Counter)
		}
	}
	// Counted before TLS: a client slow to finish its handshake holds a
	// slot of its source's like any other.
	ln = connlimit.Listen(ln, lim.MaxConns, lim.MaxConnsPerSource, refused.Inc)
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	srv := &http.Server{
		// Failed handshakes (scanners, clients that do not trust the CA)
		// are the client's problem: debug, not stderr.
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		TLSConfig:         tlsCfg,
		Handler:           h,
		ReadHeaderTimeout: apiReadHeaderTimeout,
		ReadTimeout:       apiReadTimeout,
		WriteTimeout:      apiWriteTimeout,
		IdleTimeout:       apiIdleTimeout,
		MaxHeaderBytes:    16 << 10,
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("api server", "err", err)
		return err
	}
	return nil
}
