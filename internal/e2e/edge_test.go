package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/demoapp"
	"github.com/petrel-db/petrel/internal/edge"
	"github.com/petrel-db/petrel/internal/netsim"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// startDemo runs the demo app for region in this process.
func startDemo(t *testing.T, ctx context.Context, region, dbURL string) edge.Instance {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	actx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	cfg := demoapp.Config{Listen: addr, Region: region, PrimaryRegion: "scl", DatabaseURL: dbURL, Instance: region + "-demo", Regions: []string{"scl", "ord"}}
	go func() { defer close(done); _ = demoapp.Run(actx, cfg, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { cancel(); <-done })
	return edge.Instance{ID: cfg.Instance, Addr: addr}
}

type edgePair struct{ scl, ord *testcluster.Edge }

func (p edgePair) Close() { p.scl.Close(); p.ord.Close() }

// startEdges runs scl's and ord's edges and waits until ord's sees scl's
// instance. sclDB is where scl's edge mints tokens (the leader, through a
// proxy); ord's follows ord1.
func startEdges(t *testing.T, ctx context.Context, c *testcluster.Cluster, scl, ord edge.Instance, sclDB string) edgePair {
	t.Helper()
	se, err := c.StartEdge(ctx, testcluster.EdgeOptions{Region: "scl", Instances: []edge.Instance{scl}, DatabaseURL: sclDB, HealthPath: "/healthz"})
	if err != nil {
		t.Fatal(err)
	}
	oe, err := c.StartEdge(ctx, testcluster.EdgeOptions{Region: "ord", Instances: []edge.Instance{ord}, DatabaseURL: c.DSN("ord1"),
		NodeAPI: c.Node("ord1").APIURL(), RYWWait: 2 * time.Second, HealthPath: "/healthz"})
	if err != nil {
		se.Close()
		t.Fatal(err)
	}
	p := edgePair{se, oe}
	err = testcluster.WaitFor(ctx, "ord's edge to see scl's instance "+scl.ID, func() bool {
		resp, err := http.Get(oe.Admin + "/instances")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st struct {
			Peers []struct {
				Region    string
				Alive     bool
				Instances []string
			}
		}
		if json.NewDecoder(resp.Body).Decode(&st) != nil {
			return false
		}
		for _, pr := range st.Peers {
			if pr.Region == "scl" && pr.Alive && slices.Contains(pr.Instances, scl.ID) {
				return true
			}
		}
		return false
	})
	if err != nil {
		p.Close()
		t.Fatal(err)
	}
	return p
}

type browser struct {
	t *testing.T
	c *http.Client
}

func newBrowser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, c: &http.Client{Jar: jar, Timeout: 20 * time.Second}}
}

// trusting makes b trust caPEM for https (the members' API and dashboard).
func (b *browser) trusting(caPEM []byte) *browser {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	b.c.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	return b
}

func (b *browser) do(method, url, body string, hdr ...string) (*http.Response, string) {
	b.t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		b.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp, string(out)
}

// notes returns the note bodies ord's replica shows through ord's edge.
func (b *browser) notes(url string) (bodies []string, region string) {
	b.t.Helper()
	resp, body := b.do("GET", url+"/api/notes", "")
	if resp.StatusCode != 200 {
		b.t.Fatalf("GET /api/notes: %d %s", resp.StatusCode, body)
	}
	var ns []struct{ Body string }
	if err := json.Unmarshal([]byte(body), &ns); err != nil {
		b.t.Fatalf("notes %q: %v", body, err)
	}
	for _, n := range ns {
		bodies = append(bodies, n.Body)
	}
	return bodies, resp.Header.Get("Fly-Region")
}

func (b *browser) token(url string) string {
	for _, ck := range b.c.Jar.Cookies(mustURL(url)) {
		if ck.Name == edge.CookieName {
			return ck.Value
		}
	}
	return ""
}

// TestEdgeReplay: apps in two regions behind their edges, on a real
// cluster in the latency world (scl primary, ord a replica region 30 ms
// away): a write made in ord is replayed whole and applied once in scl;
// the writer reads it back in ord at once, even with the replica trailing
// by the link delay and across a failover; forged tokens buy nothing; a
// Python app works the same way.
func TestEdgeReplay(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	m := netsim.DefaultMatrix()
	m.Delays["ord-scl"] = 30 * time.Millisecond
	c := newClusterWith(t, ctx, func(o *testcluster.Options) { o.World = &m })
	leader := startNodes(ctx, t, c, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"}, [2]string{"ord1", "ord"})
	waitSync(ctx, t, c, leader)
	other := "scl1"
	if leader == "scl1" {
		other = "scl2"
	}
	// scl's app and edge use the proxy of the member that survives the
	// failover below; any member's proxy reaches the leader.
	sclDB := c.ProxyDSN(other)
	edges := startEdges(t, ctx, c, startDemo(t, ctx, "scl", sclDB), startDemo(t, ctx, "ord", c.DSN("ord1")), sclDB)
	ordURL := edges.ord.URL
	count := func(body string) int64 {
		v, err := c.QueryInts(ctx, leader, "SELECT count(*) FROM petrel_demo_notes WHERE body = '"+body+"'")
		if err != nil || len(v) != 1 {
			t.Fatalf("counting %q on %s: %v", body, leader, err)
		}
		return v[0]
	}

	t.Run("a write in a replica region is applied once in the primary region", func(t *testing.T) {
		b := newBrowser(t)
		// The table exists once scl's app made it; ord's replica may lag.
		waitFor(t, ctx, time.Minute, "the notes table on ord1", func() bool {
			resp, _ := b.do("GET", ordURL+"/api/notes", "")
			return resp.StatusCode == 200
		})
		resp, body := b.do("POST", ordURL+"/api/notes", `{"body":"w-once"}`)
		if resp.StatusCode != 201 || resp.Header.Get("Fly-Region") != "scl" {
			t.Fatalf("POST in ord: %d %q, region %q", resp.StatusCode, body, resp.Header.Get("Fly-Region"))
		}
		if n := count("w-once"); n != 1 {
			t.Fatalf("the write was applied %d times in scl", n)
		}
		if tok := b.token(ordURL); !strings.HasPrefix(tok, "1/") {
			t.Errorf("no read-your-writes token on timeline 1 after the write: %q", tok)
		}
	})

	t.Run("read your writes while the replica trails by the link delay", func(t *testing.T) {
		// 150 ms one way: the write's answer and its WAL reach ord at about
		// the same time, so the read right after it races the replica.
		c.World().SetDelay("scl", "ord", netsim.Conditions{Delay: 150 * time.Millisecond})
		defer c.World().SetDelay("scl", "ord", netsim.Conditions{Delay: 30 * time.Millisecond})
		b := newBrowser(t)
		local := 0
		for i := 0; i < 12; i++ {
			note := fmt.Sprintf("ryw-%d", i)
			if resp, body := b.do("POST", ordURL+"/api/notes", `{"body":"`+note+`"}`); resp.StatusCode != 201 {
				t.Fatalf("POST %s: %d %s", note, resp.StatusCode, body)
			}
			bodies, region := b.notes(ordURL)
			if !slices.Contains(bodies, note) {
				t.Fatalf("read after write %s in ord (served in %s) does not show it: %v", note, region, bodies)
			}
			if region == "ord" {
				local++
			}
		}
		if local == 0 {
			t.Errorf("no read was served by ord's replica: the edge replayed every read to scl")
		}
		t.Logf("%d of 12 reads served in ord after waiting for the replica; edge metrics: %s", local, rywMetrics(t, edges.ord.Admin))
	})

	t.Run("forged and garbage tokens are ignored", func(t *testing.T) {
		b := newBrowser(t)
		for _, v := range []string{"garbage", "99/FFFFFFFF/FFFFFFFF~" + strconv.FormatInt(time.Now().UnixMilli(), 10) + "~AAAAAAAAAAAAAAAAAAAAAAAA", strings.Repeat("x", 5000)} {
			start := time.Now()
			resp, _ := b.do("GET", ordURL+"/api/notes", "", "Cookie", edge.CookieName+"="+v)
			if resp.StatusCode != 200 || resp.Header.Get("Fly-Region") != "ord" {
				t.Errorf("cookie %.20q: %d served in %q, want 200 in ord", v, resp.StatusCode, resp.Header.Get("Fly-Region"))
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("cookie %.20q made the read wait %v", v, d)
			}
		}
	})

	t.Run("a token survives a failover", func(t *testing.T) {
		b := newBrowser(t)
		if resp, body := b.do("POST", ordURL+"/api/notes", `{"body":"before-failover"}`); resp.StatusCode != 201 {
			t.Fatalf("POST: %d %s", resp.StatusCode, body)
		}
		old := b.token(ordURL)
		if err := c.Kill(leader); err != nil {
			t.Fatal(err)
		}
		if _, err := c.WaitLeader(ctx, leader); err != nil {
			t.Fatal(err)
		}
		leader = other
		// The token from timeline 1 still gets the write, in ord or
		// replayed, and never an endless wait.
		start := time.Now()
		bodies, region := b.notes(ordURL)
		if !slices.Contains(bodies, "before-failover") {
			t.Fatalf("after the failover, a read with the old token (%s) shows no write (served in %s)", old, region)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("read with a pre-failover token took %v", d)
		}
		// Writes from ord go to the new leader; the new token is on the
		// new timeline and reads keep seeing the writes.
		var resp *http.Response
		waitFor(t, ctx, time.Minute, "a write in ord after the failover", func() bool {
			resp, _ = b.do("POST", ordURL+"/api/notes", `{"body":"after-failover"}`)
			return resp.StatusCode == 201
		})
		if tok := b.token(ordURL); strings.HasPrefix(tok, "1/") || tok == old {
			t.Errorf("token after the failover %q, want a newer timeline than %q", tok, old)
		}
		if bodies, region := b.notes(ordURL); !slices.Contains(bodies, "after-failover") || !slices.Contains(bodies, "before-failover") {
			t.Fatalf("after the failover, served in %s: %v", region, bodies)
		}
	})
	edges.Close()

	t.Run("a Python app behind the edges", func(t *testing.T) {
		sclDB := strings.Replace(c.ProxyDSN(leader), "connect_timeout=10", "connect_timeout=5", 1)
		sp := startPyApp(t, "scl", "scl", sclDB)
		op := startPyApp(t, "ord", "scl", c.DSN("ord1"))
		inst := func(id string, a *pyApp) edge.Instance {
			return edge.Instance{ID: id, Addr: strings.TrimPrefix(a.url, "http://")}
		}
		pe := startEdges(t, ctx, c, inst("scl-py", sp), inst("ord-py", op), sclDB)
		defer pe.Close()
		b := newBrowser(t)
		waitFor(t, ctx, time.Minute, "the pyitems table on ord1", func() bool {
			resp, _ := b.do("GET", pe.ord.URL+"/items", "")
			return resp.StatusCode == 200
		})
		resp, body := b.do("POST", pe.ord.URL+"/items", "from python in ord")
		if resp.StatusCode != 201 || resp.Header.Get("Fly-Region") != "scl" {
			t.Fatalf("POST /items in ord: %d %q (region %q)", resp.StatusCode, body, resp.Header.Get("Fly-Region"))
		}
		resp, body = b.do("GET", pe.ord.URL+"/items", "")
		var items []string
		if err := json.Unmarshal([]byte(body), &items); err != nil || !slices.Contains(items, "from python in ord") {
			t.Fatalf("GET /items in ord after the write: %d %q", resp.StatusCode, body)
		}
		v, err := c.QueryInts(ctx, leader, "SELECT count(*) FROM pyitems WHERE body = 'from python in ord'")
		if err != nil || len(v) != 1 || v[0] != 1 {
			t.Fatalf("python write applied %v times (%v)", v, err)
		}
	})
}

// rywMetrics is the edge's read-your-writes counters, for the log.
func rywMetrics(t *testing.T, admin string) string {
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "petrel_edge_ryw_total") || strings.HasPrefix(l, "petrel_edge_ryw_wait_seconds_sum") || strings.HasPrefix(l, "petrel_edge_ryw_wait_seconds_count") {
			out = append(out, l[strings.IndexByte(l, '{'):])
		}
	}
	return strings.Join(out, " ")
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// waitFor is testcluster.WaitFor bounded by d, failing the test.
func waitFor(t *testing.T, ctx context.Context, d time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := testcluster.WaitFor(ctx, what, cond); err != nil {
		t.Fatal(err)
	}
}
