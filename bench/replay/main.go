// Command replay measures petrel's edge in the latency world: scl is the
// primary region, ord a replica region 75 ms away (one way), every
// member's, edge's and app's traffic between them crossing a netsim link.
//
// One Go app instance per region (in this process) serves:
//
//	POST /write?n=N   N INSERTs, one round trip each, on the region's
//	                  database; a replica refuses the first (read-only) and
//	                  the app answers 409 + fly-replay: region=scl (the
//	                  pkg/flyreplay middleware), so the edge replays it.
//	POST /remote?n=N  the same N INSERTs sent across the link to the
//	                  leader (what an app does without replay).
//	GET  /read        one SELECT on the region's database.
//	GET  /hello       no database (the edge's own overhead).
//
// It prints, side by side:
//  1. writes made in ord doing 1, 5 and 20 queries: replayed by the edge
//     versus queries sent across the link; p50/p99 and the ratio;
//  2. reads served in ord (p50/p99);
//  3. read-your-writes: a write in ord then at once a read in ord with the
//     cookie: how often the read waited, the wait's p50/p99 (from the
//     edge's Server-Timing header), how often it was replayed to scl, next
//     to the replica's real lag (commit on the leader to visible on ord1);
//  4. the edge's overhead on a request it does not replay (/hello in scl):
//     direct versus through the edge at a fixed rate (p50/p99) and at
//     saturation (requests/s), from a Go load generator.
//
// Usage: go run ./bench/replay [-requests 30] [-rate 200] [-duration 5s]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/petrel-db/petrel/internal/edge"
	"github.com/petrel-db/petrel/internal/netsim"
	"github.com/petrel-db/petrel/internal/testcluster"
	"github.com/petrel-db/petrel/pkg/flyreplay"
)

func main() {
	requests := flag.Int("requests", 30, "requests per write/read measurement")
	rate := flag.Int("rate", 200, "requests per second for the fixed-rate overhead run")
	duration := flag.Duration("duration", 5*time.Second, "length of each overhead run")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(*requests, *rate, *duration); err != nil {
		log.Fatal(err)
	}
}

// app is one region's instance.
type app struct {
	region, primary string
	db, leader      *pgxpool.Pool // leader: across the link (nil in scl)
	fr              flyreplay.Config
}

func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /write", a.fr.Wrap(func(w http.ResponseWriter, r *http.Request) error {
		return a.inserts(w, r, a.db)
	}))
	mux.HandleFunc("POST /remote", func(w http.ResponseWriter, r *http.Request) {
		if err := a.inserts(w, r, a.leader); err != nil {
			http.Error(w, err.Error(), 500)
		}
	})
	mux.HandleFunc("GET /read", func(w http.ResponseWriter, r *http.Request) {
		var n int64
		if err := a.db.QueryRow(r.Context(), "SELECT count(*) FROM bench_replay").Scan(&n); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		fmt.Fprintln(w, n)
	})
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello\n") })
	return mux
}

func (a *app) inserts(w http.ResponseWriter, r *http.Request, db *pgxpool.Pool) error {
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	n = max(1, min(n, 100))
	c, err := db.Acquire(r.Context())
	if err != nil {
		return err
	}
	defer c.Release()
	for i := 0; i < n; i++ {
		if _, err := c.Exec(r.Context(), "INSERT INTO bench_replay(region) VALUES ($1)", a.region); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, "%d rows in %s\n", n, a.region)
	return nil
}

func serve(h http.Handler) (addr string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	return l.Addr().String(), func() { srv.Close() }, nil
}

func run(requests, rate int, duration time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "petrel-bench-replay")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	wd, _ := os.Getwd()
	bin, err := testcluster.Build(ctx, wd, dir)
	if err != nil {
		return err
	}
	m := netsim.DefaultMatrix()
	oneWay := m.Between("scl", "ord")
	c, err := testcluster.Start(ctx, testcluster.Options{Dir: filepath.Join(dir, "cluster"), Binary: bin, World: &m})
	if err != nil {
		return err
	}
	defer c.Close()
	leader, err := c.StartNodes(ctx, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"}, [2]string{"ord1", "ord"})
	if err != nil {
		return err
	}
	if err := c.Exec(ctx, leader, "CREATE TABLE bench_replay(id bigserial primary key, region text, at timestamptz default clock_timestamp())"); err != nil {
		return err
	}
	log.Printf("cluster up, leader %s; scl-ord one-way delay %v", leader, oneWay)

	// Apps: scl's on the leader proxy; ord's on ord1, and across the link
	// to the leader for /remote.
	pool := func(dsn string) (*pgxpool.Pool, error) {
		cfg, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			return nil, err
		}
		cfg.MinConns = 4
		return pgxpool.NewWithConfig(ctx, cfg)
	}
	sclDB, err := pool(c.ProxyDSN(leader))
	if err != nil {
		return err
	}
	defer sclDB.Close()
	ordDB, err := pool(c.DSN("ord1"))
	if err != nil {
		return err
	}
	defer ordDB.Close()
	via, err := c.AppHost("ord")
	if err != nil {
		return err
	}
	ln := c.Node(leader)
	remoteDSN := strings.Replace(c.DSN(leader), "127.0.0.1:"+strconv.Itoa(ln.PGPort), via("127.0.0.1:"+strconv.Itoa(ln.PGPort)), 1)
	ordLeader, err := pool(remoteDSN)
	if err != nil {
		return err
	}
	defer ordLeader.Close()
	sclApp := &app{region: "scl", primary: "scl", db: sclDB, fr: flyreplay.Config{Region: "scl", PrimaryRegion: "scl"}}
	ordApp := &app{region: "ord", primary: "scl", db: ordDB, leader: ordLeader, fr: flyreplay.Config{Region: "ord", PrimaryRegion: "scl"}}
	sclAddr, stopS, err := serve(sclApp.handler())
	if err != nil {
		return err
	}
	defer stopS()
	ordAddr, stopO, err := serve(ordApp.handler())
	if err != nil {
		return err
	}
	defer stopO()
	quiet := slog.New(slog.DiscardHandler)
	se, err := c.StartEdge(ctx, testcluster.EdgeOptions{Region: "scl", Instances: []edge.Instance{{ID: "scl-1", Addr: sclAddr}}, DatabaseURL: c.ProxyDSN(leader), Logger: quiet})
	if err != nil {
		return err
	}
	defer se.Close()
	oe, err := c.StartEdge(ctx, testcluster.EdgeOptions{Region: "ord", Instances: []edge.Instance{{ID: "ord-1", Addr: ordAddr}}, DatabaseURL: c.DSN("ord1"),
		NodeAPI: c.Node("ord1").APIURL(), Logger: quiet})
	if err != nil {
		return err
	}
	defer oe.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}
	// Wait until ord's edge replays to scl (it found scl's edge).
	if err := testcluster.WaitFor(ctx, "ord's edge to replay to scl", func() bool {
		resp, err := client.Post(oe.URL+"/write?n=1", "text/plain", nil)
		if err != nil {
			return false
		}
		drain(resp)
		return resp.StatusCode == 201 && resp.Header.Get("Fly-Region") == "scl"
	}); err != nil {
		return err
	}
	// Warm: every pool's connections, the links' connections.
	for i := 0; i < 5; i++ {
		for _, u := range []string{oe.URL + "/write?n=1", oe.URL + "/remote?n=1"} {
			if resp, err := client.Post(u, "text/plain", nil); err == nil {
				drain(resp)
			}
		}
	}

	fmt.Printf("\n== bench/replay: scl primary, ord %v one-way (%v round trip), %d requests each\n\n", oneWay, 2*oneWay, requests)
	fmt.Printf("1. A write request made in ord\n")
	fmt.Printf("%-8s %-34s %10s %10s %9s\n", "queries", "path", "p50", "p99", "ratio p50")
	for _, n := range []int{1, 5, 20} {
		rep, err := timeRequests(client, "POST", fmt.Sprintf("%s/write?n=%d", oe.URL, n), requests, 201, "scl")
		if err != nil {
			return err
		}
		rem, err := timeRequests(client, "POST", fmt.Sprintf("%s/remote?n=%d", oe.URL, n), requests, 201, "ord")
		if err != nil {
			return err
		}
		fmt.Printf("%-8d %-34s %10s %10s %9s\n", n, "replayed to scl by the edge", ms(pct(rep, 50)), ms(pct(rep, 99)), "1.00")
		fmt.Printf("%-8d %-34s %10s %10s %8.2fx\n", n, "queries across the link (no replay)", ms(pct(rem, 50)), ms(pct(rem, 99)), float64(pct(rem, 50))/float64(pct(rep, 50)))
	}

	fmt.Printf("\n2. Reads served in ord (its replica)\n")
	rd, err := timeRequests(client, "GET", oe.URL+"/read", requests*3, 200, "ord")
	if err != nil {
		return err
	}
	fmt.Printf("   GET /read through ord's edge: p50 %s, p99 %s\n", ms(pct(rd, 50)), ms(pct(rd, 99)))

	fmt.Printf("\n3. Read-your-writes: a write in ord, then at once a read in ord with the cookie\n")
	lag, err := replicaLag(ctx, c, leader, requests)
	if err != nil {
		return err
	}
	var waits []time.Duration
	waited, replayed, fresh := 0, 0, 0
	jar, _ := cookiejar.New(nil)
	bc := &http.Client{Jar: jar, Transport: client.Transport, Timeout: 30 * time.Second}
	for i := 0; i < requests*2; i++ {
		resp, err := bc.Post(oe.URL+"/write?n=1", "text/plain", nil)
		if err != nil {
			return err
		}
		drain(resp)
		resp, err = bc.Get(oe.URL + "/read")
		if err != nil {
			return err
		}
		drain(resp)
		st := resp.Header.Get("Server-Timing")
		d := parseTiming(st)
		waits = append(waits, d)
		switch {
		case resp.Header.Get("Fly-Region") != "ord":
			replayed++
		case strings.Contains(st, "desc=waited"):
			waited++
		default:
			fresh++
		}
	}
	fmt.Printf("   %d reads: %d served at once (replica had it), %d after waiting, %d replayed to scl\n", len(waits), fresh, waited, replayed)
	fmt.Printf("   wait p50 %s, p99 %s   |   replica's real lag (leader commit to visible on ord1) p50 %s, p99 %s\n",
		ms(pct(waits, 50)), ms(pct(waits, 99)), ms(pct(lag, 50)), ms(pct(lag, 99)))
	fmt.Printf("   target: wait p50 <= lag p50 + 10 ms: %v\n", pct(waits, 50) <= pct(lag, 50)+10*time.Millisecond)

	fmt.Printf("\n4. The edge's own overhead (GET /hello in scl, not replayed)\n")
	for _, target := range []struct{ name, url string }{{"direct to the app", "http://" + sclAddr + "/hello"}, {"through the edge", se.URL + "/hello"}} {
		lat, err := fixedRate(client, target.url, rate, duration)
		if err != nil {
			return err
		}
		rps := saturate(client, target.url, 8, duration)
		fmt.Printf("   %-18s at %d req/s: p50 %s, p99 %s   |   saturation (8 workers): %.0f req/s\n", target.name, rate, ms(pct(lat, 50)), ms(pct(lat, 99)), rps)
	}
	return nil
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

func timeRequests(client *http.Client, method, url string, n, want int, region string) ([]time.Duration, error) {
	var out []time.Duration
	for i := 0; i < n; i++ {
		req, _ := http.NewRequest(method, url, nil)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		drain(resp)
		d := time.Since(start)
		if resp.StatusCode != want || resp.Header.Get("Fly-Region") != region {
			return nil, fmt.Errorf("%s %s: %d in %q, want %d in %s", method, url, resp.StatusCode, resp.Header.Get("Fly-Region"), want, region)
		}
		out = append(out, d)
	}
	return out, nil
}

// replicaLag inserts on the leader (directly) and polls ord1 directly for
// the row: the time from the commit's acknowledgement to visibility.
func replicaLag(ctx context.Context, c *testcluster.Cluster, leader string, n int) ([]time.Duration, error) {
	lp, err := pgxpool.New(ctx, c.DSN(leader))
	if err != nil {
		return nil, err
	}
	defer lp.Close()
	rp, err := pgxpool.New(ctx, c.DSN("ord1"))
	if err != nil {
		return nil, err
	}
	defer rp.Close()
	var out []time.Duration
	for i := 0; i < n; i++ {
		var id int64
		if err := lp.QueryRow(ctx, "INSERT INTO bench_replay(region) VALUES ('lag') RETURNING id").Scan(&id); err != nil {
			return nil, err
		}
		t0 := time.Now()
		for {
			var ok bool
			if err := rp.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM bench_replay WHERE id = $1)", id).Scan(&ok); err != nil {
				return nil, err
			}
			if ok {
				break
			}
			if time.Since(t0) > 10*time.Second {
				return nil, errors.New("ord1 did not get a row in 10 s")
			}
			time.Sleep(500 * time.Microsecond)
		}
		out = append(out, time.Since(t0))
	}
	return out, nil
}

func parseTiming(st string) time.Duration {
	_, after, ok := strings.Cut(st, "dur=")
	if !ok {
		return 0
	}
	f, _ := strconv.ParseFloat(strings.TrimSpace(after), 64)
	return time.Duration(f * float64(time.Millisecond))
}

// fixedRate sends GETs at rate per second for d (open loop, one goroutine
// per request) and returns their latencies.
func fixedRate(client *http.Client, url string, rate int, d time.Duration) ([]time.Duration, error) {
	var mu sync.Mutex
	var out []time.Duration
	var errs atomic.Int64
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			resp, err := client.Get(url)
			if err != nil {
				errs.Add(1)
				return
			}
			drain(resp)
			mu.Lock()
			out = append(out, time.Since(start))
			mu.Unlock()
		}()
	}
	wg.Wait()
	if errs.Load() > 0 {
		return nil, fmt.Errorf("%d errors at a fixed rate on %s", errs.Load(), url)
	}
	return out, nil
}

// saturate runs workers closed-loop for d and returns requests per second.
func saturate(client *http.Client, url string, workers int, d time.Duration) float64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) {
				resp, err := client.Get(url)
				if err != nil {
					continue
				}
				drain(resp)
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
