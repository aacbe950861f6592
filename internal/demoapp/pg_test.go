package demoapp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/petrel-db/petrel/internal/pgtest"
)

// edge plays the edge's part for one region: it sends a request to the
// local instance and, when that answers fly-replay, the same request to
// the target region's instance with fly-replay-src.
type edge struct {
	t       *testing.T
	local   string            // base URL of this region's instance
	regions map[string]string // region → base URL
	client  *http.Client
}

type reply struct {
	code     int
	body     string
	header   http.Header
	cookies  []*http.Cookie
	replayed string // the fly-replay the local instance answered
}

func (e *edge) do(method, path, ctype, body string, cookies ...*http.Cookie) reply {
	e.t.Helper()
	send := func(base string, extra http.Header) *http.Response {
		req, err := http.NewRequest(method, base+path, strings.NewReader(body))
		if err != nil {
			e.t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for _, c := range cookies {
			req.AddCookie(c)
		}
		for k, v := range extra {
			req.Header[k] = v
		}
		resp, err := e.client.Do(req)
		if err != nil {
			e.t.Fatal(err)
		}
		return resp
	}
	resp := send(e.local, nil)
	var rep reply
	if fr := resp.Header.Get("fly-replay"); fr != "" {
		resp.Body.Close()
		rep.replayed = fr
		var region, state string
		for _, kv := range strings.Split(fr, ";") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "region":
				region = v
			case "state":
				state = v
			}
		}
		target, ok := e.regions[region]
		if !ok {
			e.t.Fatalf("replay to unknown region %q", region)
		}
		src := http.Header{}
		src.Set("fly-replay-src", fmt.Sprintf("instance=%s;region=%s;t=%d;state=%s",
			resp.Header.Get("Petrel-Instance"), resp.Header.Get("Petrel-Region"), time.Now().UnixMicro(), state))
		resp = send(target, src)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	rep.code, rep.body, rep.header, rep.cookies = resp.StatusCode, string(b), resp.Header, resp.Cookies()
	return rep
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitUntil(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last: %s", what, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The demo app against a real primary and a real streaming replica: the
// replica region waits for the table, its writes fail read-only and are
// replayed to the primary region exactly once, and it then shows them.
func TestDemoAppPrimaryAndReplica(t *testing.T) {
	primary := pgtest.Start(t)
	replica := pgtest.StartReplica(t, primary)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	regions := []string{"scl", "ord"}

	// ord first, before the table exists.
	ordPool, err := pgxpool.New(ctx, replica.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer ordPool.Close()
	ordSrv := httptest.NewServer(newApp(Config{Region: "ord", PrimaryRegion: "scl", Instance: "i-ord", Regions: regions}, ordPool, quiet).handler())
	defer ordSrv.Close()
	// scl is started through Run, as `petrel demo-app` does.
	sclAddr := freeAddr(t)
	sclURL := "http://" + sclAddr
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	ord := &edge{t: t, local: ordSrv.URL, regions: map[string]string{"scl": sclURL, "ord": ordSrv.URL}, client: noRedirect}

	if r := ord.do("GET", "/api/notes", "", ""); r.code != 503 || !strings.Contains(r.body, waitingForTable) {
		t.Errorf("ord before the table: %d %q", r.code, r.body)
	}
	if r := ord.do("GET", "/", "", ""); r.code != 200 || !strings.Contains(r.body, "waiting for the primary region to create the table") ||
		!strings.Contains(r.body, "the <b>replica</b>") {
		t.Errorf("ord page before the table: %d %q", r.code, r.body)
	}
	// A write there cannot be taken either: it is replayed (and, scl being
	// down, the simulated edge fails; check the local answer alone).
	resp, err := noRedirect.Post(ordSrv.URL+"/api/notes", "application/json", strings.NewReader(`{"body":"early"}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 409 || resp.Header.Get("fly-replay") != "region=scl;state=captured_write" {
		t.Errorf("ord write before the table: %d %q", resp.StatusCode, resp.Header.Get("fly-replay"))
	}

	runCtx, stopRun := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() {
		runErr <- Run(runCtx, Config{Listen: sclAddr, Region: "scl", PrimaryRegion: "scl", Instance: "i-scl",
			DatabaseURL: primary.URL(), Regions: regions}, quiet)
	}()
	defer func() {
		stopRun()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	waitUntil(t, "scl's healthz", func() (bool, string) {
		resp, err := http.Get(sclURL + "/healthz")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
	// Run created the table; it reaches ord by replication.
	waitUntil(t, "the table on ord", func() (bool, string) {
		r := ord.do("GET", "/api/notes", "", "")
		return r.code == 200 && strings.TrimSpace(r.body) == "[]", fmt.Sprint(r.code, r.body)
	})

	// A JSON write through Wrap, replayed.
	r := ord.do("POST", "/api/notes", "application/json", `{"body":"hello from ord"}`)
	var created struct {
		ID       int64
		Region   string
		Instance string
	}
	if err := json.Unmarshal([]byte(r.body), &created); err != nil || r.code != 201 || r.replayed != "region=scl;state=captured_write" ||
		created.ID == 0 || created.Region != "scl" || created.Instance != "i-scl" {
		t.Fatalf("API write from ord: %d %q (replayed %q)", r.code, r.body, r.replayed)
	}
	// A form write through the panic path, replayed.
	r = ord.do("POST", "/notes", "application/x-www-form-urlencoded", "body=second+note")
	if r.code != 303 || r.header.Get("Location") != "/" || r.replayed != "region=scl;state=captured_write" || len(r.cookies) == 0 {
		t.Fatalf("form write from ord: %d %v (replayed %q)", r.code, r.header, r.replayed)
	}
	cookies := r.cookies
	waitUntil(t, "both notes on ord", func() (bool, string) {
		r := ord.do("GET", "/api/notes", "", "")
		var notes []note
		json.Unmarshal([]byte(r.body), &notes)
		return len(notes) == 2 && notes[0].Body == "hello from ord" && notes[1].Body == "second note" &&
			notes[1].Region == "scl" && notes[1].Instance == "i-scl", r.body
	})

	// The page on ord: the replica, the notes, the last write; replayed
	// requests say where from.
	r = ord.do("GET", "/", "", "", cookies...)
	for _, want := range []string{"the <b>replica</b>", "replica lag", "second note", "hello from ord",
		"added note", "in region <b>scl</b> by <code>i-scl</code>", "region <b>ord</b>, instance <code>i-ord</code>"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("ord page lacks %q:\n%s", want, r.body)
		}
	}
	// The scl tab, seen from ord: replayed to scl, served by the leader.
	r = ord.do("GET", "/?region=scl", "", "")
	for _, want := range []string{"the <b>leader</b>", "region <b>scl</b>, instance <code>i-scl</code>", "replayed from</dt><dd>region ord, instance <code>i-ord</code>"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("scl tab lacks %q:\n%s", want, r.body)
		}
	}

	// Delete, replayed.
	r = ord.do("POST", fmt.Sprintf("/notes/%d/delete", created.ID), "", "")
	if r.code != 303 || r.replayed == "" {
		t.Fatalf("delete from ord: %d (replayed %q)", r.code, r.replayed)
	}
	waitUntil(t, "the delete on ord", func() (bool, string) {
		r := ord.do("GET", "/api/notes", "", "")
		return strings.Count(r.body, `"id"`) == 1, r.body
	})

	// Exactly once, on the leader: the one remaining note, and no "early".
	conn, err := pgx.Connect(ctx, primary.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var bodies []string
	rows, _ := conn.Query(ctx, "SELECT body FROM "+table+" ORDER BY id")
	bodies, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil || len(bodies) != 1 || bodies[0] != "second note" {
		t.Errorf("leader's notes = %q, %v", bodies, err)
	}

	// In the primary region a read-only database is an error, never a
	// replay.
	rcfg, err := pgxpool.ParseConfig(primary.URL())
	if err != nil {
		t.Fatal(err)
	}
	rcfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	roPool, err := pgxpool.NewWithConfig(ctx, rcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer roPool.Close()
	ro := newApp(Config{Region: "scl", PrimaryRegion: "scl", Instance: "i-ro"}, roPool, quiet).handler()
	for _, path := range []string{"/api/notes", "/notes"} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", path, bytes.NewBufferString("body=x"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		ro.ServeHTTP(rec, req)
		if rec.Code != 500 || rec.Header().Get("fly-replay") != "" {
			t.Errorf("POST %s on a read-only leader: %d %q, want 500 and no replay", path, rec.Code, rec.Header().Get("fly-replay"))
		}
	}
}
