// Command store measures what a petrel cluster costs its store and its
// hosts: the etcd requests per second of a 3-node cluster (scl=2, ord=1,
// as `petrel up` starts it) while idle and while a client inserts a row
// every -interval, and the resident memory of each node's agent and
// watchdog, next to Patroni's figures measured the same way. It ends with
// a short crash-failover check (bench/failover measures it properly).
//
// Requests are gRPC messages etcd received (every method, streams'
// messages included), read from the embedded etcd's own Prometheus
// /metrics on its client URL (grpc_server_msg_received_total), before
// and after each window. Memory is VmRSS from /proc/<pid>/status.
//
// With -clusters (clusters.go) it measures many clusters on one etcd
// instead: for each count, 3 simulated members per cluster (the real
// engine and store, Postgres simulated) against one real etcd in its own
// process, idle and during planned switchovers: etcd's CPU and request
// rate, lease renewal and leader-key watch delivery latencies.
//
// Usage: go run ./bench/store [-window 30s] [-interval 50ms] [-crashes 3]
//
//	go run ./bench/store -clusters 100,300,1000 [-clients N] [-switchovers 20] [-etcd-bin /usr/bin/etcd]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/testcluster"
)

var layout = [][2]string{{"scl1", "scl"}, {"scl2", "scl"}, {"ord1", "ord"}}

func main() {
	window := flag.Duration("window", 30*time.Second, "length of each measuring window")
	interval := flag.Duration("interval", 50*time.Millisecond, "client insert interval in the loaded window")
	crashes := flag.Int("crashes", 3, "crash-failover repetitions at the end (0: none)")
	hold := flag.Duration("hold", 0, "keep the idle cluster up this long after measuring, for a look at its processes")
	sizes, many := manyFlags()
	child := flag.String("etcd-child", "", "internal: run an embedded etcd in this data directory (the -clusters store)")
	childURLs := flag.String("etcd-child-urls", "", "internal: CLIENT,PEER URLs of -etcd-child")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if *child != "" {
		if err := etcdChild(*child, *childURLs); err != nil {
			log.Fatal(err)
		}
		return
	}
	if *sizes != "" {
		var err error
		if many.sizes, err = parseSizes(*sizes); err != nil {
			log.Fatal(err)
		}
		many.window = *window
		if err := runMany(*many); err != nil {
			log.Fatal(err)
		}
		return
	}
	if err := run(*window, *interval, *crashes, *hold); err != nil {
		log.Fatal(err)
	}
}

// counts maps "service/method" to messages received.
type counts map[string]float64

func (c counts) total() float64 {
	t := 0.0
	for _, v := range c {
		t += v
	}
	return t
}

// scrape reads grpc_server_msg_received_total from etcd's /metrics.
func scrape(ctx context.Context, endpoint string) (counts, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("reading etcd metrics: %w", err)
	}
	defer resp.Body.Close()
	out := counts{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	const name = "grpc_server_msg_received_total{"
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) {
			continue
		}
		labels, val, ok := strings.Cut(line[len(name):], "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			continue
		}
		out[label(labels, "grpc_service")+"/"+label(labels, "grpc_method")] += v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading etcd metrics: %w", err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no grpc_server_msg_received_total in %s/metrics", endpoint)
	}
	return out, nil
}

func label(labels, name string) string {
	i := strings.Index(labels, name+`="`)
	if i < 0 {
		return "?"
	}
	rest := labels[i+len(name)+2:]
	if j := strings.IndexByte(rest, '"'); j >= 0 {
		return rest[:j]
	}
	return rest
}

// rate measures messages per second over d.
func rate(ctx context.Context, endpoint string, d time.Duration) (float64, counts, error) {
	before, err := scrape(ctx, endpoint)
	if err != nil {
		return 0, nil, err
	}
	t0 := time.Now()
	select {
	case <-time.After(d):
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
	after, err := scrape(ctx, endpoint)
	if err != nil {
		return 0, nil, err
	}
	el := time.Since(t0).Seconds()
	per := counts{}
	for k, v := range after {
		if dv := v - before[k]; dv > 0 {
			per[k] = dv / el
		}
	}
	return per.total(), per, nil
}

// rss is a process's resident memory in KiB from /proc/<pid>/status:
// VmRSS and its anonymous part (heap, stacks; the rest is the
// executable's pages, shared with other processes of the same binary).
type rss struct{ total, anon int }

func rssOf(pid int) rss {
	var r rss
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil || pid <= 0 {
		return r
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "VmRSS:":
			r.total = n
		case "RssAnon:":
			r.anon = n
		}
	}
	return r
}

// cpuTicks is a process's user+system CPU time in clock ticks (1/100 s).
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil || pid <= 0 {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	k, _ := strconv.ParseInt(f[12], 10, 64)
	return u + k
}

// watchdogPID finds the agent's watchdog child: a child of agent whose
// command line names the watchdog.
func watchdogPID(agent int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(st)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[1] != strconv.Itoa(agent) {
			continue
		}
		cl, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cl), "watchdog") {
			return pid
		}
	}
	return 0
}

// writer inserts a row every interval through a multi-host DSN that asks
// for the writable server, and records when each insert was acknowledged.
type writer struct {
	mu   sync.Mutex
	acks []time.Time
	next int64
}

func (w *writer) run(ctx context.Context, dsn string, every time.Duration) {
	var conn *pgx.Conn
	t := time.NewTicker(every)
	defer t.Stop()
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			cn, err := pgx.Connect(cctx, dsn)
			cancel()
			if err != nil {
				continue
			}
			conn = cn
		}
		w.mu.Lock()
		w.next++
		id := w.next
		w.mu.Unlock()
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := conn.Exec(ictx, "INSERT INTO bench(id) VALUES ($1)", id)
		cancel()
		if err != nil {
			conn.Close(context.Background())
			conn = nil
			continue
		}
		w.mu.Lock()
		w.acks = append(w.acks, time.Now())
		w.mu.Unlock()
	}
}

func (w *writer) lastAck() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.acks) == 0 {
		return time.Time{}
	}
	return w.acks[len(w.acks)-1]
}

// window is the gap around t: last acknowledgement before it to the first
// after it.
func (w *writer) window(t time.Time) (time.Duration, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var before, after time.Time
	for _, a := range w.acks {
		if a.Before(t) {
			before = a
		} else if after.IsZero() {
			after = a
		}
	}
	if before.IsZero() || after.IsZero() {
		return 0, false
	}
	return after.Sub(before), true
}

func mib(r rss) string {
	return fmt.Sprintf("%.1f [%.1f]", float64(r.total)/1024, float64(r.anon)/1024)
}

func run(window, interval time.Duration, crashes int, hold time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "petrel-bench-store")
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
	c, err := testcluster.Start(ctx, testcluster.Options{Dir: filepath.Join(dir, "cluster"), Binary: bin})
	if err != nil {
		return err
	}
	defer c.Close()
	for _, n := range layout {
		if _, err := c.AddNode(n[0], n[1]); err != nil {
			return err
		}
	}
	endpoint := c.EtcdEndpoints()[0]
	leader := ""
	healthy := func() error {
		hctx, hcancel := context.WithTimeout(ctx, 3*time.Minute)
		defer hcancel()
		return testcluster.WaitFor(hctx, "a healthy cluster", func() bool {
			l, err := c.WaitLeader(hctx, "")
			if err != nil {
				return false
			}
			st, err := c.Status(l)
			if err != nil || st.SyncState != "sync" {
				return false
			}
			for _, id := range c.IDs() {
				if s, err := c.Status(id); id != l && (err != nil || s.Role != model.RoleReplica || !s.Streaming) {
					return false
				}
			}
			leader = l
			return true
		})
	}
	if err := healthy(); err != nil {
		return err
	}
	if err := c.Exec(ctx, leader, "CREATE TABLE bench (id bigint PRIMARY KEY, at timestamptz DEFAULT now())"); err != nil {
		return err
	}
	// Let start-up traffic (registrations, slots, the sync record) end.
	time.Sleep(5 * time.Second)
	log.Printf("healthy, leader %s; measuring %v idle", leader, window)
	cpu0, t0 := map[string]int64{}, time.Now()
	for _, id := range c.IDs() {
		cpu0[id] = cpuTicks(c.AgentPID(id))
	}
	idle, idleBy, err := rate(ctx, endpoint, window)
	if err != nil {
		return err
	}
	cpuPct := map[string]float64{}
	for _, id := range c.IDs() {
		cpuPct[id] = float64(cpuTicks(c.AgentPID(id))-cpu0[id]) / 100 / time.Since(t0).Seconds() * 100
	}
	type mem struct{ agent, watchdog rss }
	mems, idleLeader := map[string]mem{}, leader
	for _, id := range c.IDs() {
		pid := c.AgentPID(id)
		mems[id] = mem{rssOf(pid), rssOf(watchdogPID(pid))}
	}

	if hold > 0 {
		for _, id := range c.IDs() {
			log.Printf("%s: agent pid %d, watchdog pid %d", id, c.AgentPID(id), watchdogPID(c.AgentPID(id)))
		}
		log.Printf("holding the idle cluster for %v", hold)
		time.Sleep(hold)
	}
	log.Printf("measuring %v with a client inserting every %v", window, interval)
	w := &writer{}
	wctx, stopWriter := context.WithCancel(ctx)
	defer stopWriter()
	done := make(chan struct{})
	go func() { w.run(wctx, c.WriterDSN(), interval); close(done) }()
	if err := testcluster.WaitFor(ctx, "writes", func() bool { return time.Since(w.lastAck()) < time.Second }); err != nil {
		return err
	}
	loaded, loadedBy, err := rate(ctx, endpoint, window)
	if err != nil {
		return err
	}

	var windows []time.Duration
	for i := 0; i < crashes; i++ {
		if err := testcluster.WaitFor(ctx, "writes", func() bool { return time.Since(w.lastAck()) < 200*time.Millisecond }); err != nil {
			return err
		}
		time.Sleep(time.Second + time.Duration(i)*300*time.Millisecond) // vary the phase against renewals
		old := leader
		t0 := time.Now()
		if err := c.Kill(old); err != nil {
			return err
		}
		if err := testcluster.WaitFor(ctx, "a write after the crash", func() bool { return w.lastAck().After(t0) }); err != nil {
			return err
		}
		if d, ok := w.window(t0); ok {
			windows = append(windows, d)
			log.Printf("crash %d: killed %s, window %.2fs", i+1, old, d.Seconds())
		}
		if err := c.StartNode(old); err != nil {
			return err
		}
		if err := healthy(); err != nil {
			return err
		}
	}
	stopWriter()
	<-done

	fmt.Println()
	fmt.Println("petrel store benchmark: 3 nodes (scl=2, ord=1), embedded etcd, default settings")
	fmt.Println()
	fmt.Printf("%-44s %12s %12s\n", "etcd requests/s (gRPC messages received)", "idle", "loaded")
	fmt.Printf("%-44s %12.2f %12.2f\n", "petrel, this run", idle, loaded)
	fmt.Printf("%-44s %12s %12s\n", "Patroni 3.0.2, defaults (reference)", "0.43", "")
	fmt.Printf("%-44s %12s %12s\n", "Patroni, aggressive settings (reference)", "1.63", "")
	fmt.Printf("%-44s %12s\n", "target", "<= 1")
	fmt.Println()
	fmt.Printf("by method (%v windows; loaded: a client inserting every %v)\n", window, interval)
	methods := map[string]bool{}
	for k := range idleBy {
		methods[k] = true
	}
	for k := range loadedBy {
		methods[k] = true
	}
	var ms []string
	for k := range methods {
		ms = append(ms, k)
	}
	sort.Strings(ms)
	for _, k := range ms {
		fmt.Printf("  %-42s %12.2f %12.2f\n", k, idleBy[k], loadedBy[k])
	}
	fmt.Println()
	fmt.Println("resident memory (VmRSS; in brackets its anonymous part, the rest is the executable's shared pages)")
	fmt.Printf("%-8s %18s %18s %14s %16s\n", "node", "agent MiB", "watchdog MiB", "total MiB", "agent CPU idle")
	ids := c.IDs()
	sort.Strings(ids)
	for _, id := range ids {
		m := mems[id]
		role := ""
		if id == idleLeader {
			role = " (leader)"
		}
		fmt.Printf("%-8s %18s %18s %14.1f %15.1f%%%s\n", id, mib(m.agent), mib(m.watchdog), float64(m.agent.total+m.watchdog.total)/1024, cpuPct[id], role)
	}
	fmt.Printf("%-8s %18s %18s %14s\n", "Patroni", "", "", "60 (reference)")
	fmt.Printf("%-8s %18s %18s %14s\n", "target", "", "", "<= 30")
	if len(windows) > 0 {
		sort.Slice(windows, func(i, j int) bool { return windows[i] < windows[j] })
		fmt.Println()
		fmt.Printf("crash failover (kill -9 of the leader's agent and postmaster), n=%d: window min / median / max %.2f / %.2f / %.2f s\n",
			len(windows), windows[0].Seconds(), windows[len(windows)/2].Seconds(), windows[len(windows)-1].Seconds())
		fmt.Println("(bench/failover measures crash and switchover windows with more repetitions)")
	}
	return nil
}
