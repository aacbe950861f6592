// Command regions measures replication lag per region under a steady
// write load, in a world where regions are really far apart: nodes
// scl1, scl2 (primary region), ord1, ams1, syd1, every member's traffic to
// the others crossing a netsim link with the default latency matrix's
// one-way delay.
//
// A writer inserts one row every -interval on the leader, in its own
// autocommit transaction, and records the leader's clock_timestamp() at
// the insert (just before the commit record; all processes share this
// machine's clock). Meanwhile pgbench (when installed) adds -pgbench-clients
// of background TPC-B-like load. One poller per replica, connected
// directly to it (an app in that region), reads max(id) every -poll and
// records when each id first became visible. For each region's replica it
// prints p50/p99/max of visibility time minus commit time next to the
// link's one-way delay from scl (the floor: WAL cannot arrive sooner),
// and the lag the member itself reports in GET /status at the end.
//
// Usage: go run ./bench/regions [-duration 30s] [-interval 20ms] [-poll 2ms]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/petrel-db/petrel/internal/netsim"
	"github.com/petrel-db/petrel/internal/testcluster"
)

var layout = [][2]string{{"scl1", "scl"}, {"scl2", "scl"}, {"ord1", "ord"}, {"ams1", "ams"}, {"syd1", "syd"}}

func main() {
	duration := flag.Duration("duration", 30*time.Second, "how long to write")
	interval := flag.Duration("interval", 20*time.Millisecond, "time between timed inserts")
	poll := flag.Duration("poll", 2*time.Millisecond, "how often each replica is polled")
	pgbenchClients := flag.Int("pgbench-clients", 2, "pgbench background load clients (0: none)")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(*duration, *interval, *poll, *pgbenchClients); err != nil {
		log.Fatal(err)
	}
}

func run(duration, interval, poll time.Duration, pgbenchClients int) error {
	ctx, cancel := context.WithTimeout(context.Background(), duration+5*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "petrel-bench-regions")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	bin, err := testcluster.Build(ctx, wd, dir)
	if err != nil {
		return err
	}
	m := netsim.DefaultMatrix()
	c, err := testcluster.Start(ctx, testcluster.Options{Dir: filepath.Join(dir, "cluster"), Binary: bin, World: &m})
	if err != nil {
		return err
	}
	defer c.Close()
	for _, n := range layout {
		if _, err := c.AddNode(n[0], n[1]); err != nil {
			return err
		}
	}
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
	leader, err := c.WaitLeader(wctx, "")
	if err == nil {
		for _, n := range layout {
			if n[0] != leader {
				if err = c.WaitRole(wctx, n[0], "replica"); err != nil {
					break
				}
			}
		}
	}
	wcancel()
	if err != nil {
		return fmt.Errorf("cluster not ready: %w", err)
	}
	log.Printf("cluster ready, leader %s; one-way delays from scl: %s", leader, floors(m))
	if err := c.Exec(ctx, leader, "CREATE TABLE lagbench (id bigint PRIMARY KEY, at timestamptz NOT NULL)"); err != nil {
		return err
	}

	if pgbenchClients > 0 {
		stop, err := startPgbench(ctx, c.DSN(leader), pgbenchClients, duration)
		if err != nil {
			log.Printf("no background pgbench load: %v", err)
		} else {
			defer stop()
		}
	}

	// Wait until the table exists everywhere before polling.
	time.Sleep(time.Second)
	seen := map[string]map[int64]time.Time{}
	var mu sync.Mutex
	pctx, pcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, n := range layout {
		if n[0] == leader {
			continue
		}
		id := n[0]
		seen[id] = map[int64]time.Time{}
		conn, err := pgx.Connect(ctx, c.DSN(id))
		if err != nil {
			pcancel()
			return fmt.Errorf("connecting to %s: %w", id, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close(context.Background())
			var last int64
			t := time.NewTicker(poll)
			defer t.Stop()
			for pctx.Err() == nil {
				<-t.C
				var mx *int64
				if err := conn.QueryRow(pctx, "SELECT max(id) FROM lagbench").Scan(&mx); err != nil || mx == nil {
					continue
				}
				now := time.Now()
				if *mx > last {
					mu.Lock()
					for i := last + 1; i <= *mx; i++ {
						seen[id][i] = now
					}
					mu.Unlock()
					last = *mx
				}
			}
		}()
	}

	// Sample what the members report in GET /status while under load.
	statusLag := map[string][]time.Duration{}
	statusBytes := map[string]int64{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for pctx.Err() == nil {
			<-t.C
			for _, n := range layout {
				if n[0] == leader {
					continue
				}
				if st, err := c.Status(n[0]); err == nil && st.Role == "replica" && st.LagBytes >= 0 {
					mu.Lock()
					statusLag[n[0]] = append(statusLag[n[0]], time.Duration(st.LagSeconds*float64(time.Second)))
					statusBytes[n[0]] = max(statusBytes[n[0]], st.LagBytes)
					mu.Unlock()
				}
			}
		}
	}()

	commits := map[int64]time.Time{}
	wconn, err := pgx.Connect(ctx, c.DSN(leader))
	if err != nil {
		pcancel()
		return err
	}
	log.Printf("writing one row every %v for %v; polling replicas every %v", interval, duration, poll)
	end := time.Now().Add(duration)
	tick := time.NewTicker(interval)
	var id int64
	for time.Now().Before(end) {
		<-tick.C
		id++
		var at time.Time
		if err := wconn.QueryRow(ctx, "INSERT INTO lagbench VALUES ($1, clock_timestamp()) RETURNING at", id).Scan(&at); err != nil {
			pcancel()
			return fmt.Errorf("insert %d: %w", id, err)
		}
		commits[id] = at
	}
	tick.Stop()
	wconn.Close(context.Background())
	time.Sleep(2 * time.Second) // let the far regions catch up
	pcancel()
	wg.Wait()

	fmt.Printf("\nbench/regions: commit on leader %s -> visible on each region's replica\n", leader)
	fmt.Printf("%d timed inserts every %v over %v, replicas polled every %v; background pgbench clients: %d\n\n", id, interval, duration, poll, pgbenchClients)
	fmt.Printf("%-6s %-6s %8s %10s %10s %10s %10s %8s   %s\n", "NODE", "REGION", "FLOOR", "p50", "p99", "max", "p50-FLOOR", "MISSING", "/status lag_seconds p50/max, max lag_bytes (sampled every 250ms)")
	for _, n := range layout {
		if n[0] == leader {
			continue
		}
		var lags []time.Duration
		missing := 0
		for i := int64(1); i <= id; i++ {
			v, ok := seen[n[0]][i]
			if !ok {
				missing++
				continue
			}
			lags = append(lags, v.Sub(commits[i]))
		}
		sort.Slice(lags, func(a, b int) bool { return lags[a] < lags[b] })
		floor := m.Between("scl", n[1])
		sl := statusLag[n[0]]
		sort.Slice(sl, func(a, b int) bool { return sl[a] < sl[b] })
		fmt.Printf("%-6s %-6s %8s %10s %10s %10s %10s %8d   %s / %s, %d B\n", n[0], n[1], floor, pct(lags, 50), pct(lags, 99), pct(lags, 100),
			(pctDur(lags, 50) - floor).Round(100*time.Microsecond), missing, pct(sl, 50), pct(sl, 100), statusBytes[n[0]])
	}
	fmt.Println("\nGET /status at the end (lag_bytes = leader LSN - replay LSN, lag_seconds from replay timestamps):")
	for _, n := range layout {
		st, err := c.Status(n[0])
		if err != nil {
			fmt.Printf("  %s: %v\n", n[0], err)
			continue
		}
		fmt.Printf("  %-5s %-4s %-8s lag %d B / %.3fs streaming=%v\n", st.ID, st.Region, st.Role, st.LagBytes, st.LagSeconds, st.Streaming)
	}
	return nil
}

func floors(m netsim.Matrix) string {
	var parts []string
	for _, r := range []string{"scl", "ord", "ams", "syd"} {
		parts = append(parts, fmt.Sprintf("%s %v", r, m.Between("scl", r)))
	}
	return strings.Join(parts, ", ")
}

func pctDur(s []time.Duration, p int) time.Duration {
	if len(s) == 0 {
		return 0
	}
	i := (len(s)*p+99)/100 - 1
	if i < 0 {
		i = 0
	}
	if i >= len(s) {
		i = len(s) - 1
	}
	return s[i]
}

func pct(s []time.Duration, p int) string {
	if len(s) == 0 {
		return "-"
	}
	return pctDur(s, p).Round(100 * time.Microsecond).String()
}

// startPgbench initialises pgbench's tables (scale 1) and runs clients
// for d in the background; the returned func waits for it.
func startPgbench(ctx context.Context, dsn string, clients int, d time.Duration) (func(), error) {
	pb, err := exec.LookPath("pgbench")
	if err != nil {
		return nil, fmt.Errorf("pgbench not installed: %w", err)
	}
	if out, err := exec.CommandContext(ctx, pb, "-i", "-s", "1", "-q", dsn).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pgbench -i: %w: %s", err, out)
	}
	cmd := exec.CommandContext(ctx, pb, "-c", fmt.Sprint(clients), "-T", fmt.Sprint(int(d.Seconds())), "-R", "100", "-n", dsn)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	log.Printf("background pgbench: %d clients, rate-limited to 100 tps", clients)
	return func() {
		_ = cmd.Wait()
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, "tps") || strings.Contains(l, "latency average") {
				log.Printf("pgbench: %s", strings.TrimSpace(l))
			}
		}
	}, nil
}
