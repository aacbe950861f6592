package localworld

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pki"
	"github.com/petrel-db/petrel/internal/statusview"
	"github.com/petrel-db/petrel/internal/store"
)

// The test binary doubles as a fake `petrel node`: Run starts it with
// PETREL_FAKE_NODE=1 in the environment.
func TestMain(m *testing.M) {
	if os.Getenv("PETREL_FAKE_NODE") == "1" && len(os.Args) > 1 {
		if os.Args[1] == "node" {
			os.Exit(fakeNode(os.Args[2:]))
		}
		// Edges and apps: wait to be stopped. (Never fall through to
		// m.Run: a child would run the whole suite again.)
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func fakeNode(args []string) int {
	fs := flag.NewFlagSet("node", flag.ContinueOnError)
	cluster := fs.String("cluster", "", "")
	id := fs.String("id", "", "")
	region := fs.String("region", "", "")
	primaryRegion := fs.String("primary-region", "", "")
	dataDir := fs.String("data-dir", "", "")
	host := fs.String("listen-host", "", "")
	fs.Bool("loopback-plaintext", false, "")
	pgPort := fs.Int("pg-port", 0, "")
	apiPort := fs.Int("api-port", 0, "")
	fs.Int("proxy-port", 0, "")
	etcd := fs.String("etcd", "", "")
	secrets := fs.String("secrets-file", "", "")
	dialMap := fs.String("dial-map", "", "")
	caFP := fs.String("ca-fingerprint", "", "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fmt.Println("fake node etcd", *etcd, "dial-map", *dialMap)
	sec, err := config.LoadSecrets(*secrets)
	if err != nil {
		fmt.Println("secrets:", err)
		return 3
	}
	// scl2 crashes once, to exercise the restart.
	marker := filepath.Join(*dataDir, "crashed-once")
	if *id == "scl2" {
		if _, err := os.Stat(marker); err != nil {
			os.WriteFile(marker, nil, 0o600)
			time.Sleep(300 * time.Millisecond)
			fmt.Println("fake crash")
			return 1
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(*etcd, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		fmt.Println("etcd:", err)
		return 4
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	// Like a real node: the pinned CA from the store, a node certificate
	// from it for the API.
	tlsCfg, err := fakeNodeTLS(ctx, cli, *cluster, *id, *caFP, sec.Superuser)
	if err != nil {
		cancel()
		fmt.Println("tls:", err)
		return 5
	}
	lease, err := cli.Grant(ctx, 5)
	if err == nil {
		m := model.Member{ID: *id, Region: *region, APIURL: fmt.Sprintf("https://%s:%d", *host, *apiPort), PostgresAddr: fmt.Sprintf("%s:%d", *host, *pgPort)}
		b, _ := json.Marshal(m)
		_, err = cli.Put(ctx, "/petrel/"+*cluster+"/members/"+*id, string(b), clientv3.WithLease(lease.ID))
	}
	cancel()
	if err != nil {
		fmt.Println("etcd:", err)
		return 4
	}
	ka, _ := cli.KeepAlive(context.Background(), lease.ID)
	go func() {
		for range ka {
		}
	}()
	role := model.RoleReplica
	if *id == *primaryRegion+"1" {
		role = model.RolePrimary
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(model.Status{ID: *id, Region: *region, Role: role, State: "running", Timeline: 1, Streaming: role == model.RoleReplica})
	})
	srv := &http.Server{Addr: fmt.Sprintf("%s:%d", *host, *apiPort), Handler: mux, TLSConfig: tlsCfg}
	go srv.ListenAndServeTLS("", "")
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	fmt.Println("fake node stopping")
	srv.Close()
	return 0
}

func fakeNodeTLS(ctx context.Context, cli *clientv3.Client, cluster, id, pin, suPW string) (*tls.Config, error) {
	caPEM, err := api.PinnedCA(ctx, cli, cluster, pin)
	if err != nil {
		return nil, err
	}
	resp, err := cli.Get(ctx, "/petrel/"+cluster+"/ca")
	if err != nil || len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("reading the CA: %v", err)
	}
	st, err := pki.Decode(resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	ca, err := st.Unseal(suPW)
	if err != nil {
		return nil, err
	}
	if !pki.SameCert(ca.CertPEM, caPEM) {
		return nil, fmt.Errorf("CA changed")
	}
	certPEM, keyPEM, err := ca.IssueNode(cluster, id, "127.0.0.1")
	if err != nil {
		return nil, err
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{kp}}, nil
}

// apiClient reads the members' APIs of the world in cf (its pinned CA).
func apiClient(t *testing.T, cf *ClusterFile) *api.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: cf.Etcd, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	caPEM, err := api.PinnedCA(context.Background(), cli, cf.Cluster, cf.CAFingerprint)
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(caPEM, cf.Cluster, api.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// basePort stays below the ephemeral range (32768+) and the ports
// testcluster.FreePort hands out (20000-32767).
func basePort() int { return 10000 + (os.Getpid()%90)*100 }

func TestParseRegions(t *testing.T) {
	rs, err := ParseRegions("scl=2, ord=1,fra")
	if err != nil {
		t.Fatal(err)
	}
	want := []RegionCount{{"scl", 2}, {"ord", 1}, {"fra", 1}}
	if fmt.Sprint(rs) != fmt.Sprint(want) {
		t.Fatalf("got %v want %v", rs, want)
	}
	for _, bad := range []string{"", "scl=0", "scl=x", "SCL=1", "scl=1,scl=2", "a/b=1"} {
		if _, err := ParseRegions(bad); err == nil {
			t.Errorf("ParseRegions(%q): no error", bad)
		}
	}
}

func TestRedactDSN(t *testing.T) {
	got := RedactDSN("postgres://postgres:s3cr-t_@127.0.0.1:1,127.0.0.1:2/postgres?x=y")
	if got != "postgres://postgres:***@127.0.0.1:1,127.0.0.1:2/postgres?x=y" {
		t.Fatal(got)
	}
}

func TestPIDFileRefusesLiveProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skip("no sleep:", err)
	}
	waited := make(chan struct{})
	go func() { cmd.Wait(); close(waited) }()
	defer cmd.Process.Kill()
	os.WriteFile(filepath.Join(dir, PIDFileName), []byte(fmt.Sprint(cmd.Process.Pid)), 0o600)
	if _, err := claimPIDFile(dir); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Fatalf("claim with live pid: %v", err)
	}
	// Down stops it (SIGTERM) and waits.
	if err := Down(dir); err != nil {
		t.Fatalf("Down: %v", err)
	}
	<-waited
	if err := Down(dir); err == nil {
		t.Fatal("second Down: want ErrNotRunning")
	}
	if _, err := claimPIDFile(dir); err != nil {
		t.Fatalf("claim with dead pid: %v", err)
	}
}

func runWorld(t *testing.T, dir string, opts Options) (cf *ClusterFile, out *bytes.Buffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *ClusterFile, 1)
	errc := make(chan error, 1)
	out = &bytes.Buffer{}
	opts.Dir = dir
	opts.Stdout = out
	opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	opts.OnReady = func(cf *ClusterFile, ok bool) {
		if !ok {
			t.Errorf("no primary")
		}
		ready <- cf
	}
	go func() { errc <- Run(ctx, opts) }()
	select {
	case cf = <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("Run returned early: %v", err)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("not ready in 60s")
	}
	return cf, out, func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("Run did not return after cancel")
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestRunFakeWorld(t *testing.T) {
	t.Setenv("PETREL_FAKE_NODE", "1")
	t.Setenv("SU_PASSWORD", "from-env-must-not-leak-to-children")
	dir := t.TempDir()
	bp := basePort()
	cf, out, stop := runWorld(t, dir, Options{BasePort: bp})

	if cf.Cluster != "petrel" || cf.PrimaryRegion != "scl" || len(cf.Nodes) != 3 {
		t.Fatalf("cluster file: %+v", cf)
	}
	if cf.Nodes[2].ID != "ord1" || cf.Nodes[2].PostgresAddr != fmt.Sprintf("127.0.0.1:%d", bp+12) {
		t.Fatalf("node layout: %+v", cf.Nodes)
	}
	for _, f := range []string{SecretsFileName, ClusterFileName} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, st.Mode(), err)
		}
	}
	loaded, err := LoadClusterFile(dir)
	if err != nil || loaded.SuperuserDSN != cf.SuperuserDSN {
		t.Fatalf("LoadClusterFile: %v", err)
	}
	if pid, err := readPID(filepath.Join(dir, PIDFileName)); err != nil || pid != os.Getpid() {
		t.Fatalf("up.pid: %d %v", pid, err)
	}
	s := out.String()
	if !strings.Contains(s, "ROLE") || !strings.Contains(s, "primary") || !strings.Contains(s, "postgres://postgres:***@") {
		t.Fatalf("output:\n%s", s)
	}
	if strings.Contains(s, strings.Split(strings.Split(cf.SuperuserDSN, ":")[2], "@")[0]) {
		t.Fatal("password printed")
	}
	t.Logf("output:\n%s", s)

	// scl2 crashed once and must have been restarted.
	deadline := time.Now().Add(20 * time.Second)
	for {
		sts := statusview.Collect(context.Background(), apiClient(t, cf), statusview.TargetsFromMembers(cf.Nodes))
		if sts[1].Role == model.RoleReplica {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("scl2 not back: %+v", sts[1])
		}
		time.Sleep(200 * time.Millisecond)
	}
	log2, _ := os.ReadFile(filepath.Join(dir, "nodes", "scl2", "agent.log"))
	if n := strings.Count(string(log2), "=== petrel up: starting scl2"); n < 2 {
		t.Fatalf("scl2 started %d times:\n%s", n, log2)
	}

	ms, err := membersFromEtcd(context.Background(), cf)
	if err != nil || len(ms) != 3 || ms[0].ID != "ord1" {
		t.Fatalf("MembersFromEtcd: %v %+v", err, ms)
	}

	stop()
	if _, err := os.Stat(filepath.Join(dir, PIDFileName)); !os.IsNotExist(err) {
		t.Fatalf("up.pid left behind: %v", err)
	}
	log1, _ := os.ReadFile(filepath.Join(dir, "nodes", "scl1", "agent.log"))
	if !strings.Contains(string(log1), "fake node stopping") {
		t.Fatalf("scl1 not stopped by SIGTERM:\n%s", log1)
	}

	// Resume: different regions are ignored, same nodes and passwords.
	cf2, _, stop2 := runWorld(t, dir, Options{BasePort: bp, Regions: []RegionCount{{"fra", 1}}})
	defer stop2()
	if cf2.SuperuserDSN != cf.SuperuserDSN || len(cf2.Nodes) != 3 {
		t.Fatalf("resume changed the world: %+v", cf2)
	}
}

func TestScaleRemoveFakeWorld(t *testing.T) {
	t.Setenv("PETREL_FAKE_NODE", "1")
	dir := t.TempDir()
	bp := freeBase(t)
	cf, out, stop := runWorld(t, dir, Options{BasePort: bp, Regions: []RegionCount{{"scl", 2}, {"syd", 1}}, Latency: "scl-syd=20ms"})
	defer stop()
	if !strings.Contains(out.String(), "REGION") {
		t.Fatalf("no region table:\n%s", out)
	}
	// Every node dials etcd through its own link, not directly.
	log1, _ := os.ReadFile(filepath.Join(dir, "nodes", "syd1", "agent.log"))
	if strings.Contains(string(log1), cf.Etcd[0]+" ") || !strings.Contains(string(log1), "fake node etcd http://127.0.0.1:") {
		t.Fatalf("syd1 dials etcd directly:\n%s", log1)
	}
	var dm map[string]string
	b, err := os.ReadFile(filepath.Join(dir, "nodes", "syd1", DialMapName))
	if err != nil || json.Unmarshal(b, &dm) != nil || dm[cf.Nodes[0].PostgresAddr] == "" {
		t.Fatalf("syd1 dial map: %s %v", b, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids, err := Scale(ctx, dir, "atl", 2)
	if err != nil || len(ids) != 2 || ids[0] != "atl1" || ids[1] != "atl2" {
		t.Fatalf("scale: %v %v", ids, err)
	}
	if err := WaitMembers(ctx, dir, "atl1", "atl2"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(filepath.Join(dir, "nodes", "scl1", DialMapName))
	cf2, _ := LoadClusterFile(dir)
	if len(cf2.Nodes) != 5 || !strings.Contains(string(b), cf2.Nodes[3].PostgresAddr) {
		t.Fatalf("after scale: nodes %+v; scl1's dial map %s", cf2.Nodes, b)
	}

	if err := Remove(ctx, dir, "atl1"); err != nil {
		t.Fatal(err)
	}
	ms, err := membersFromEtcd(ctx, cf)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.ID == "atl1" {
			t.Fatal("atl1 still a member")
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "nodes", "atl1")); !os.IsNotExist(err) {
		t.Fatalf("atl1's data left: %v", err)
	}
	w, _ := loadWorld(dir)
	if len(w.Nodes) != 4 {
		t.Fatalf("world after remove: %+v", w.Nodes)
	}
	if err := Remove(ctx, dir, "syd1"); err != nil {
		t.Fatal(err)
	}
	if err := Remove(ctx, dir, "scl1"); err != nil {
		t.Fatal(err)
	}
	if err := Remove(ctx, dir, "scl2"); err == nil || !strings.Contains(err.Error(), "last node of the primary region") {
		t.Fatalf("removing the last primary-region node: %v", err)
	}
	// A new atl node gets a fresh id.
	ids, err = Scale(ctx, dir, "atl", 1)
	if err != nil || len(ids) != 1 || ids[0] != "atl3" {
		t.Fatalf("scale after remove: %v %v", ids, err)
	}
}

// membersFromEtcd reads the members registered in cf's etcd.
func membersFromEtcd(ctx context.Context, cf *ClusterFile) ([]model.Member, error) {
	cli, err := store.Connect(ctx, store.Conn{Endpoints: cf.Etcd}, cf.Cluster)
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	return statusview.MembersFromEtcd(ctx, cli, cf.Cluster)
}

// WaitMembers waits until ids are registered in etcd.
func WaitMembers(ctx context.Context, dir string, ids ...string) error {
	cf, err := LoadClusterFile(dir)
	if err != nil {
		return err
	}
	for {
		ms, _ := membersFromEtcd(ctx, cf)
		got := map[string]bool{}
		for _, m := range ms {
			got[m.ID] = true
		}
		all := true
		for _, id := range ids {
			all = all && got[id]
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for members %v: %w", ids, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestParseLatency(t *testing.T) {
	m, err := matrixFor("scl-ord=40ms\n# comment\nsyd-scl=1s, jitter=2ms,loss=0.01,local=1ms")
	if err != nil {
		t.Fatal(err)
	}
	if m.Between("ord", "scl") != 40*time.Millisecond || m.Between("scl", "syd") != time.Second || m.Jitter != 2*time.Millisecond || m.Loss != 0.01 || m.Between("scl", "scl") != time.Millisecond {
		t.Fatalf("matrix: %+v", m)
	}
	if m.Between("ams", "scl") != 115*time.Millisecond {
		t.Fatalf("defaults lost: %v", m.Between("ams", "scl"))
	}
	for _, bad := range []string{"scl-ord", "scl-ord=fast", "loss=2", "jitter=-1s", "sclord=1ms"} {
		if _, err := matrixFor(bad); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
}

// freeBase finds a base port below the ephemeral range (where the links'
// random ports live) whose whole range is free.
func freeBase(t *testing.T) int {
	t.Helper()
	for k := 0; k < 120; k++ {
		b := 20000 + ((os.Getpid()+k)%120)*100
		w := &world{EtcdClientPort: b + etcdClientOff, EtcdPeerPort: b + etcdPeerOff}
		for i := 0; i < maxNodes; i++ {
			w.Nodes = append(w.Nodes, worldNode{ID: "n", PGPort: b + pgPortOffset + i, APIPort: b + apiPortOffset + i, ProxyPort: b + proxyPortOffset + i})
		}
		if checkPorts(w) == nil {
			return b
		}
	}
	t.Fatal("no free port range")
	return 0
}
