// Package api serves a node's HTTP endpoints: GET /health, /role, /primary,
// /replica, /status and /metrics, which only read from its Source, and POST /failsafe, a
// leader's signed ask (while the store is unreachable) that this member
// not take over for a lease TTL.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

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

// FailsafeSource answers POST /failsafe (the agent).
type FailsafeSource interface {
	Failsafe(ctx context.Context, req model.FailsafeRequest) model.FailsafeReply
}

// Handler returns the API's routes.
func Handler(src Source, reg prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /role", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
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
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		writeJSON(w, http.StatusOK, src.Status(ctx))
	})
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		fails := src.Health()
		code := http.StatusOK
		if len(fails) > 0 {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, map[string]any{"ok": len(fails) == 0, "role": src.Role(), "failing": fails})
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if fs, ok := src.(FailsafeSource); ok {
		mux.HandleFunc("POST /failsafe", func(w http.ResponseWriter, r *http.Request) {
			var req model.FailsafeRequest
			dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&req); err != nil {
				writeJSON(w, http.StatusBadRequest, model.FailsafeReply{Reason: "bad request body: " + err.Error()})
				return
			}
			rep := fs.Failsafe(r.Context(), req)
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

// Serve runs the API on addr until ctx ends.
func Serve(ctx context.Context, addr string, h http.Handler, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
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
