package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/api/apitest"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// noStore is a store with nothing in it and an etcd that is not there.
type noStore struct{ cli *clientv3.Client }

func (noStore) Snapshot() store.Snapshot   { return store.Snapshot{} }
func (noStore) OK() bool                   { return false }
func (noStore) Edges() []store.Edge        { return nil }
func (s noStore) Client() *clientv3.Client { return s.cli }

// newTestServer serves the dashboard over a store whose etcd is not
// there: everything tested here must be decided before the store is asked.
func newTestServer(t *testing.T) (*httptest.Server, *Server) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	st := noStore{cli}
	s := New(Options{Cluster: "test", Self: "n1", Store: st, OperatorPassword: "s3cret-operator"})
	t.Cleanup(s.Close)
	node := http.NewServeMux()
	node.HandleFunc("GET /role", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "replica") })
	ts := httptest.NewServer(s.Wrap(node))
	t.Cleanup(ts.Close)
	return ts, s
}

func do(t *testing.T, method, url, auth, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, &m); err != nil && resp.Header.Get("Content-Type") == "application/json" {
		t.Fatalf("%s %s: not a JSON object: %q", method, url, b)
	}
	return resp.StatusCode, m
}

// TestAdminAuth: without credentials, with a wrong password, or with a
// forged, altered or expired token, every admin endpoint answers 401 with
// a JSON error and does nothing; the password and a token it issued pass.
func TestAdminAuth(t *testing.T) {
	ts, s := newTestServer(t)
	basic := func(user, pass string) string {
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(user, pass)
		return req.Header.Get("Authorization")
	}
	code, m := do(t, "POST", ts.URL+"/api/v1/token", basic("operator", "s3cret-operator"), "")
	if code != 200 || m["token"] == nil {
		t.Fatalf("token with the password: %d %v", code, m)
	}
	good := "Bearer " + m["token"].(string)
	parts := strings.Split(m["token"].(string), ".")
	expired := s.auth().sign(time.Now().Add(-time.Minute).Unix())
	tooLong := s.auth().sign(time.Now().Add(30 * 24 * time.Hour).Unix())
	forgedKey := newAuthenticator("another-password").sign(time.Now().Add(time.Hour).Unix())
	bad := map[string]string{
		"none":            "",
		"wrong password":  basic("operator", "guess"),
		"wrong user":      basic("postgres", "s3cret-operator"),
		"forged token":    "Bearer " + forgedKey,
		"altered expiry":  "Bearer v1.9999999999." + parts[2],
		"expired token":   "Bearer " + expired,
		"too long token":  "Bearer " + tooLong,
		"garbage":         "Bearer not-a-token",
		"other scheme":    "Digest abc",
		"empty bearer":    "Bearer ",
		"password bearer": "Bearer s3cret-operator",
	}
	endpoints := [][2]string{
		{"POST", "/api/v1/switchover"}, {"POST", "/api/v1/restart"}, {"GET", "/api/v1/events"},
		{"GET", "/api/v1/status"}, {"GET", "/api/v1/config"}, {"PUT", "/api/v1/config"}, {"POST", "/api/v1/apps"}, {"GET", "/api/v1/operation"}, {"POST", "/api/v1/token"},
		{"DELETE", "/api/v1/nothing"},
		{"GET", "/api/v1/users"}, {"POST", "/api/v1/users"}, {"DELETE", "/api/v1/users/someone"}, {"POST", "/api/v1/users/someone/password"},
		{"GET", "/api/v1/databases"}, {"POST", "/api/v1/databases"}, {"DELETE", "/api/v1/apps/someapp"},
		{"GET", "/api/v1/backups"}, {"POST", "/api/v1/backups"},
		{"GET", "/api/v1/backup/config"}, {"PUT", "/api/v1/backup/config"}, {"POST", "/api/v1/backups/prune"}, {"GET", "/api/v1/backups/verify"}, {"GET", "/api/v1/backups/running"},
	}
	for name, auth := range bad {
		for _, ep := range endpoints {
			code, m := do(t, ep[0], ts.URL+ep[1], auth, `{"to":"n2"}`)
			if code != http.StatusUnauthorized || m["error"] == nil {
				t.Errorf("%s: %s %s = %d %v, want 401 with an error", name, ep[0], ep[1], code, m)
			}
		}
	}
	s.opMu.Lock()
	if s.op != nil {
		t.Errorf("an unauthenticated request started an operation: %+v", s.op.snapshot())
	}
	s.opMu.Unlock()

	// Authenticated: the answer is the endpoint's own.
	if code, m := do(t, "GET", ts.URL+"/api/v1/operation", good, ""); code != http.StatusNotFound || m["error"] == nil {
		t.Errorf("operation with a token: %d %v, want 404 (none ran)", code, m)
	}
	if code, _ := do(t, "GET", ts.URL+"/api/v1/operation", basic("operator", "s3cret-operator"), ""); code != http.StatusNotFound {
		t.Errorf("operation with the password: %d, want 404", code)
	}
	if code, m := do(t, "POST", ts.URL+"/api/v1/token", good, ""); code != http.StatusBadRequest {
		t.Errorf("a token for a token: %d %v, want 400", code, m)
	}
	// The node's own endpoints and the page are untouched and public.
	if code, _ := do(t, "GET", ts.URL+"/role", "", ""); code != 200 {
		t.Errorf("GET /role through the dashboard's mux: %d", code)
	}
	resp, err := http.Get(ts.URL + "/dashboard/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "app.js") {
		t.Errorf("GET /dashboard/: %d %.80q", resp.StatusCode, page)
	}

	// A node without an operator password has the admin API closed.
	s.authP.Store(newAuthenticator(""))
	if code, _ := do(t, "GET", ts.URL+"/api/v1/operation", basic("operator", ""), ""); code != http.StatusUnauthorized {
		t.Errorf("an empty password on a node without one: %d, want 401", code)
	}
}

// TestAdminBadInput: bad bodies and parameters get 4xx JSON errors
// before anything is asked of the store.
func TestAdminBadInput(t *testing.T) {
	ts, s := newTestServer(t)
	tok, _ := s.auth().token()
	auth := "Bearer " + tok
	cases := []struct{ method, path, body string }{
		{"POST", "/api/v1/switchover", `{"to":`},
		{"POST", "/api/v1/switchover", `{"target":"n2"}`},
		{"POST", "/api/v1/switchover", `{"to":"../../leader"}`},
		{"POST", "/api/v1/switchover", `{"to":"n2"}{"to":"n3"}`},
		{"POST", "/api/v1/switchover", `{"to":"` + strings.Repeat("x", 5000) + `"}`},
		{"POST", "/api/v1/restart", `{"now":true}`},
		{"POST", "/api/v1/apps", `{}`},
		{"POST", "/api/v1/apps", `{"app":"x","user":"postgres"}`},
		{"POST", "/api/v1/apps", `{"app":"x","database":"Robert'); DROP TABLE x;--"}`},
		{"PUT", "/api/v1/config", `{"settings":{"work_mem":"4MB"},"unset":["jit"]}`},
		{"PUT", "/api/v1/config", `{"unset":["a=b"]}`},
		{"PUT", "/api/v1/config", `{"unset":[""]}`},
		{"PUT", "/api/v1/config", `{"settings":{"":"1"}}`},
		{"POST", "/api/v1/apps", `{"app":"x","root_cert":"relative/ca.crt"}`},
		{"POST", "/api/v1/apps", `{"app":"x","root_cert":"/ca.crt\nsslmode=disable"}`},
		{"POST", "/api/v1/apps", `{"app":"x","fallback_proxy":"evil.example/path:5432"}`},
		{"POST", "/api/v1/apps", `{"app":"x","fallback_proxy":"no-port"}`},
		{"POST", "/api/v1/users/postgres/password", `{}`},
		{"POST", "/api/v1/users/a%20b/password", `{}`},
		{"POST", "/api/v1/users/bob/password", `{"pw":"x"}`},
		{"POST", "/api/v1/users/bob/password", `{"password":"short"}`},
		{"DELETE", "/api/v1/apps/x?user=a%20b", ""},
		{"DELETE", "/api/v1/apps/x?database=Robert'%3B", ""},
		{"PUT", "/api/v1/config", `{"settings":{"a=b":"c"}}`},
		{"PUT", "/api/v1/config", `{"work_mem":"4MB"}`},
		{"GET", "/api/v1/events?after=-1", ""},
		{"GET", "/api/v1/events?after=x", ""},
		{"GET", "/api/v1/events?limit=0", ""},
		{"GET", "/api/v1/events?limit=100000", ""},
		{"POST", "/api/v1/users", `{}`},
		{"POST", "/api/v1/users", `{"name":"Robert'); DROP TABLE x;--"}`},
		{"POST", "/api/v1/users", `{"name":"replicator"}`},
		{"DELETE", "/api/v1/users/postgres", ""},
		{"DELETE", "/api/v1/users/a%20b", ""},
		{"POST", "/api/v1/databases", `{"name":""}`},
		{"POST", "/api/v1/databases", `{"name":"ok","owner":"no such\"owner"}`},
		{"DELETE", "/api/v1/apps/x?drop_database=maybe", ""},
		{"DELETE", "/api/v1/apps/..%2F..", ""},
	}
	for _, c := range cases {
		code, m := do(t, c.method, ts.URL+c.path, auth, c.body)
		if code < 400 || code >= 500 || m["error"] == nil {
			t.Errorf("%s %s %.40q = %d %v, want a 4xx JSON error", c.method, c.path, c.body, code, m)
		}
	}
	req, _ := http.NewRequest("GET", ts.URL+"/api/v1/stream", nil)
	req.Header.Set("Last-Event-ID", "nope")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("stream with a bad Last-Event-ID: %d, want 400", resp.StatusCode)
	}
}

// TestScrape sums a metric's label sets from the text exposition.
func TestScrape(t *testing.T) {
	ca := apitest.NewCA(t, "test")
	ms := ca.Server(t, "n2", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "# HELP x\n# TYPE petrel_proxy_connections_accepted_total counter\n"+
			`petrel_proxy_connections_accepted_total{listener="leader"} 7`+"\n"+
			`petrel_proxy_connections_accepted_total{listener="readonly"} 3`+"\n"+
			"petrel_proxy_connections_active 2\npetrel_proxy_connections_active_other 100\n")
	}))
	c := &collector{api: ca.Client(t)}
	if _, err := c.scrape(context.Background(), model.Member{ID: "n3", APIURL: ms.URL}, "petrel_proxy_connections_active"); err == nil {
		t.Fatal("scraped n2's metrics as n3's")
	}
	got, err := c.scrape(context.Background(), model.Member{ID: "n2", APIURL: ms.URL}, "petrel_proxy_connections_accepted_total", "petrel_proxy_connections_active")
	if err != nil {
		t.Fatal(err)
	}
	if got["petrel_proxy_connections_accepted_total"] != 10 || got["petrel_proxy_connections_active"] != 2 {
		t.Fatalf("scraped %v", got)
	}
}

// edgeStore is noStore with one edge record.
type edgeStore struct {
	noStore
	edges []store.Edge
}

func (s edgeStore) Edges() []store.Edge { return s.edges }

// TestEdgeRates: an edge that publishes its admin URL gets request and
// replay rates from its counters; one without shows as unknown.
func TestEdgeRates(t *testing.T) {
	var n atomic.Int64
	ms := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k := n.Add(1)
		fmt.Fprintf(w, "petrel_edge_requests_total{code=\"2xx\",served=\"local\"} %d\npetrel_edge_replays_total{reason=\"app\"} %d\n", 100*k, 10*k)
	}))
	defer ms.Close()
	st := edgeStore{edges: []store.Edge{{ID: "edge-ord", Region: "ord", AdminURL: ms.URL}, {ID: "edge-scl", Region: "scl"}}}
	c := &collector{st: st, edgeHTTP: ms.Client(), samples: map[string]proxySample{}}
	c.edges(context.Background())
	time.Sleep(50 * time.Millisecond)
	evs := c.edges(context.Background())
	if len(evs) != 2 || !evs[0].Known || evs[0].ReqPerSec <= 0 || evs[0].ReplayPerSec <= 0 || evs[0].ReqPerSec <= evs[0].ReplayPerSec {
		t.Fatalf("edge with metrics: %+v", evs)
	}
	if evs[1].Known || evs[1].ReqPerSec != 0 {
		t.Fatalf("edge without an admin URL: %+v", evs[1])
	}
}

// TestSetOperatorPassword: after a rotation the new password and its
// tokens pass; the old password and tokens issued under it are refused.
func TestSetOperatorPassword(t *testing.T) {
	ts, s := newTestServer(t)
	basic := func(user, pass string) string {
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(user, pass)
		return req.Header.Get("Authorization")
	}
	code, m := do(t, "POST", ts.URL+"/api/v1/token", basic("operator", "s3cret-operator"), "")
	if code != 200 {
		t.Fatalf("token: %d %v", code, m)
	}
	oldTok := "Bearer " + m["token"].(string)
	s.SetOperatorPassword("n3w-operator")
	for name, auth := range map[string]string{"old password": basic("operator", "s3cret-operator"), "old token": oldTok} {
		if code, _ := do(t, "GET", ts.URL+"/api/v1/events", auth, ""); code != http.StatusUnauthorized {
			t.Errorf("%s after the rotation: %d, want 401", name, code)
		}
	}
	code, m = do(t, "POST", ts.URL+"/api/v1/token", basic("operator", "n3w-operator"), "")
	if code != 200 {
		t.Fatalf("token with the new password: %d %v", code, m)
	}
	if code, _ := do(t, "GET", ts.URL+"/api/v1/events", "Bearer "+m["token"].(string), ""); code == http.StatusUnauthorized {
		t.Errorf("new token refused")
	}
}

// TestSuperuserAuth: the superuser's password passes (HTTP Basic as
// postgres) only from the admin networks: elsewhere 403 and nothing runs;
// a wrong one, or one on a node that holds none, is 401; it gets no token.
func TestSuperuserAuth(t *testing.T) {
	serve := func(su string, nets []string) (*httptest.Server, *Server) {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: time.Second, Logger: zap.NewNop()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cli.Close() })
		s := New(Options{Cluster: "test", Self: "n1", Store: noStore{cli}, OperatorPassword: "s3cret-operator",
			Superuser: func() string { return su }, AdminNetworks: nets})
		t.Cleanup(s.Close)
		ts := httptest.NewServer(s.Wrap(http.NotFoundHandler()))
		t.Cleanup(ts.Close)
		return ts, s
	}
	basic := func(user, pass string) string {
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(user, pass)
		return req.Header.Get("Authorization")
	}
	ts, _ := serve("su-s3cret", nil) // loopback: the test's client
	if code, m := do(t, "GET", ts.URL+"/api/v1/operation", basic("postgres", "su-s3cret"), ""); code != http.StatusNotFound {
		t.Errorf("the superuser from loopback: %d %v, want 404 (authenticated; none ran)", code, m)
	}
	for name, auth := range map[string]string{"wrong password": basic("postgres", "guess"), "operator's password": basic("postgres", "s3cret-operator"),
		"superuser's as operator": basic("operator", "su-s3cret")} {
		if code, m := do(t, "GET", ts.URL+"/api/v1/operation", auth, ""); code != http.StatusUnauthorized || m["error"] == nil {
			t.Errorf("%s: %d %v, want 401", name, code, m)
		}
	}
	if code, m := do(t, "POST", ts.URL+"/api/v1/token", basic("postgres", "su-s3cret"), ""); code != http.StatusBadRequest || m["token"] != nil {
		t.Errorf("a token for the superuser: %d %v, want 400", code, m)
	}

	ts, s := serve("su-s3cret", []string{"10.9.0.0/16"})
	code, m := do(t, "POST", ts.URL+"/api/v1/restart", basic("postgres", "su-s3cret"), "")
	if code != http.StatusForbidden || !strings.Contains(fmt.Sprint(m["error"]), "admin networks") {
		t.Errorf("the superuser from outside the admin networks: %d %v, want 403 naming them", code, m)
	}
	s.opMu.Lock()
	if s.op != nil {
		t.Errorf("a refused superuser started an operation: %+v", s.op.snapshot())
	}
	s.opMu.Unlock()
	if code, _ := do(t, "GET", ts.URL+"/api/v1/operation", basic("operator", "s3cret-operator"), ""); code != http.StatusNotFound {
		t.Errorf("the operator from the same address: %d, want 404", code)
	}

	ts, _ = serve("", nil) // a node that holds no superuser password
	if code, _ := do(t, "GET", ts.URL+"/api/v1/operation", basic("postgres", ""), ""); code != http.StatusUnauthorized {
		t.Errorf("an empty superuser password on a node without one: %d, want 401", code)
	}
}
