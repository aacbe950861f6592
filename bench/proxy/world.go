package main

// The local world's placements: `petrel up`'s layout (scl=2, ord=1, in
// this process through internal/localworld, without edges and apps),
// where cluster.json's database_url is scl1's leader proxy. pgbench goes
// through that URL's proxy with scl1 leading (the proxy's own member) and
// with scl2 leading (another member of its region), beside direct to the
// leader's Postgres, the leader's own proxy, HAProxy over all three
// members (the seed's configuration) and (-copy) the same proxy code
// copying in user space in this process, in interleaved rounds.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/localworld"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/proxy"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// worldBasePort finds a base port whose whole range (localworld's port
// scheme: B+10 .. B+91) is free, below the ephemeral range.
func worldBasePort() (int, error) {
	for b := 21000 + (os.Getpid()%40)*100; b < 32000; b += 100 {
		free := true
		for off := 10; off <= 91 && free; off++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", b+off))
			if err != nil {
				free = false
				continue
			}
			l.Close()
		}
		if free {
			return b, nil
		}
	}
	return 0, errors.New("no free port range for the local world")
}

// roleOf asks a member's API for its role.
// apiClient trusts the local world's cluster CA (its ca.crt): members'
// APIs are HTTPS with node certificates of that CA.
var (
	apiClient = http.DefaultClient
	worldCA   []byte // ca.crt's PEM
)

func trustWorldCA(dir string) error {
	pem, err := os.ReadFile(filepath.Join(dir, localworld.CAFileName))
	if err != nil {
		return fmt.Errorf("reading the local world's CA: %w", err)
	}
	worldCA = pem
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return errors.New("the local world's ca.crt holds no certificate")
	}
	apiClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	return nil
}

func roleOf(ctx context.Context, api string) string {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(cctx, http.MethodGet, api+"/role", nil)
	if err != nil {
		return ""
	}
	resp, err := apiClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64))
	return strings.TrimSpace(string(b))
}

// worldTarget is one pgbench target of a placement.
type worldTarget struct{ name, dsn string }

type placementResult struct {
	leader  string
	targets []worldTarget
	res     map[string][]result
}

func runWorld(ctx context.Context, root, bin, dir string) ([]placementResult, error) {
	bp, err := worldBasePort()
	if err != nil {
		return nil, err
	}
	wdir := filepath.Join(dir, "world")
	ready := make(chan *localworld.ClusterFile, 1)
	wctx, stop := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- localworld.Run(wctx, localworld.Options{
			Dir: wdir, Binary: bin, BasePort: bp, NoEdges: true, Stdout: io.Discard,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
			OnReady: func(cf *localworld.ClusterFile, ok bool) {
				if ok {
					ready <- cf
				} else {
					ready <- nil
				}
			},
		})
	}()
	defer func() {
		stop()
		select {
		case <-errc:
		case <-time.After(90 * time.Second):
			log.Printf("the local world did not stop within 90s")
		}
	}()
	var cf *localworld.ClusterFile
	select {
	case cf = <-ready:
	case err := <-errc:
		return nil, fmt.Errorf("petrel up: %w", err)
	case <-time.After(3 * time.Minute):
		return nil, errors.New("petrel up: no primary within 3 minutes")
	}
	if cf == nil || cf.DatabaseURL == "" {
		return nil, errors.New("petrel up: no primary, or no database_url in cluster.json")
	}
	if err := trustWorldCA(wdir); err != nil {
		return nil, err
	}
	dbu, err := url.Parse(cf.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("database_url: %w", err)
	}
	su, err := url.Parse(cf.SuperuserDSN)
	if err != nil {
		return nil, fmt.Errorf("superuser_dsn: %w", err)
	}
	pw, _ := su.User.Password()
	// pgbench's tables belong to the superuser: it runs through the same
	// addresses as the superuser (the role does not change the path).
	dsn := func(hostport string) string {
		return fmt.Sprintf("postgres://postgres:%s@%s/postgres?sslmode=disable&connect_timeout=10", url.QueryEscape(pw), hostport)
	}
	nodes := map[string]model.Member{}
	var members []model.Member
	for _, n := range cf.Nodes {
		nodes[n.ID] = n
		members = append(members, n)
	}
	viaURL := ""
	for _, n := range cf.Nodes {
		if n.ProxyAddr == dbu.Host {
			viaURL = n.ID
		}
	}
	if viaURL == "" {
		return nil, fmt.Errorf("database_url's host %s is no member's proxy", dbu.Host)
	}
	etcd, err := clientv3.New(clientv3.Config{Endpoints: cf.Etcd, DialTimeout: 3 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd: %w", err)
	}
	defer etcd.Close()

	hport, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	stopHAProxy, err := startHAProxyOver(dir, hport, members)
	if err != nil {
		return nil, err
	}
	defer stopHAProxy()
	haproxy := fmt.Sprintf("127.0.0.1:%d", hport)

	// petrel's proxy copying in user space, in this process, in scl1's
	// region: what the kernel pipe of the agents' proxies is up against.
	var copyAddr string
	if *copyToo {
		cln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ac, err := api.NewClient(worldCA, cf.Cluster, api.ClientOptions{})
		if err != nil {
			return nil, fmt.Errorf("the copy proxy's API client: %w", err)
		}
		pc := proxy.New(proxy.Config{Cluster: cf.Cluster, Region: nodes[viaURL].Region, Pipe: proxy.PipeCopy}, proxy.Options{Etcd: etcd, API: ac})
		pctx, pstop := context.WithCancel(ctx)
		pdone := make(chan error, 1)
		go func() { pdone <- pc.Run(pctx, cln, nil) }()
		defer func() { pstop(); <-pdone }()
		copyAddr = cln.Addr().String()
	}

	leaderNow := func() string {
		for _, n := range cf.Nodes {
			if roleOf(ctx, n.APIURL) == model.RolePrimary {
				return n.ID
			}
		}
		return ""
	}
	// Places the leader on id and waits until every target reaches it.
	place := func(id string) error {
		deadline := time.Now().Add(2 * time.Minute)
		for l := leaderNow(); l != id; l = leaderNow() {
			if time.Now().After(deadline) {
				return fmt.Errorf("no switchover to %s within 2 minutes (leader %q)", id, l)
			}
			if l != "" {
				err := store.RequestSwitchover(ctx, etcd, cf.Cluster, model.Switchover{From: l, To: id, RequestedAt: time.Now().UTC()})
				if err != nil {
					log.Printf("requesting a switchover to %s: %v", id, err)
				}
			}
			time.Sleep(2 * time.Second)
		}
		for _, hp := range []string{nodes[id].PostgresAddr, dbu.Host, nodes[id].ProxyAddr, haproxy, copyAddr} {
			if hp == "" {
				continue
			}
			if err := waitWritable(ctx, dsn(hp)); err != nil {
				return fmt.Errorf("%s with %s leading: %w", hp, id, err)
			}
		}
		return nil
	}
	first := cf.Nodes[0].ID // scl1, database_url's member
	second := ""
	for _, n := range cf.Nodes {
		if n.ID != viaURL && n.Region == nodes[viaURL].Region {
			second = n.ID
			break
		}
	}
	if first != viaURL || second == "" {
		return nil, fmt.Errorf("unexpected layout: database_url through %s, members %v", viaURL, cf.Nodes)
	}
	if err := place(first); err != nil {
		return nil, err
	}
	fmt.Printf("\nlocal world (petrel up, scl=2 ord=1, no edges): database_url is %s's proxy (%s)\n", viaURL, dbu.Host)
	fmt.Printf("pgbench -i -s %d\n", *scale)
	if err := pgbenchInit(ctx, dsn(nodes[first].PostgresAddr)); err != nil {
		return nil, err
	}
	var out []placementResult
	for _, leader := range []string{first, second} {
		if err := place(leader); err != nil {
			return nil, err
		}
		pr := placementResult{leader: leader, res: map[string][]result{}}
		pr.targets = []worldTarget{
			{"direct", dsn(nodes[leader].PostgresAddr)},
			{"haproxy", dsn(haproxy)},
			{"database_url", dsn(dbu.Host)},
		}
		if leader != viaURL {
			pr.targets = append(pr.targets, worldTarget{"leader-proxy", dsn(nodes[leader].ProxyAddr)})
		}
		if copyAddr != "" {
			pr.targets = append(pr.targets, worldTarget{"petrel-copy", dsn(copyAddr)})
		}
		for r := 0; r < *rounds; r++ {
			for i := range pr.targets {
				t := pr.targets[(i+r)%len(pr.targets)]
				got, err := pgbench(ctx, t.dsn, nil)
				if err != nil {
					return nil, fmt.Errorf("leader %s, %s: %w", leader, t.name, err)
				}
				fmt.Printf("  leader %-5s round %d %-13s %9.0f tps  %6.3f ms\n", leader, r+1, t.name, got.tps, got.latMS)
				pr.res[t.name] = append(pr.res[t.name], got)
			}
		}
		if *perfOn {
			for _, t := range pr.targets {
				if t.name == "database_url" || t.name == "haproxy" {
					if err := perfRun(ctx, dir, leader, t); err != nil {
						return nil, err
					}
				}
			}
		}
		out = append(out, pr)
	}
	return out, nil
}

// perfRun profiles the whole machine (perf record -a) during one more
// pgbench run through t and prints where the CPU went: by command, and
// the busiest symbols (the kernel's included: the kernel pipe's work is
// done there, in softirqs and kworkers).
func perfRun(ctx context.Context, dir, leader string, t worldTarget) error {
	data := filepath.Join(dir, fmt.Sprintf("perf-%s-%s.data", leader, t.name))
	rec := exec.CommandContext(ctx, "perf", "record", "-a", "-g", "-o", data, "--", "sleep", strconv.Itoa(*seconds))
	var recOut bytes.Buffer
	rec.Stdout, rec.Stderr = &recOut, &recOut
	if err := rec.Start(); err != nil {
		return fmt.Errorf("perf record: %w", err)
	}
	got, err := pgbench(ctx, t.dsn, nil)
	if werr := rec.Wait(); werr != nil {
		return fmt.Errorf("perf record: %w\n%s", werr, recOut.String())
	}
	if err != nil {
		return err
	}
	fmt.Printf("\nperf, leader %s, %s: %.0f tps; CPU by command, then by symbol (whole machine, %d s)\n", leader, t.name, got.tps, *seconds)
	for _, sortKey := range []string{"comm", "sym"} {
		out, err := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--no-children", "--sort", sortKey, "-g", "none", "--percent-limit", "1.5").Output()
		if err != nil {
			return fmt.Errorf("perf report: %w", err)
		}
		for _, l := range strings.Split(string(out), "\n") {
			if l = strings.TrimRight(l, " "); l != "" && !strings.HasPrefix(l, "#") {
				fmt.Println("  " + strings.TrimSpace(l))
			}
		}
	}
	return os.Remove(data)
}

func printPlacements(prs []placementResult) {
	fmt.Printf("\nlocal world, pgbench -S -c %d -j %d -T %d, median of %d interleaved rounds; database_url = scl1's proxy\n", *clients, *threads, *seconds, *rounds)
	fmt.Printf("%-7s %-13s %10s %9s %10s %11s\n", "leader", "target", "tps", "lat ms", "vs direct", "vs haproxy")
	for _, pr := range prs {
		d, h := median(pr.res["direct"]), median(pr.res["haproxy"])
		for _, t := range pr.targets {
			r := median(pr.res[t.name])
			fmt.Printf("%-7s %-13s %10.0f %9.3f %10.2f %11.2f\n", pr.leader, t.name, r.tps, r.latMS, r.tps/d.tps, r.tps/h.tps)
		}
	}
	// The machine's speed drifts between rounds by more than the gap
	// measured (direct alone has varied 2x within one run here), so the
	// verdict pairs each round's database_url with the same round's
	// HAProxy: the median of those ratios, with their range.
	fmt.Println("\ndatabase_url / haproxy, paired by round (median, min..max):")
	for _, pr := range prs {
		var rs []float64
		for i := range min(len(pr.res["database_url"]), len(pr.res["haproxy"])) {
			if h := pr.res["haproxy"][i].tps; h > 0 {
				rs = append(rs, pr.res["database_url"][i].tps/h)
			}
		}
		if len(rs) == 0 {
			continue
		}
		sort.Float64s(rs)
		fmt.Printf("  leader %-5s %.2f (%.2f..%.2f over %d rounds)\n", pr.leader, rs[len(rs)/2], rs[0], rs[len(rs)-1], len(rs))
	}
	fmt.Println("target: database_url at least 1.0x HAProxy whichever member leads")
}

func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitWritable waits until dsn reaches a writable server.
func waitWritable(ctx context.Context, dsn string) error {
	deadline := time.Now().Add(time.Minute)
	for {
		err := func() error {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			conn, err := pgxConnect(cctx, dsn)
			if err != nil {
				return err
			}
			defer conn.Close(ctx)
			var ro bool
			if err := conn.QueryRow(cctx, "SELECT pg_is_in_recovery()").Scan(&ro); err != nil {
				return err
			}
			if ro {
				return errors.New("reached a replica")
			}
			return nil
		}()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no writable server: %w", err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
