package demoapp

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
)

var quiet = slog.New(slog.DiscardHandler)

// unreachableApp has a pool that cannot connect (nothing listens on
// port 1): handlers that must not touch the database pass, the others
// show their database error.
func unreachableApp(t *testing.T, cfg Config) http.Handler {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), "postgres://u:p@127.0.0.1:1/db?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return newApp(cfg, pool, quiet).handler()
}

func do(h http.Handler, method, target string, header map[string]string, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestHandlersWithoutDatabase(t *testing.T) {
	ord := Config{Region: "ord", PrimaryRegion: "scl", Instance: "i-ord", Regions: []string{"scl", "ord", "fra"}}
	eager := ord
	eager.EagerReplay = true
	noTabs := ord
	noTabs.Regions = nil
	for _, c := range []struct {
		name           string
		cfg            Config
		method, target string
		header         map[string]string
		body           string
		code           int
		replay         string // want fly-replay ("" = none)
		contains       string
	}{
		{"healthz", ord, "GET", "/healthz", nil, "", 200, "", "ok"},
		{"tab to another region replays there", ord, "GET", "/?region=fra", nil, "", 409, "region=fra", "replay in region fra"},
		{"tab to the primary region", ord, "GET", "/?region=scl", nil, "", 409, "region=scl", ""},
		{"tab to an unknown region", ord, "GET", "/?region=xyz", nil, "", 400, "", "unknown region"},
		{"tab to a bad region name", noTabs, "GET", "/?region=A%20B", nil, "", 400, "", "unknown region"},
		{"any region name without PETREL_REGIONS", noTabs, "GET", "/?region=syd", nil, "", 409, "region=syd", ""},
		{"tab whose replay failed is served here", ord, "GET", "/?region=fra",
			map[string]string{"fly-replay-failed": "region=fra;reason=no_candidate"}, "", 503, "", "the replay to fra came back (no_candidate)"},
		{"tab replayed but delivered here is served here", ord, "GET", "/?region=fra",
			map[string]string{"fly-replay-src": "instance=i-x;region=scl;t=1"}, "", 503, "", "replayed to fra but the edge delivered it to ord"},
		{"own region's tab is served here (database down: 503 page)", ord, "GET", "/?region=ord", nil, "", 503, "", "database:"},
		{"eager POST /notes replays before the handler", eager, "POST", "/notes", nil, "body=hi", 409, "region=scl;state=http_method", ""},
		{"eager POST /api/notes", eager, "POST", "/api/notes", nil, "body=hi", 409, "region=scl;state=http_method", ""},
		{"eager delete", eager, "POST", "/notes/3/delete", nil, "", 409, "region=scl;state=http_method", ""},
		{"empty note", ord, "POST", "/notes", nil, "body=+", 400, "", "empty"},
		{"empty API note", ord, "POST", "/api/notes", nil, "body=", 400, "", "empty"},
		{"bad note id", ord, "POST", "/notes/x/delete", nil, "", 400, "", "bad note id"},
		{"no such route", ord, "GET", "/nope", nil, "", 404, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := do(unreachableApp(t, c.cfg), c.method, c.target, c.header, c.body)
			if rec.Code != c.code {
				t.Errorf("status %d, want %d; body %q", rec.Code, c.code, rec.Body)
			}
			if got := rec.Header().Get("fly-replay"); got != c.replay {
				t.Errorf("fly-replay %q, want %q", got, c.replay)
			}
			if !strings.Contains(rec.Body.String(), c.contains) {
				t.Errorf("body %q does not contain %q", rec.Body, c.contains)
			}
			if rec.Header().Get("Petrel-Region") != "ord" || rec.Header().Get("Petrel-Instance") != "i-ord" {
				t.Errorf("Petrel-Region/Instance headers = %v", rec.Header())
			}
		})
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{"PORT": "8123", "FLY_REGION": "ord", "PETREL_REGION": "", "PRIMARY_REGION": "scl",
		"DATABASE_URL": "postgres://x@h/db", "PETREL_INSTANCE": "i-1", "PETREL_REGIONS": "scl, ord,,fra",
		"PETREL_LISTEN": "", "PETREL_DEMO_EAGER": ""}
	for k, v := range env {
		t.Setenv(k, v)
	}
	c, err := ConfigFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:8123" || c.Region != "ord" || c.PrimaryRegion != "scl" || c.Instance != "i-1" ||
		strings.Join(c.Regions, "|") != "scl|ord|fra" || c.EagerReplay {
		t.Errorf("config = %+v", c)
	}
	t.Setenv("PETREL_LISTEN", "0.0.0.0:9000")
	t.Setenv("PETREL_REGION", "fra")
	t.Setenv("PETREL_DEMO_EAGER", "1")
	t.Setenv("PETREL_INSTANCE", "")
	if c, err = ConfigFromEnv(); err != nil || c.Listen != "0.0.0.0:9000" || c.Region != "fra" || !c.EagerReplay || c.Instance == "" {
		t.Errorf("config = %+v, %v", c, err)
	}
	t.Setenv("PETREL_DEMO_EAGER", "yes")
	if _, err := ConfigFromEnv(); err == nil {
		t.Error("PETREL_DEMO_EAGER=yes accepted")
	}
	t.Setenv("PETREL_DEMO_EAGER", "")
	t.Setenv("PETREL_LISTEN", "")
	t.Setenv("PORT", "")
	if _, err := ConfigFromEnv(); err == nil {
		t.Error("no PORT accepted")
	}
	t.Setenv("PORT", "1")
	t.Setenv("DATABASE_URL", "")
	if _, err := ConfigFromEnv(); err == nil {
		t.Error("no DATABASE_URL accepted")
	}
}

func TestLastWriteCookie(t *testing.T) {
	a := newApp(Config{Region: "scl", Instance: "i 1;x"}, nil, quiet)
	rec := httptest.NewRecorder()
	a.setLastWrite(rec, "added note 7")
	req := httptest.NewRequest("GET", "/", nil)
	for _, c := range rec.Result().Cookies() {
		req.AddCookie(c)
	}
	lw := readLastWrite(req)
	if lw == nil || lw.Region != "scl" || lw.Instance != "i 1;x" || lw.What != "added note 7" || lw.At.IsZero() {
		t.Errorf("last write = %+v", lw)
	}
	req = httptest.NewRequest("GET", "/", nil)
	req.AddCookie(&http.Cookie{Name: lastWriteCookie, Value: url.QueryEscape("%%")})
	if readLastWrite(req) != nil {
		t.Error("garbage cookie parsed")
	}
}
