// Command proxy compares pgbench through petrel's leader proxy with
// pgbench direct to Postgres and through HAProxy, in one run on one
// Postgres (a one-node petrel test cluster):
//
//   - direct: pgbench to the member's own Postgres port;
//   - petrel: pgbench to the node agent's own leader proxy (the product
//     path; its data path, copy by default, is printed from the agent's
//     petrel_proxy_pipe_info metric);
//   - petrel-copy: the same proxy code in this process with Pipe "copy"
//     (bytes through user space), for comparison (-copy=false skips it);
//   - haproxy: pgbench to HAProxy in TCP mode, configured as the seed
//     does: one server with an HTTP check GET /role expecting "primary"
//     on the node's API port, inter 2s, on-marked-down shutdown-sessions.
//
// Two modes: select-only with persistent connections (pgbench -S) and with
// a new connection per transaction (-S -C), both -c 4 -j 2, in interleaved
// rounds (the order rotates each round). It prints TPS and average latency
// per target (median over rounds), as ratios to direct and to HAProxy, and
// then where the proxy's CPU goes: a CPU profile of this process during an
// extra persistent run through petrel's proxy.
//
// Then the placements (world.go): in the local world `petrel up` runs,
// through cluster.json's database_url (scl1's proxy) with scl1 leading and
// with scl2 leading, beside direct and HAProxy (-world=false skips it,
// -single=false skips the one-node part).
//
// Usage: go run ./bench/proxy [-rounds 5] [-T 10] [-c 4] [-j 2] [-mode persistent|connect] [-copy=false] [-world=false] [-single=false]
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/proxy"
	"github.com/petrel-db/petrel/internal/testcluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

var (
	rounds  = flag.Int("rounds", 5, "interleaved rounds per mode")
	seconds = flag.Int("T", 10, "seconds per pgbench run")
	clients = flag.Int("c", 4, "pgbench clients")
	threads = flag.Int("j", 2, "pgbench threads")
	scale   = flag.Int("scale", 5, "pgbench scale")
	keep    = flag.Bool("keep", false, "keep the work directory")
	procs   = flag.Int("procs", 0, "GOMAXPROCS for this process, where the proxy runs (0: petrel's default, proxy.DefaultProcs)")
	only    = flag.String("mode", "", "run one mode only: persistent or connect (default: both)")
	copyToo = flag.Bool("copy", true, "also measure petrel's proxy copying in user space (Pipe: copy, in this process), as petrel-copy")
	world   = flag.Bool("world", true, "measure the local world's placements: database_url (scl1's proxy) with scl1 and with scl2 leading")
	perfOn  = flag.Bool("perf", false, "local world: also profile the whole machine (perf record -a) during one more run through database_url and through HAProxy per placement")
	single  = flag.Bool("single", true, "measure the one-node comparison (the agent's proxy, copy, HAProxy) and profile the proxy")
)

type result struct{ tps, latMS float64 }

func main() {
	flag.Parse()
	log.SetFlags(0)
	if err := run(); err != nil {
		log.Fatalf("bench/proxy: %v", err)
	}
}

func run() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	for _, tool := range []string{"pgbench", "haproxy"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (scripts/install-deps.sh installs it): %w", tool, err)
		}
	}
	root, err := os.Getwd()
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return errors.New("run from the repository root: go run ./bench/proxy")
	}
	dir, err := os.MkdirTemp("", "petrel-bench-proxy")
	if err != nil {
		return err
	}
	if !*keep {
		defer os.RemoveAll(dir)
	}
	bin, err := testcluster.Build(ctx, root, dir)
	if err != nil {
		return err
	}
	if *single {
		if err := runSingle(ctx, bin, dir); err != nil {
			return err
		}
	}
	if *world {
		prs, err := runWorld(ctx, root, bin, dir)
		if err != nil {
			return fmt.Errorf("local world: %w", err)
		}
		printPlacements(prs)
	}
	return nil
}

// runSingle is the one-node comparison: direct, the agent's proxy, the
// same proxy copying in user space, HAProxy; then a CPU profile.
func runSingle(ctx context.Context, bin, dir string) error {
	c, err := testcluster.Start(ctx, testcluster.Options{Dir: filepath.Join(dir, "cluster"), Binary: bin})
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.AddNode("scl1", "scl"); err != nil {
		return err
	}
	wctx, wcancel := context.WithTimeout(ctx, 3*time.Minute)
	leader, err := c.WaitLeader(wctx, "")
	wcancel()
	if err != nil {
		return err
	}
	n := c.Node(leader)

	// petrel's proxy, in this process.
	etcd, err := clientv3.New(clientv3.Config{Endpoints: c.EtcdEndpoints(), DialTimeout: 3 * time.Second})
	if err != nil {
		return fmt.Errorf("connecting to etcd: %w", err)
	}
	defer etcd.Close()
	pln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	// The same default as petrel's own processes (see proxy.DefaultProcs).
	if *procs <= 0 {
		*procs = proxy.DefaultProcs()
	}
	runtime.GOMAXPROCS(*procs)
	p := proxy.New(proxy.Config{Cluster: c.Opts.Name, Region: "scl"}, proxy.Options{Etcd: etcd, API: c.API})
	pctx, pstop := context.WithCancel(ctx)
	pdone := make(chan error, 1)
	go func() { pdone <- p.Run(pctx, pln, nil) }()
	defer func() { pstop(); <-pdone }()
	var bln net.Listener
	if *copyToo {
		if bln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
		pb := proxy.New(proxy.Config{Cluster: c.Opts.Name, Region: "scl", Pipe: proxy.PipeCopy}, proxy.Options{Etcd: etcd, API: c.API})
		bdone := make(chan error, 1)
		go func() { bdone <- pb.Run(pctx, bln, nil) }()
		defer func() { pstop(); <-bdone }()
	}

	// HAProxy, as a child process.
	hport, err := testcluster.FreePort()
	if err != nil {
		return err
	}
	stopHAProxy, err := startHAProxyOver(dir, hport, []model.Member{{ID: "scl1",
		PostgresAddr: fmt.Sprintf("127.0.0.1:%d", n.PGPort), APIURL: n.APIURL()}})
	if err != nil {
		return err
	}
	defer stopHAProxy()

	dsn := func(port int) string {
		return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=10", c.Secrets.Superuser, port)
	}
	targets := []struct{ name, dsn string }{
		{"direct", dsn(n.PGPort)},
		// The product path: the proxy inside the node agent's process.
		{"petrel", dsn(n.ProxyPort)},
		{"haproxy", dsn(hport)},
	}
	if bln != nil {
		targets = append(targets, struct{ name, dsn string }{"petrel-copy", dsn(bln.Addr().(*net.TCPAddr).Port)})
	}
	fmt.Printf("petrel: the agent's proxy, pipe=%s; petrel-copy: in this process, pipe=copy; GOMAXPROCS=%d here\n",
		agentPipe(ctx, c, n), runtime.GOMAXPROCS(0))
	for _, t := range targets {
		if err := waitConnect(ctx, t.dsn); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	fmt.Printf("pgbench -i -s %d\n", *scale)
	if err := pgbenchInit(ctx, targets[0].dsn); err != nil {
		return err
	}

	modes := []struct {
		name  string
		extra []string
	}{
		{"persistent", nil},
		{"connect (-C)", []string{"-C"}},
	}
	if *only != "" {
		kept := modes[:0]
		for _, m := range modes {
			if strings.HasPrefix(m.name, *only) {
				kept = append(kept, m)
			}
		}
		if len(kept) == 0 {
			return fmt.Errorf("-mode %q: want persistent or connect", *only)
		}
		modes = kept
	}
	res := map[string]map[string][]result{}
	for _, m := range modes {
		res[m.name] = map[string][]result{}
		for r := 0; r < *rounds; r++ {
			for i := range targets {
				t := targets[(i+r)%len(targets)]
				got, err := pgbench(ctx, t.dsn, m.extra)
				if err != nil {
					return fmt.Errorf("%s %s: %w", m.name, t.name, err)
				}
				fmt.Printf("  %-13s round %d %-11s %9.0f tps  %6.3f ms\n", m.name, r+1, t.name, got.tps, got.latMS)
				res[m.name][t.name] = append(res[m.name][t.name], got)
			}
		}
	}

	fmt.Printf("\npgbench -S -c %d -j %d -T %d, median of %d interleaved rounds (PostgreSQL on 127.0.0.1)\n", *clients, *threads, *seconds, *rounds)
	fmt.Printf("%-13s %-11s %10s %9s %10s %11s\n", "mode", "target", "tps", "lat ms", "vs direct", "vs haproxy")
	for _, m := range modes {
		d := median(res[m.name]["direct"])
		h := median(res[m.name]["haproxy"])
		for _, t := range targets {
			r := median(res[m.name][t.name])
			fmt.Printf("%-13s %-11s %10.0f %9.3f %10.2f %11.2f\n", m.name, t.name, r.tps, r.latMS, r.tps/d.tps, r.tps/h.tps)
		}
	}

	// Where the proxy's CPU goes: one more persistent run through it,
	// profiled.
	prof := filepath.Join(dir, "proxy.cpu.pprof")
	f, err := os.Create(prof)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	got, err := pgbench(ctx, dsn(pln.Addr().(*net.TCPAddr).Port), nil)
	pprof.StopCPUProfile()
	f.Close()
	if err != nil {
		return fmt.Errorf("profiled run: %w", err)
	}
	fmt.Printf("\nCPU profile of the same proxy code run in this process (with GOMAXPROCS=%d) during a persistent run through it (%.0f tps):\n", runtime.GOMAXPROCS(0), got.tps)
	out, err := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=25", prof).CombinedOutput()
	if err != nil {
		return fmt.Errorf("go tool pprof: %w\n%s", err, out)
	}
	fmt.Print(trimPprof(string(out)))
	if *keep {
		fmt.Printf("profile kept: %s\n", prof)
	}
	return nil
}

// agentPipe reads the agent's proxy data path from its metrics.
func agentPipe(ctx context.Context, c *testcluster.Cluster, n *testcluster.Node) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.APIURL()+"/metrics", nil)
	if err != nil {
		return "unknown"
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if m := pipeRe.FindSubmatch(body); m != nil {
		return string(m[1])
	}
	return "unknown"
}

var pipeRe = regexp.MustCompile(`petrel_proxy_pipe_info\{mode="([a-z]+)"\} 1`)

var (
	tpsRe = regexp.MustCompile(`tps = ([0-9.]+) \((?:without initial connection time|including reconnection times)\)`)
	latRe = regexp.MustCompile(`latency average = ([0-9.]+) ms`)
)

func pgbenchInit(ctx context.Context, dsn string) error {
	if out, err := exec.CommandContext(ctx, "pgbench", "-i", "-q", "-s", strconv.Itoa(*scale), dsn).CombinedOutput(); err != nil {
		return fmt.Errorf("pgbench -i: %w\n%s", err, out)
	}
	return nil
}

func pgxConnect(ctx context.Context, dsn string) (*pgx.Conn, error) { return pgx.Connect(ctx, dsn) }

func pgbench(ctx context.Context, dsn string, extra []string) (result, error) {
	args := []string{"-n", "-S", "-c", strconv.Itoa(*clients), "-j", strconv.Itoa(*threads), "-T", strconv.Itoa(*seconds)}
	args = append(args, extra...)
	args = append(args, dsn)
	cctx, cancel := context.WithTimeout(ctx, time.Duration(*seconds)*time.Second+time.Minute)
	defer cancel()
	out, err := exec.CommandContext(cctx, "pgbench", args...).CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	tm, lm := tpsRe.FindSubmatch(out), latRe.FindSubmatch(out)
	if tm == nil || lm == nil {
		return result{}, fmt.Errorf("unexpected pgbench output:\n%s", out)
	}
	tps, _ := strconv.ParseFloat(string(tm[1]), 64)
	lat, _ := strconv.ParseFloat(string(lm[1]), 64)
	return result{tps: tps, latMS: lat}, nil
}

func median(rs []result) result {
	if len(rs) == 0 {
		return result{}
	}
	s := append([]result(nil), rs...)
	sort.Slice(s, func(i, j int) bool { return s[i].tps < s[j].tps })
	return s[len(s)/2]
}

func waitConnect(ctx context.Context, dsn string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		conn, err := pgx.Connect(cctx, dsn)
		cancel()
		if err == nil {
			return conn.Close(ctx)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("could not connect: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startHAProxyOver runs HAProxy configured like the seed's: TCP mode,
// each member's Postgres checked with GET /role on its API (over TLS, as
// Patroni's REST API with TLS is checked) expecting "primary".
func startHAProxyOver(dir string, port int, members []model.Member) (stop func(), err error) {
	var servers strings.Builder
	for _, m := range members {
		u, err := url.Parse(m.APIURL)
		if err != nil {
			return nil, fmt.Errorf("member %s API URL: %w", m.ID, err)
		}
		fmt.Fprintf(&servers, "    server %s %s maxconn 1000 check port %s check-ssl verify none\n", m.ID, m.PostgresAddr, u.Port())
	}
	cfg := fmt.Sprintf(`global
    maxconn 4096

defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h

listen primary
    bind 127.0.0.1:%d
    option httpchk GET /role
    http-check expect string primary
    default-server inter 2s fall 3 rise 2 on-marked-down shutdown-sessions
%s`, port, servers.String())
	path := filepath.Join(dir, fmt.Sprintf("haproxy-%d.cfg", port))
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	var logb bytes.Buffer
	cmd := exec.Command("haproxy", "-db", "-f", path)
	cmd.Stdout, cmd.Stderr = &logb, &logb
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting haproxy: %w", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	return func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
		}
	}, nil
}

// trimPprof drops pprof's header lines about the file and build.
func trimPprof(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Build ID:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}
