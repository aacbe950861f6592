package flyreplay

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
)

// States the library attaches to its replay requests (the edge passes
// them to the target in fly-replay-src). They are fly-ruby's names.
const (
	// StateHTTPMethod: a write method (POST, PUT, PATCH, DELETE) sent to
	// the primary region before the handler ran (ReplayWriteMethods).
	StateHTTPMethod = "http_method"
	// StateCapturedWrite: the handler's write failed read-only on the
	// region's replica and nothing had been written to the response.
	StateCapturedWrite = "captured_write"
)

// Config says where the app runs. The zero Config (or one without a
// Region or PrimaryRegion) never asks for a replay: every handler runs
// locally and a read-only error is an ordinary error.
type Config struct {
	// Region is the region this instance runs in. ConfigFromEnv reads
	// PETREL_REGION, else FLY_REGION.
	Region string

	// PrimaryRegion is the region where the cluster's leader (the only
	// writable member) runs; writes are replayed there. ConfigFromEnv
	// reads PRIMARY_REGION.
	PrimaryRegion string

	// ReplayWriteMethods sends every POST, PUT, PATCH and DELETE that
	// reaches an instance outside the primary region straight to the
	// primary region (409 + fly-replay: region=<primary>;state=http_method)
	// without running the handler. It costs a replay for writes that
	// would have worked locally (none, on a replica) and saves running a
	// handler up to its first write. Off, the handler runs and its
	// read-only error is captured instead (StateCapturedWrite): that
	// also catches a GET that writes.
	ReplayWriteMethods bool

	// Logger receives the read-only errors the library answers with an
	// error status itself. nil means slog.Default().
	Logger *slog.Logger
}

// ConfigFromEnv reads Region from PETREL_REGION (FLY_REGION when unset)
// and PrimaryRegion from PRIMARY_REGION. Set ReplayWriteMethods and
// Logger on the result as needed.
func ConfigFromEnv() Config {
	c := Config{
		Region:        strings.TrimSpace(os.Getenv("PETREL_REGION")),
		PrimaryRegion: strings.TrimSpace(os.Getenv("PRIMARY_REGION")),
	}
	if c.Region == "" {
		c.Region = strings.TrimSpace(os.Getenv("FLY_REGION"))
	}
	return c
}

// InPrimaryRegion is true unless the app is known to run outside the
// primary region (both regions set and different): only then are
// requests replayed.
func (c Config) InPrimaryRegion() bool {
	return c.Region == "" || c.PrimaryRegion == "" || strings.EqualFold(c.Region, c.PrimaryRegion)
}

// Middleware wraps next for an app that runs in every region against the
// region's read replica:
//
//   - With ReplayWriteMethods, a write method outside the primary region
//     is answered at once with 409 and "fly-replay: region=<primary>;
//     state=http_method"; next does not run.
//   - A panic whose value is an error satisfying IsReadOnly (a handler
//     that panics on database errors, as a Rails app raises
//     PG::ReadOnlySqlTransaction) is recovered: outside the primary
//     region, and only if the handler had not written anything to the
//     response yet, the answer is 409 and "fly-replay: region=<primary>;
//     state=captured_write", so the edge replays the request in the
//     primary region. In the primary region it is a 500 (the leader is
//     read-only: a real error, never replayed). Once the response has
//     started, and for any other panic, the panic goes on
//     (http.ErrAbortHandler included).
//
// The edge replays a request only when the response asked for it and
// nothing else, so a handler must not commit a write and then fail
// read-only: put each request's writes in one transaction, or make the
// first statement that writes decide.
//
// next receives a ResponseWriter that tracks whether the response has
// started; it supports http.Flusher and Unwrap (http.ResponseController).
func (c Config) Middleware(next http.Handler) http.Handler {
	return c.handler(func(w *trackingWriter, r *http.Request) { next.ServeHTTP(w, r) })
}

// Wrap is Middleware around a handler that returns its error: a
// read-only error with nothing written is replayed (HandleError); any
// other error, or a read-only one in the primary region, is logged and
// answered 500 (unless the response had started).
func (c Config) Wrap(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return c.handler(func(w *trackingWriter, r *http.Request) {
		err := h(w, r)
		switch {
		case err == nil:
		case w.written:
			c.logger().Error("handler failed after its response started", "method", r.Method, "path", r.URL.Path, "err", err)
		case c.HandleError(w, r, err):
		default:
			c.logger().Error("handler failed", "method", r.Method, "path", r.URL.Path, "err", err)
			http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
		}
	})
}

// HandleError answers a handler's error when it calls for a replay: if
// err is read-only (IsReadOnly) and the app runs outside the primary
// region, it writes the replay response (see Replay) and returns true.
// Otherwise it writes nothing and returns false: the caller handles err.
// Call it only before anything was written to w.
func (c Config) HandleError(w http.ResponseWriter, r *http.Request, err error) bool {
	if !IsReadOnly(err) {
		return false
	}
	return c.Replay(w, r, StateCapturedWrite)
}

// Replay asks the edge to replay r in the primary region, with state
// (attached to the replay; letters, digits, '_', '-', '.'): it writes 409
// and "fly-replay: region=<primary>;state=<state>" and returns true. In
// the primary region (see InPrimaryRegion) it writes nothing and returns
// false.
//
// It never asks twice for the same request: when r carries
// fly-replay-failed (the edge could not reach the primary region and
// sent the request back) or was already replayed here by this library
// (its fly-replay-src state is http_method or captured_write, i.e. the
// regions are misconfigured), it answers 503 instead, and still returns
// true.
func (c Config) Replay(w http.ResponseWriter, r *http.Request, state string) bool {
	if c.InPrimaryRegion() {
		return false
	}
	if f, failed := ReplayFailed(r); failed {
		c.logger().Warn("replay to the primary region failed", "primary_region", c.PrimaryRegion, "reason", f.Reason, "method", r.Method, "path", r.URL.Path)
		w.Header().Set("Retry-After", "1")
		textResponse(w, http.StatusServiceUnavailable, fmt.Sprintf("the primary region %s could not be reached (%s); try again\n", c.PrimaryRegion, orUnknown(f.Reason)))
		return true
	}
	if src, ok := ReplaySource(r); ok && (src.State == StateHTTPMethod || src.State == StateCapturedWrite) {
		c.logger().Error("a request replayed to the primary region arrived outside it: check PRIMARY_REGION and the edge",
			"region", c.Region, "primary_region", c.PrimaryRegion, "from_region", src.Region, "method", r.Method, "path", r.URL.Path)
		textResponse(w, http.StatusServiceUnavailable, fmt.Sprintf("replayed to the primary region %s but served in %s\n", c.PrimaryRegion, c.Region))
		return true
	}
	WriteReplay(w, c.PrimaryRegion, state)
	return true
}

// WriteReplay writes the response that asks the edge to replay the
// request in region: 409 Conflict (fly-ruby's convention) with
// "fly-replay: region=<region>" plus ";state=<state>" when state is not
// empty (characters other than letters, digits, '_', '-' and '.' become
// '_'), and a one-line text body. Use it for reads too (a region picker).
func WriteReplay(w http.ResponseWriter, region, state string) {
	v := "region=" + region
	if state = sanitizeState(state); state != "" {
		v += ";state=" + state
	}
	w.Header().Set(HeaderReplay, v)
	w.Header().Set("Cache-Control", "no-store")
	textResponse(w, http.StatusConflict, "replay in region "+region+"\n")
}

func textResponse(w http.ResponseWriter, code int, body string) {
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, body)
}

func sanitizeState(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-', r == '.':
			return r
		}
		return '_'
	}, s)
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown reason"
	}
	return s
}

func (c Config) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default()
}

func isWriteMethod(m string) bool {
	switch m {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// handler runs serve with a tracking writer and recovers read-only
// panics (see Middleware).
func (c Config) handler(serve func(w *trackingWriter, r *http.Request)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c.ReplayWriteMethods && isWriteMethod(r.Method) && c.Replay(w, r, StateHTTPMethod) {
			return
		}
		tw := &trackingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			err, ok := v.(error)
			if !ok || !IsReadOnly(err) || tw.written {
				panic(v)
			}
			if c.Replay(w, r, StateCapturedWrite) {
				return
			}
			c.logger().Error("write failed: the database is read-only in the primary region", "method", r.Method, "path", r.URL.Path, "err", err)
			textResponse(w, http.StatusInternalServerError, "the database is read-only\n")
		}()
		serve(tw, r)
	})
}

// trackingWriter remembers whether the response has started (status
// line sent or about to be), the one thing that decides whether a
// replay may still be asked for.
type trackingWriter struct {
	http.ResponseWriter
	written bool
}

func (w *trackingWriter) WriteHeader(code int) {
	// 1xx responses (but 101) are informational: the real one follows.
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.written = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *trackingWriter) Write(b []byte) (int, error) {
	w.written = true
	return w.ResponseWriter.Write(b)
}

// ReadFrom keeps the underlying writer's sendfile path for io.Copy.
func (w *trackingWriter) ReadFrom(r io.Reader) (int64, error) {
	w.written = true
	return io.Copy(w.ResponseWriter, r)
}

func (w *trackingWriter) Flush() { _ = w.FlushError() }

// FlushError is what http.ResponseController.Flush calls.
func (w *trackingWriter) FlushError() error {
	w.written = true
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack hands the connection over (http.ResponseController.Hijack);
// after it nothing may be replayed.
func (w *trackingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.written = true
	return http.NewResponseController(w.ResponseWriter).Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer's
// other methods (deadlines, full duplex).
func (w *trackingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
