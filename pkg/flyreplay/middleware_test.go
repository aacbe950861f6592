package flyreplay

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

var (
	errReadOnly = fmt.Errorf("insert: %w", &pgconn.PgError{Code: "25006", Message: "cannot execute INSERT in a read-only transaction"})
	errOther    = &pgconn.PgError{Code: "23505", Message: "duplicate key"}
	quiet       = slog.New(slog.DiscardHandler)
)

func TestIsReadOnly(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("read-only"), false},
		{errOther, false},
		{&pgconn.PgError{Code: "25006"}, true},
		{errReadOnly, true},
		{fmt.Errorf("outer: %w", errReadOnly), true},
	} {
		if got := IsReadOnly(c.err); got != c.want {
			t.Errorf("IsReadOnly(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Setenv("FLY_REGION", "ord")
	t.Setenv("PRIMARY_REGION", " scl ")
	t.Setenv("PETREL_REGION", "")
	if c := ConfigFromEnv(); c.Region != "ord" || c.PrimaryRegion != "scl" || c.ReplayWriteMethods {
		t.Errorf("FLY_REGION only: %+v", c)
	}
	t.Setenv("PETREL_REGION", "fra")
	if c := ConfigFromEnv(); c.Region != "fra" {
		t.Errorf("PETREL_REGION wins: %+v", c)
	}
}

// response is what a test expects from one request.
type response struct {
	code   int
	replay string // fly-replay header ("" = absent)
	body   string // substring of the body
}

func TestMiddleware(t *testing.T) {
	replica := Config{Region: "ord", PrimaryRegion: "scl", Logger: quiet}
	eager := replica
	eager.ReplayWriteMethods = true
	primary := Config{Region: "scl", PrimaryRegion: "scl", Logger: quiet}
	noRegion := Config{PrimaryRegion: "scl", Logger: quiet}
	noPrimary := Config{Region: "ord", Logger: quiet}
	primaryEager := primary
	primaryEager.ReplayWriteMethods = true

	ok := func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "handled") }
	roPanic := func(w http.ResponseWriter, r *http.Request) { panic(errReadOnly) }
	roPanicAfterHeader := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		panic(errReadOnly)
	}
	roPanicAfterFlush := func(w http.ResponseWriter, r *http.Request) {
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("flush through the middleware's writer: %v", err)
		}
		panic(errReadOnly)
	}
	otherPanic := func(w http.ResponseWriter, r *http.Request) { panic(errOther) }
	abort := func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) }
	stringPanic := func(w http.ResponseWriter, r *http.Request) { panic("boom") }

	replayed := response{409, "region=scl;state=captured_write", "replay in region scl"}
	eagerReplayed := response{409, "region=scl;state=http_method", "replay in region scl"}
	handled := response{200, "", "handled"}
	roError := response{500, "", "read-only"}
	const repanic = -1

	for _, c := range []struct {
		name    string
		cfg     Config
		method  string
		header  map[string]string
		handler http.HandlerFunc
		want    response // want.code == repanic: the panic must go on
	}{
		{"replica GET runs", replica, "GET", nil, ok, handled},
		{"replica POST runs (lazy)", replica, "POST", nil, ok, handled},
		{"replica read-only panic replays", replica, "POST", nil, roPanic, replayed},
		{"replica read-only panic in a GET replays", replica, "GET", nil, roPanic, replayed},
		{"replica read-only panic after WriteHeader goes on", replica, "POST", nil, roPanicAfterHeader, response{code: repanic}},
		{"replica read-only panic after Flush goes on", replica, "POST", nil, roPanicAfterFlush, response{code: repanic}},
		{"replica other error panic goes on", replica, "POST", nil, otherPanic, response{code: repanic}},
		{"replica ErrAbortHandler goes on", replica, "POST", nil, abort, response{code: repanic}},
		{"replica string panic goes on", replica, "POST", nil, stringPanic, response{code: repanic}},
		{"eager POST replays before the handler", eager, "POST", nil, roPanic, eagerReplayed},
		{"eager PUT", eager, "PUT", nil, ok, eagerReplayed},
		{"eager PATCH", eager, "PATCH", nil, ok, eagerReplayed},
		{"eager DELETE", eager, "DELETE", nil, ok, eagerReplayed},
		{"eager GET runs", eager, "GET", nil, ok, handled},
		{"eager OPTIONS runs", eager, "OPTIONS", nil, ok, handled},
		{"eager GET read-only panic replays", eager, "GET", nil, roPanic, replayed},
		{"primary read-only panic is a 500", primary, "POST", nil, roPanic, roError},
		{"primary eager POST runs", primaryEager, "POST", nil, ok, handled},
		{"no region never replays", noRegion, "POST", nil, roPanic, roError},
		{"no primary region never replays", noPrimary, "POST", nil, roPanic, roError},
		{"zero config never replays", Config{Logger: quiet}, "POST", nil, roPanic, roError},
		{"region case differs: primary", Config{Region: "SCL", PrimaryRegion: "scl", Logger: quiet}, "POST", nil, roPanic, roError},
		{"replay failed: 503, no second replay", replica, "POST",
			map[string]string{HeaderReplayFailed: "region=scl;reason=no_candidate;elapsed_ms=80"}, roPanic,
			response{503, "", "could not be reached (no_candidate)"}},
		{"eager replay failed: 503", eager, "POST",
			map[string]string{HeaderReplayFailed: "reason=timeout"}, ok, response{503, "", "(timeout)"}},
		{"replayed write outside the primary region: 503", replica, "POST",
			map[string]string{HeaderReplaySrc: "instance=a1;region=fra;t=1;state=captured_write"}, roPanic,
			response{503, "", "served in ord"}},
		{"replayed read (other state) may replay its write", replica, "POST",
			map[string]string{HeaderReplaySrc: "instance=a1;region=fra;t=1;state=region"}, roPanic, replayed},
		{"replayed request in the primary runs", primary, "POST",
			map[string]string{HeaderReplaySrc: "instance=a1;region=ord;t=1;state=captured_write"}, ok, handled},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest(c.method, "/notes", strings.NewReader("body=x"))
			for k, v := range c.header {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			var panicked any
			func() {
				defer func() { panicked = recover() }()
				c.cfg.Middleware(c.handler).ServeHTTP(rec, req)
			}()
			if c.want.code == repanic {
				if panicked == nil {
					t.Fatalf("no panic; response %d %q", rec.Code, rec.Body)
				}
				if rec.Header().Get(HeaderReplay) != "" {
					t.Errorf("asked for a replay after the response started")
				}
				return
			}
			if panicked != nil {
				t.Fatalf("panic %v", panicked)
			}
			checkResponse(t, rec, c.want)
		})
	}
}

func checkResponse(t *testing.T, rec *httptest.ResponseRecorder, want response) {
	t.Helper()
	if rec.Code != want.code {
		t.Errorf("status %d, want %d (body %q)", rec.Code, want.code, rec.Body)
	}
	if got := rec.Header().Get(HeaderReplay); got != want.replay {
		t.Errorf("fly-replay %q, want %q", got, want.replay)
	}
	if !strings.Contains(rec.Body.String(), want.body) {
		t.Errorf("body %q, want it to contain %q", rec.Body, want.body)
	}
}

func TestWrapAndHandleError(t *testing.T) {
	replica := Config{Region: "ord", PrimaryRegion: "scl", Logger: quiet}
	primary := Config{Region: "scl", PrimaryRegion: "scl", Logger: quiet}
	returns := func(err error) func(http.ResponseWriter, *http.Request) error {
		return func(w http.ResponseWriter, r *http.Request) error {
			if err == nil {
				w.WriteHeader(http.StatusCreated)
			}
			return err
		}
	}
	writesThenFails := func(w http.ResponseWriter, r *http.Request) error {
		io.WriteString(w, "partial")
		return errReadOnly
	}
	panics := func(w http.ResponseWriter, r *http.Request) error { panic(errReadOnly) }
	for _, c := range []struct {
		name string
		cfg  Config
		h    func(http.ResponseWriter, *http.Request) error
		want response
	}{
		{"nil error", replica, returns(nil), response{201, "", ""}},
		{"replica read-only replays", replica, returns(errReadOnly), response{409, "region=scl;state=captured_write", ""}},
		{"replica other error is 500", replica, returns(errOther), response{500, "", "Internal Server Error"}},
		{"replica read-only after writing is left alone", replica, writesThenFails, response{200, "", "partial"}},
		{"replica panic replays too", replica, panics, response{409, "region=scl;state=captured_write", ""}},
		{"primary read-only is 500", primary, returns(errReadOnly), response{500, "", ""}},
		{"primary panic read-only is 500", primary, panics, response{500, "", "read-only"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			c.cfg.Wrap(c.h).ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
			checkResponse(t, rec, c.want)
		})
	}

	// HandleError alone.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/", nil)
	if replica.HandleError(rec, req, errOther) || rec.Code != 200 || len(rec.Header()) != 0 {
		t.Errorf("HandleError(other error) handled it or wrote something: %d %v", rec.Code, rec.Header())
	}
	if primary.HandleError(rec, req, errReadOnly) || len(rec.Header()) != 0 {
		t.Errorf("HandleError in the primary region handled it")
	}
	if !replica.HandleError(rec, req, errReadOnly) || rec.Code != 409 {
		t.Errorf("HandleError(read-only) in a replica region: %d", rec.Code)
	}
}

func TestWriteReplay(t *testing.T) {
	for _, c := range []struct{ region, state, want string }{
		{"ord", "", "region=ord"},
		{"scl", "captured_write", "region=scl;state=captured_write"},
		{"scl", "a;b=c d", "region=scl;state=a_b_c_d"},
	} {
		rec := httptest.NewRecorder()
		WriteReplay(rec, c.region, c.state)
		if got := rec.Header().Get(HeaderReplay); got != c.want || rec.Code != 409 {
			t.Errorf("WriteReplay(%q, %q): %d %q, want 409 %q", c.region, c.state, rec.Code, got, c.want)
		}
	}
}

// Over a real server: ResponseRecorder keeps a 103 as the final status,
// and has no write deadlines.
func TestTrackingWriterOverHTTP(t *testing.T) {
	cfg := Config{Region: "ord", PrimaryRegion: "scl", Logger: quiet}
	mux := http.NewServeMux()
	mux.HandleFunc("/hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		panic(errReadOnly)
	})
	flushed := make(chan error, 1)
	mux.HandleFunc("/flush", func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(http.Flusher); !ok {
			t.Error("not an http.Flusher")
		}
		rc := http.NewResponseController(w)
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline through Unwrap: %v", err)
		}
		io.WriteString(w, "x")
		flushed <- rc.Flush()
	})
	srv := httptest.NewServer(cfg.Middleware(mux))
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/hints", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 409 || resp.Header.Get(HeaderReplay) != "region=scl;state=captured_write" {
		t.Errorf("read-only panic after a 103: %d %q, want a replay", resp.StatusCode, resp.Header.Get(HeaderReplay))
	}

	resp, err = http.Get(srv.URL + "/flush")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-flushed; err != nil {
		t.Errorf("Flush through http.ResponseController: %v", err)
	}
}

func TestReplaySource(t *testing.T) {
	for _, c := range []struct {
		header string
		want   Source
		ok     bool
	}{
		{"", Source{}, false},
		{"garbage", Source{}, false},
		{"instance=i-1;region=ord;t=1700000000123456;state=captured_write",
			Source{Instance: "i-1", Region: "ord", Time: time.UnixMicro(1700000000123456), State: "captured_write"}, true},
		{` Instance = i-2 ; REGION="fra" ; state=`, Source{Instance: "i-2", Region: "fra"}, true},
		{"region=scl;t=notanumber;x=y", Source{Region: "scl"}, true},
		{"t=-5", Source{}, false},
	} {
		req := httptest.NewRequest("GET", "/", nil)
		if c.header != "" {
			req.Header.Set(HeaderReplaySrc, c.header)
		}
		got, ok := ReplaySource(req)
		if ok != c.ok || got != c.want {
			t.Errorf("ReplaySource(%q) = %+v, %v; want %+v, %v", c.header, got, ok, c.want, c.ok)
		}
	}
}

func TestReplayFailed(t *testing.T) {
	req := httptest.NewRequest("GET", "/", nil)
	if _, ok := ReplayFailed(req); ok {
		t.Error("no header: ok")
	}
	req.Header.Set(HeaderReplayFailed, "instance=i-9;app=demo;region=scl;replay_source=i-1;reason=timeout;elapsed_ms=1500")
	f, ok := ReplayFailed(req)
	want := Failed{Region: "scl", Instance: "i-9", App: "demo", ReplaySource: "i-1", Reason: "timeout", Elapsed: 1500 * time.Millisecond}
	if !ok || f != want {
		t.Errorf("ReplayFailed = %+v, %v; want %+v", f, ok, want)
	}
}
