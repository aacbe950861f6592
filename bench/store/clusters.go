package main

// -clusters mode: many clusters on one store. For each N, a fresh etcd in
// a child process (so its CPU is its own in /proc) serves N clusters of 3
// simulated members (member.go): each member its own store.Store and, by
// default, its own etcd client (-clients N shares N among them). Once every cluster is settled
// (a leader, two streaming replicas, a synchronous standby recorded), two
// windows are measured: idle, and one with -switchovers planned
// switchovers spread over it (the leader key deleted by the old leader
// and put by the new one: what the watch delivery figure is made of).

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/etcdembed"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// manyOpts are the -clusters mode's settings.
type manyOpts struct {
	sizes       []int
	clients     int
	ramp        int // clusters started per second
	window      time.Duration
	switchovers int
	tick        time.Duration
	ttl         time.Duration
	etcdBin     string
}

// parseSizes reads "100,300,1000".
func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-clusters %q: want a comma-separated list of positive counts", s)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-clusters %q: no count", s)
	}
	return out, nil
}

// quantile is the q-quantile of ds (nearest rank), 0 when empty.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// recorder collects what the stores' probes report, by window (phase 1:
// idle, 2: switchovers; 0: not recorded).
type recorder struct {
	phase atomic.Int32

	mu        sync.Mutex
	leader    [3][]time.Duration // leader-lease renewals, send to answer
	session   [3][]time.Duration // session-lease renewals
	failed    [3]int             // renewals that failed or timed out
	lastFail  [3]string          // the last failure's error
	slowAt    [3][]time.Time     // send times of renewals slower than slowRenewal (or failed)
	commits   map[commitKey]commit
	leaderSaw []seen // leader-key watch events applied by a member's cache
}

type commitKey struct {
	cluster string
	rev     int64
}

type commit struct {
	writer string
	sent   time.Time
}

type seen struct {
	cluster, member string
	rev             int64
	at              time.Time
}

// slowRenewal: renewals this slow are listed by when they were sent, to
// tell one stall that delayed many from scattered slow answers.
const slowRenewal = 100 * time.Millisecond

// hiccups measures this process's own scheduling stalls: how late a
// goroutine sleeping 5 ms wakes, at worst, per second of the window. A
// renewal answer arriving during a stall is timed late by as much.
func hiccups(ctx context.Context, start time.Time) map[int]time.Duration {
	worst := map[int]time.Duration{}
	for ctx.Err() == nil {
		t := time.Now()
		time.Sleep(5 * time.Millisecond)
		if late := time.Since(t) - 5*time.Millisecond; late > worst[int(t.Sub(start)/time.Second)] {
			worst[int(t.Sub(start)/time.Second)] = late
		}
	}
	return worst
}

func newRecorder() *recorder { return &recorder{commits: map[commitKey]commit{}} }

func (r *recorder) probe(cluster, member, leaderKey string) store.Probe {
	return store.Probe{
		Renewal: func(leader bool, took time.Duration, err error) {
			ph := r.phase.Load()
			if ph == 0 {
				return
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			if err != nil || took >= slowRenewal {
				r.slowAt[ph] = append(r.slowAt[ph], time.Now().Add(-took))
			}
			switch {
			case err != nil:
				r.failed[ph]++
				r.lastFail[ph] = err.Error()
			case leader:
				r.leader[ph] = append(r.leader[ph], took)
			default:
				r.session[ph] = append(r.session[ph], took)
			}
		},
		Committed: func(sent time.Time, rev int64) {
			if r.phase.Load() == 0 {
				return
			}
			r.mu.Lock()
			r.commits[commitKey{cluster, rev}] = commit{member, sent}
			r.mu.Unlock()
		},
		Watched: func(key string, rev int64) {
			if key != leaderKey || r.phase.Load() == 0 {
				return
			}
			at := time.Now()
			r.mu.Lock()
			r.leaderSaw = append(r.leaderSaw, seen{cluster, member, rev, at})
			r.mu.Unlock()
		},
	}
}

// deliveries joins leader-key events with the writes that made them: for
// every member other than the writer, from the write's send time to its
// cache applying the event.
func (r *recorder) deliveries() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []time.Duration
	for _, s := range r.leaderSaw {
		c, ok := r.commits[commitKey{s.cluster, s.rev}]
		if !ok || c.writer == s.member {
			continue // a lease expiry, or the writer's own cache
		}
		out = append(out, s.at.Sub(c.sent))
	}
	return out
}

// etcdProc is the store under test, in its own process.
type etcdProc struct {
	cmd      *exec.Cmd
	endpoint string
	version  string
	exited   chan struct{}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startEtcd runs etcd in dir: bin, or, when bin is empty, this program
// again as an internal/etcdembed child (petrel up's etcd).
func startEtcd(ctx context.Context, dir, bin string) (*etcdProc, error) {
	cp, err := freePort()
	if err != nil {
		return nil, err
	}
	pp, err := freePort()
	if err != nil {
		return nil, err
	}
	curl, purl := fmt.Sprintf("http://127.0.0.1:%d", cp), fmt.Sprintf("http://127.0.0.1:%d", pp)
	var cmd *exec.Cmd
	version := "internal/etcdembed (petrel up's)"
	if bin == "" {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		cmd = exec.Command(self, "-etcd-child", dir, "-etcd-child-urls", curl+","+purl)
	} else {
		cmd = exec.Command(bin, "--name", "bench", "--data-dir", dir,
			"--listen-client-urls", curl, "--advertise-client-urls", curl,
			"--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
			"--initial-cluster", "bench="+purl, "--log-level", "error")
		if out, err := exec.Command(bin, "--version").Output(); err == nil {
			version = bin + " " + strings.TrimSpace(strings.Split(string(out), "\n")[0])
		}
	}
	logf, err := os.Create(filepath.Join(filepath.Dir(dir), "etcd.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting etcd: %w", err)
	}
	e := &etcdProc{cmd: cmd, endpoint: curl, version: version, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(e.exited) }()
	deadline := time.Now().Add(time.Minute)
	for {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := scrape(sctx, curl)
		cancel()
		if err == nil {
			return e, nil
		}
		select {
		case <-e.exited:
			return nil, fmt.Errorf("etcd exited while starting (see %s)", logf.Name())
		default:
		}
		if time.Now().After(deadline) {
			e.stop()
			return nil, fmt.Errorf("etcd not serving after a minute: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *etcdProc) stop() {
	_ = e.cmd.Process.Kill()
	<-e.exited
}

// etcdChild is the -etcd-child process: an embedded etcd until SIGTERM.
func etcdChild(dir, urls string) error {
	curl, purl, ok := strings.Cut(urls, ",")
	if !ok {
		return errors.New("-etcd-child-urls: want CLIENT,PEER")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := etcdembed.Start(ctx, etcdembed.Options{Dir: dir, ClientURL: curl, PeerURL: purl,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		return err
	}
	<-ctx.Done()
	srv.Kill()
	return nil
}

// window is one measured window's figures.
type windowStats struct {
	cpuPct, benchCPUPct float64
	reqs                float64
	byMethod            counts
	leader, session     []time.Duration
	failed              int
	lastFail            string
	start               time.Time
	slowAt              []time.Time
	hiccup              map[int]time.Duration // this process's worst wake-up delay by second
}

func selfTicks() int64 { return cpuTicks(os.Getpid()) }

// measure records one window of d in phase ph.
func measure(ctx context.Context, rec *recorder, e *etcdProc, ph int32, d time.Duration, during func(context.Context)) (windowStats, error) {
	var w windowStats
	before, err := scrape(ctx, e.endpoint)
	if err != nil {
		return w, err
	}
	pid := e.cmd.Process.Pid
	c0, s0, t0 := cpuTicks(pid), selfTicks(), time.Now()
	rec.phase.Store(ph)
	dctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	hc := make(chan map[int]time.Duration, 1)
	go func() { hc <- hiccups(dctx, t0) }()
	if during != nil {
		during(dctx)
	}
	<-dctx.Done()
	w.hiccup, w.start = <-hc, t0
	if ctx.Err() != nil {
		return w, ctx.Err()
	}
	rec.phase.Store(0)
	el := time.Since(t0).Seconds()
	c1, s1 := cpuTicks(pid), selfTicks()
	after, err := scrape(ctx, e.endpoint)
	if err != nil {
		return w, err
	}
	w.cpuPct = float64(c1-c0) / 100 / el * 100
	w.benchCPUPct = float64(s1-s0) / 100 / el * 100
	w.byMethod = counts{}
	for k, v := range after {
		if dv := v - before[k]; dv > 0 {
			w.byMethod[k] = dv / el
		}
	}
	w.reqs = w.byMethod.total()
	rec.mu.Lock()
	w.leader, w.session, w.failed, w.lastFail, w.slowAt = rec.leader[ph], rec.session[ph], rec.failed[ph], rec.lastFail[ph], rec.slowAt[ph]
	rec.mu.Unlock()
	return w, nil
}

// manyResult is one N's figures.
type manyResult struct {
	n, members  int
	startup     time.Duration
	idle, chg   windowStats
	deliveries  []time.Duration
	switched    int
	errs        map[string]int
	lastErr     map[string]string
	etcdVersion string
}

func runMany(o manyOpts) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt)
	defer cancel()
	var results []manyResult
	for _, n := range o.sizes {
		r, err := runClusters(ctx, o, n)
		if err != nil {
			return fmt.Errorf("%d clusters: %w", n, err)
		}
		results = append(results, r)
		printMany(o, results)
	}
	return nil
}

func runClusters(ctx context.Context, o manyOpts, n int) (manyResult, error) {
	res := manyResult{n: n, members: 3 * n}
	dir, err := os.MkdirTemp("", "petrel-bench-clusters")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	e, err := startEtcd(ctx, filepath.Join(dir, "etcd"), o.etcdBin)
	if err != nil {
		return res, err
	}
	defer e.stop()
	res.etcdVersion = e.version
	nc := o.clients
	if nc <= 0 || nc > 3*n {
		nc = 3 * n
	}
	clients := make([]*clientv3.Client, nc)
	for i := range clients {
		if clients[i], err = store.OpenClient(ctx, store.Conn{Endpoints: []string{e.endpoint}}, "c0000", slog.New(slog.DiscardHandler)); err != nil {
			return res, fmt.Errorf("connecting to etcd: %w", err)
		}
		defer clients[i].Close()
	}

	rec := newRecorder()
	errs := &errCounter{}
	quiet := slog.New(slog.DiscardHandler)
	params := engine.DefaultParams()
	params.FenceMargin = max(o.ttl/4, 500*time.Millisecond) // as agent.New sets it
	actx, stopAgents := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { stopAgents(); wg.Wait() }()
	layout := [][2]string{{"scl1", "scl"}, {"scl2", "scl"}, {"ord1", "ord"}}
	cls := make([]*simCluster, n)
	t0 := time.Now()
	log.Printf("%d clusters (%d members) on one etcd (%s), %d etcd clients; starting %d clusters a second",
		n, 3*n, e.version, nc, o.ramp)
	for i := range cls {
		c := &simCluster{name: fmt.Sprintf("c%04d", i), primary: "scl"}
		lk := store.KeysFor(c.name).Leader()
		for j, l := range layout {
			st := store.New(clients[(3*i+j)%len(clients)], c.name, o.ttl, quiet)
			st.SetProbe(rec.probe(c.name, l[0], lk))
			c.members = append(c.members, &member{c: c, id: l[0], region: l[1], st: st, params: params, log: quiet, tick: o.tick, errs: errs})
		}
		cls[i] = c
		for _, m := range c.members {
			wg.Add(2)
			go func() { defer wg.Done(); m.st.Run(actx) }()
			go func() { defer wg.Done(); m.run(actx) }()
		}
		// Ramp: i+1 clusters started after (i+1)/ramp seconds.
		if d := time.Until(t0.Add(time.Duration(float64(i+1) / float64(o.ramp) * float64(time.Second)))); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return res, ctx.Err()
			}
		}
	}
	deadline := time.Now().Add(5*time.Minute + time.Duration(n)*100*time.Millisecond)
	for {
		ok := 0
		for _, c := range cls {
			if c.settled() {
				ok++
			}
		}
		if ok == n {
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("only %d of %d clusters settled after %v (errors: %v)", ok, n, time.Since(t0).Round(time.Second), errs.n)
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return res, ctx.Err()
		}
	}
	res.startup = time.Since(t0)
	log.Printf("all %d clusters settled after %v; settling 10s more, then %v idle", n, res.startup.Round(time.Second), o.window)
	time.Sleep(10 * time.Second)
	errs.reset() // start-up's (a clone before the new leader's Postgres runs) are not the windows'

	if res.idle, err = measure(ctx, rec, e, 1, o.window, nil); err != nil {
		return res, err
	}
	log.Printf("idle: etcd %.1f%% CPU, %.0f requests/s; now %d switchovers over %v", res.idle.cpuPct, res.idle.reqs, o.switchovers, o.window)
	var switched atomic.Int32
	res.chg, err = measure(ctx, rec, e, 2, o.window, func(wctx context.Context) {
		k := min(o.switchovers, n)
		if k == 0 {
			return
		}
		every := o.window * 3 / 4 / time.Duration(k)
		for i := 0; i < k; i++ {
			c := cls[i*n/k]
			wg.Add(1)
			go func(delay time.Duration) {
				defer wg.Done()
				select {
				case <-time.After(delay):
				case <-wctx.Done():
					return
				}
				from := c.members[0].st.Snapshot().Leader
				sw := model.Switchover{From: from, RequestedAt: time.Now().UTC()}
				if err := store.RequestSwitchover(wctx, c.members[0].st.Client(), c.name, sw); err != nil {
					errs.add("request-switchover", err)
					return
				}
				for wctx.Err() == nil {
					if l := c.members[0].st.Snapshot().Leader; l != "" && l != from {
						switched.Add(1)
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}(time.Duration(i) * every)
		}
	})
	if err != nil {
		return res, err
	}
	res.switched = int(switched.Load())
	res.deliveries = rec.deliveries()
	errs.mu.Lock()
	res.errs, res.lastErr = errs.n, errs.last
	errs.mu.Unlock()
	return res, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d)/float64(time.Millisecond)) }

func printMany(o manyOpts, rs []manyResult) {
	fmt.Println()
	fmt.Printf("many clusters on one etcd (%s): 3 simulated members each (real engine and store, Postgres simulated),\n", rs[0].etcdVersion)
	clients := "one etcd client (connection) per member"
	if o.clients > 0 {
		clients = fmt.Sprintf("%d etcd clients shared by the members", o.clients)
	}
	fmt.Printf("%s, leader lease TTL %v, agent tick %v; windows of %v: idle, then %d planned switchovers\n",
		clients, o.ttl, o.tick, o.window, o.switchovers)
	fmt.Println("etcd CPU: % of one core (its process, /proc); requests: gRPC messages received/s (etcd's grpc_server_msg_received_total);")
	fmt.Println("renewals: keepalive send to answer, leader and session leases; watch: leader-key write sent to each other member's cache holding it")
	fmt.Println()
	fmt.Printf("%8s %8s | %8s %9s %22s %6s | %8s %9s %12s %24s %8s\n",
		"clusters", "start s", "etcd CPU", "req/s", "renew p50/p99/max ms", "n", "etcd CPU", "req/s", "renew p99 ms", "watch p50/p99/max ms", "n")
	for _, r := range rs {
		all := append(append([]time.Duration(nil), r.idle.leader...), r.idle.session...)
		allc := append(append([]time.Duration(nil), r.chg.leader...), r.chg.session...)
		fmt.Printf("%8d %8.0f | %7.1f%% %9.0f %22s %6d | %7.1f%% %9.0f %12s %24s %8d\n",
			r.n, r.startup.Seconds(),
			r.idle.cpuPct, r.idle.reqs, ms(quantile(all, .5))+" / "+ms(quantile(all, .99))+" / "+ms(quantile(all, 1)), len(all),
			r.chg.cpuPct, r.chg.reqs, ms(quantile(allc, .99)),
			ms(quantile(r.deliveries, .5))+" / "+ms(quantile(r.deliveries, .99))+" / "+ms(quantile(r.deliveries, 1)), len(r.deliveries))
	}
	fmt.Println()
	for _, r := range rs {
		fmt.Printf("%d clusters: leader renewals p99 %s ms (n=%d), session renewals p99 %s ms (n=%d), failed renewals %d idle / %d switching;"+
			" switchovers done %d of %d; bench process CPU %.0f%% idle; etcd methods idle:",
			r.n, ms(quantile(r.idle.leader, .99)), len(r.idle.leader), ms(quantile(r.idle.session, .99)), len(r.idle.session),
			r.idle.failed, r.chg.failed, r.switched, min(o.switchovers, r.n), r.idle.benchCPUPct)
		var ks []string
		for k := range r.idle.byMethod {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		for _, k := range ks {
			fmt.Printf(" %s %.1f", strings.TrimPrefix(k, "etcdserverpb."), r.idle.byMethod[k])
		}
		fmt.Println()
		for i, w := range []windowStats{r.idle, r.chg} {
			if w.failed > 0 {
				fmt.Printf("  last failed renewal: %s\n", w.lastFail)
			}
			fmt.Printf("  %s window: %s\n", []string{"idle", "switching"}[i], describeSlow(w))
		}
		for k, v := range r.errs {
			fmt.Printf("  failed %s: %d (last: %s)\n", k, v, r.lastErr[k])
		}
	}
	fmt.Println("failed actions are counted over both windows")
	fmt.Println("target: 1000 idle clusters, lease renewals p99 < 100 ms")
}

// describeSlow lists the window's seconds holding renewals slower than
// slowRenewal, with this process's worst wake-up delay in that second.
func describeSlow(w windowStats) string {
	by := map[int]int{}
	for _, t := range w.slowAt {
		by[int(t.Sub(w.start)/time.Second)]++
	}
	if len(by) == 0 {
		return fmt.Sprintf("no renewal slower than %v", slowRenewal)
	}
	var secs []int
	for s := range by {
		secs = append(secs, s)
	}
	sort.Ints(secs)
	var parts []string
	for _, s := range secs {
		parts = append(parts, fmt.Sprintf("s%d: %d (bench stall %s ms)", s, by[s], ms(w.hiccup[s])))
	}
	worst := time.Duration(0)
	for _, h := range w.hiccup {
		worst = max(worst, h)
	}
	return fmt.Sprintf("renewals slower than %v or failed, by second sent: %s; bench's worst stall in the window %s ms",
		slowRenewal, strings.Join(parts, ", "), ms(worst))
}

// manyFlags registers the -clusters mode's flags.
func manyFlags() (sizes *string, o *manyOpts) {
	o = &manyOpts{}
	sizes = flag.String("clusters", "", "many-clusters mode: cluster counts to run one after another, e.g. 100,300,1000")
	flag.IntVar(&o.clients, "clients", 0, "-clusters: etcd clients (connections) shared by the members' stores; 0: one per member, as real agents")
	flag.IntVar(&o.ramp, "ramp", 50, "-clusters: clusters started per second")
	flag.IntVar(&o.switchovers, "switchovers", 20, "-clusters: planned switchovers in the second window (leader-key watch delivery)")
	flag.DurationVar(&o.tick, "agent-tick", time.Second, "-clusters: each simulated agent's idle loop period (the real agent's is 200ms; store changes wake it at once)")
	flag.DurationVar(&o.ttl, "ttl", 3*time.Second, "-clusters: leader lease TTL")
	flag.StringVar(&o.etcdBin, "etcd-bin", "", "-clusters: an etcd binary to run (e.g. /usr/bin/etcd); default internal/etcdembed in a child process")
	return sizes, o
}
