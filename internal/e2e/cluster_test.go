package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/agent"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/testcluster"
)

var (
	buildOnce sync.Once
	binPath   string
	binDir    string // the built binary's temp dir, removed by TestMain
	buildErr  error
)

// TestMain removes the binary built for this package's tests once they
// ran (a t.TempDir would go with the first test, and the binary is shared).
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

func repoRoot() string {
	_, f, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(f), "..", "..")
}

func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		// PETREL_TEST_BINARY runs the tests against a prebuilt binary (e.g.
		// as an unprivileged user without a Go toolchain cache).
		if b := os.Getenv("PETREL_TEST_BINARY"); b != "" {
			binPath = b
			return
		}
		dir, err := os.MkdirTemp("", "petrel-bin")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		binPath, buildErr = testcluster.Build(context.Background(), repoRoot(), dir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

func newCluster(t *testing.T, ctx context.Context) *testcluster.Cluster {
	t.Helper()
	return newClusterWith(t, ctx, nil)
}

// newClusterWith is newCluster with options changed by mod (e.g. a World).
func newClusterWith(t *testing.T, ctx context.Context, mod func(*testcluster.Options)) *testcluster.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	dir, err := os.MkdirTemp("", "petrel-e2e")
	if err != nil {
		t.Fatal(err)
	}
	opts := testcluster.Options{Dir: dir, Binary: binary(t)}
	if mod != nil {
		mod(&opts)
	}
	c, err := testcluster.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			for _, id := range c.IDs() {
				b, _ := os.ReadFile(filepath.Join(dir, id+".log"))
				lines := strings.Split(string(b), "\n")
				if len(lines) > 60 {
					lines = lines[len(lines)-60:]
				}
				t.Logf("---- %s agent log (tail) ----\n%s", id, strings.Join(lines, "\n"))
			}
			t.Logf("cluster dir kept: %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return c
}

// writer inserts increasing ids through the writer DSN and records which
// inserts were acknowledged.
type writer struct {
	mu    sync.Mutex
	acked []int64
	next  int64
}

func (w *writer) run(ctx context.Context, dsn string) {
	var conn *pgx.Conn
	for ctx.Err() == nil {
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			c, err := pgx.Connect(cctx, dsn)
			cancel()
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			conn = c
		}
		w.mu.Lock()
		w.next++
		id := w.next
		w.mu.Unlock()
		ictx, cancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := conn.Exec(ictx, "INSERT INTO acked(id) VALUES ($1)", id)
		cancel()
		if err != nil {
			conn.Close(context.Background())
			conn = nil
			continue
		}
		w.mu.Lock()
		w.acked = append(w.acked, id)
		w.mu.Unlock()
		time.Sleep(20 * time.Millisecond)
	}
	if conn != nil {
		conn.Close(context.Background())
	}
}

func (w *writer) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

// missing returns acknowledged ids absent from node id.
func (w *writer) missing(ctx context.Context, t *testing.T, c *testcluster.Cluster, id string) []int64 {
	t.Helper()
	got, err := c.QueryInts(ctx, id, "SELECT id FROM acked")
	if err != nil {
		t.Fatalf("reading acked ids on %s: %v", id, err)
	}
	have := map[int64]bool{}
	for _, x := range got {
		have[x] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var miss []int64
	for _, x := range w.acked {
		if !have[x] {
			miss = append(miss, x)
		}
	}
	return miss
}

func waitReplicaHas(ctx context.Context, t *testing.T, c *testcluster.Cluster, id string, n int64) {
	t.Helper()
	err := testcluster.WaitFor(ctx, id+" to replay the writes", func() bool {
		got, err := c.QueryInts(ctx, id, "SELECT count(*) FROM acked")
		return err == nil && len(got) == 1 && got[0] >= n
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitSync waits until leader reports a synchronous standby.
func waitSync(ctx context.Context, t *testing.T, c *testcluster.Cluster, leader string) {
	t.Helper()
	if err := testcluster.WaitFor(ctx, "a synchronous standby", func() bool {
		st, err := c.Status(leader)
		return err == nil && st.SyncState == "sync"
	}); err != nil {
		t.Fatal(err)
	}
}

// startNodes adds nodes ({id, region}) to c, the first alone until it
// leads, and waits until the others are replicas; it returns the leader.
func startNodes(ctx context.Context, t *testing.T, c *testcluster.Cluster, nodes ...[2]string) string {
	t.Helper()
	leader, err := c.StartNodes(ctx, nodes...)
	if err != nil {
		t.Fatal(err)
	}
	return leader
}

// writeThrough runs a writer across fn and checks no acknowledged write was
// lost and writes resumed afterwards.
func writeThrough(ctx context.Context, t *testing.T, c *testcluster.Cluster, fn func()) (*writer, string) {
	t.Helper()
	w := &writer{next: time.Now().UnixNano() / 1000}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { w.run(wctx, c.WriterDSN()); close(done) }()
	if err := testcluster.WaitFor(ctx, "first writes", func() bool { return w.count() >= 5 }); err != nil {
		t.Fatal(err)
	}
	fn()
	before := w.count()
	if err := testcluster.WaitFor(ctx, "writes to resume", func() bool { return w.count() >= before+5 }); err != nil {
		stop()
		<-done
		t.Fatal(err)
	}
	stop()
	<-done
	leader, err := c.WaitLeader(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if miss := w.missing(ctx, t, c, leader); len(miss) > 0 {
		t.Fatalf("%d acknowledged writes lost on the new leader %s: %v", len(miss), leader, miss)
	}
	return w, leader
}

func TestClusterLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)

	// Bootstrap: three nodes, two in the primary region.
	for _, n := range [][2]string{{"scl1", "scl"}, {"scl2", "scl"}, {"ord1", "ord"}} {
		if _, err := c.AddNode(n[0], n[1]); err != nil {
			t.Fatal(err)
		}
	}
	leader, err := c.WaitLeader(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range c.IDs() {
		if id != leader {
			if err := c.WaitRole(ctx, id, model.RoleReplica); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("bootstrapped; leader %s", leader)

	// A write on the leader is readable on every replica.
	if err := c.Exec(ctx, leader, "CREATE TABLE acked (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, leader, "INSERT INTO acked VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	for _, id := range c.IDs() {
		waitReplicaHas(ctx, t, c, id, 1)
	}

	// The primary-region standby becomes synchronous.
	waitSync(ctx, t, c, leader)

	t.Run("crash of the leader", func(t *testing.T) {
		old := leader
		w, nl := writeThrough(ctx, t, c, func() {
			if err := c.Kill(old); err != nil {
				t.Fatal(err)
			}
			var err error
			if leader, err = c.WaitLeader(ctx, old); err != nil {
				t.Fatal(err)
			}
		})
		if nl == old || c.Node(nl).Region != "scl" {
			t.Fatalf("new leader %s: want the other primary-region member", nl)
		}
		leader = nl
		// The platform restarts the old node: it rejoins as a replica.
		if err := c.StartNode(old); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitRole(ctx, old, model.RoleReplica); err != nil {
			t.Fatal(err)
		}
		w.mu.Lock()
		n := int64(len(w.acked))
		w.mu.Unlock()
		_ = n
		if miss := w.missing(ctx, t, c, leader); len(miss) > 0 {
			t.Fatalf("lost writes: %v", miss)
		}
		if err := testcluster.WaitFor(ctx, "old leader to replay every acknowledged write", func() bool {
			got, err := c.QueryInts(ctx, old, "SELECT count(*) FROM acked")
			return err == nil && len(w.missing(ctx, t, c, old)) == 0 && len(got) == 1
		}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("planned switchover", func(t *testing.T) {
		waitSync(ctx, t, c, leader)
		old := leader
		_, nl := writeThrough(ctx, t, c, func() {
			out, err := exec.CommandContext(ctx, binary(t), append([]string{"failover"}, c.CLIFlags()...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("petrel failover: %v\n%s", err, out)
			}
			t.Logf("petrel failover: %s", out)
		})
		if nl == old {
			t.Fatalf("leader is still %s after switchover", old)
		}
		leader = nl
		if err := c.WaitRole(ctx, old, model.RoleReplica); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("fresh node joins", func(t *testing.T) {
		if _, err := c.AddNode("scl3", "scl"); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitRole(ctx, "scl3", model.RoleReplica); err != nil {
			t.Fatal(err)
		}
		got, err := c.QueryInts(ctx, leader, "SELECT count(*) FROM acked")
		if err != nil {
			t.Fatal(err)
		}
		waitReplicaHas(ctx, t, c, "scl3", got[0])
	})
}

// crashPostgres kills only the postmaster of a node (the agent lives).
func crashPostgres(t *testing.T, c *testcluster.Cluster, id string) {
	t.Helper()
	pid := c.Node(id).PostmasterPID()
	if pid == 0 {
		t.Fatalf("%s has no postmaster", id)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

func TestClusterSupervision(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	for _, n := range [][2]string{{"scl1", "scl"}, {"scl2", "scl"}} {
		if _, err := c.AddNode(n[0], n[1]); err != nil {
			t.Fatal(err)
		}
	}
	leader, err := c.WaitLeader(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, leader, "CREATE TABLE acked (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	waitSync(ctx, t, c, leader)

	t.Run("a crashed postgres is restarted in place", func(t *testing.T) {
		_, nl := writeThrough(ctx, t, c, func() {
			crashPostgres(t, c, leader)
			// It comes back on the same node: the agent is alive, so this
			// is not a failover.
			if err := testcluster.WaitFor(ctx, "postgres back on "+leader, func() bool {
				return c.Node(leader).PostmasterPID() != 0 && c.Role(leader) == model.RolePrimary
			}); err != nil {
				t.Fatal(err)
			}
		})
		if nl != leader {
			t.Fatalf("leadership moved to %s after a local postgres crash", nl)
		}
	})

	t.Run("SIGTERM hands leadership over", func(t *testing.T) {
		// The standby must be streaming again after the previous subtest.
		if err := testcluster.WaitFor(ctx, "a streaming standby", func() bool {
			for _, id := range c.IDs() {
				if st, err := c.Status(id); id != leader && (err != nil || st.Role != model.RoleReplica || !st.Streaming) {
					return false
				}
			}
			return true
		}); err != nil {
			t.Fatal(err)
		}
		old := leader
		_, nl := writeThrough(ctx, t, c, func() {
			if err := c.Stop(old); err != nil {
				t.Fatal(err)
			}
			if c.Node(old).PostmasterPID() != 0 {
				t.Errorf("postgres still running on %s after SIGTERM", old)
			}
		})
		if nl == old {
			t.Fatalf("leader still %s", old)
		}
		leader = nl
		if err := c.StartNode(old); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitRole(ctx, old, model.RoleReplica); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a hung agent's postgres is killed by its watchdog", func(t *testing.T) {
		waitSync(ctx, t, c, leader)
		old := leader
		pm := c.Node(old).PostmasterPID()
		if pm <= 0 {
			t.Fatalf("no postmaster on %s", old)
		}
		resumed := false
		defer func() {
			if !resumed {
				_ = c.SignalAgent(old, syscall.SIGCONT)
			}
		}()
		_, nl := writeThrough(ctx, t, c, func() {
			if err := c.SignalAgent(old, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			// The agent is frozen and cannot fence; its watchdog process
			// kills the postmaster once the lease is no longer safe, so the
			// old primary serves nothing, not even stale reads.
			if err := testcluster.WaitFor(ctx, "the frozen agent's postgres to be killed", func() bool {
				return syscall.Kill(pm, 0) == syscall.ESRCH
			}); err != nil {
				t.Fatal(err)
			}
			if err := c.Exec(ctx, old, "SELECT 1"); err == nil {
				t.Fatalf("%s's postgres still answers with its agent frozen", old)
			}
		})
		if nl == old {
			t.Fatalf("leader still %s", old)
		}
		leader = nl
		if err := c.SignalAgent(old, syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		resumed = true
		if err := c.WaitRole(ctx, old, model.RoleReplica); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a hung postgres on the leader is killed and a standby takes over", func(t *testing.T) {
		waitSync(ctx, t, c, leader)
		old := leader
		resumed := false
		defer func() {
			if !resumed {
				_ = c.SignalPostgres(old, syscall.SIGCONT)
			}
		}()
		_, nl := writeThrough(ctx, t, c, func() {
			// Every Postgres process stops (hung storage, a frozen server);
			// the agent is alive and keeps its lease. Writes come back on
			// another member while the hang lasts (HangAfter, 10 s).
			if err := c.SignalPostgres(old, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			if _, err := c.WaitLeader(ctx, old); err != nil {
				t.Fatal(err)
			}
		})
		if nl == old {
			t.Fatalf("leader still %s", old)
		}
		leader = nl
		_ = c.SignalPostgres(old, syscall.SIGCONT)
		resumed = true
		if err := c.WaitRole(ctx, old, model.RoleReplica); err != nil {
			t.Fatal(err)
		}
	})
}

func TestConcurrentBootstrapInitializesOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	var wg sync.WaitGroup
	for _, id := range []string{"scl1", "scl2"} {
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			if _, err := c.AddNode(id, "scl"); err != nil {
				t.Error(err)
			}
		}(id)
	}
	wg.Wait()
	leader, err := c.WaitLeader(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	other := "scl1"
	if leader == "scl1" {
		other = "scl2"
	}
	if err := c.WaitRole(ctx, other, model.RoleReplica); err != nil {
		t.Fatal(err)
	}
	// One initdb: both share the system identifier.
	a, err := c.QueryInts(ctx, leader, "SELECT system_identifier::bigint FROM pg_control_system()")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.QueryInts(ctx, other, "SELECT system_identifier::bigint FROM pg_control_system()")
	if err != nil {
		t.Fatal(err)
	}
	if a[0] != b[0] {
		t.Fatalf("two clusters were initialized: system ids %d and %d", a[0], b[0])
	}
}

// TestBootstrapFinishedAfterAFailedStart: the first member's bootstrap
// runs initdb, then its first start fails (the port is taken). Once the
// port is free the agent must not start that data as it is, a primary
// whose roles have no passwords, recorded as bootstrapped for good: it
// finishes the bootstrap, and the superuser logs in with its password.
func TestBootstrapFinishedAfterAFailedStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	n, err := c.DefineNode("scl1", "scl")
	if err != nil {
		t.Fatal(err)
	}
	taken, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", n.PGPort))
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	if err := c.StartNode("scl1"); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(n.DataDir, "petrel-bootstrap-unfinished")
	if err := testcluster.WaitFor(ctx, "initdb done and the first start failed", func() bool {
		b, err := os.ReadFile(marker)
		l, _ := os.ReadFile(filepath.Join(n.DataDir, "postgres.log"))
		return err == nil && strings.TrimSpace(string(b)) == "roles" && strings.Contains(string(l), "could not create any TCP/IP sockets")
	}); err != nil {
		t.Fatal(err)
	}
	taken.Close()
	if _, err := c.WaitLeader(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, "scl1", "SELECT 1"); err != nil {
		t.Fatalf("the superuser's password after the bootstrap was finished: %v", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the bootstrap marker outlived the bootstrap")
	}
}

// TestStoreLossFailsafe stops etcd for several lease TTLs while every
// member still sees every other: the primary keeps taking writes (each
// member promised not to take over), nobody else becomes writable, and
// when etcd is back the same leader carries on with nothing lost.
func TestStoreLossFailsafe(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	leader := startNodes(ctx, t, c, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"}, [2]string{"ord1", "ord"})
	if err := c.Exec(ctx, leader, "CREATE TABLE fs (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	waitSync(ctx, t, c, leader)

	// POST /failsafe is a network input: garbage and forgeries are refused,
	// and so is a genuine request while the member reaches the store.
	var member, third string
	for _, id := range c.IDs() {
		if id != leader {
			member, third = id, member
		}
	}
	ca, err := c.UnsealCA(ctx)
	if err != nil {
		t.Fatal(err)
	}
	asLeader, err := c.HTTPClientAs(ca, leader)
	if err != nil {
		t.Fatal(err)
	}
	asNobody, err := c.HTTPClientAs(ca, "")
	if err != nil {
		t.Fatal(err)
	}
	asThird, err := c.HTTPClientAs(ca, third)
	if err != nil {
		t.Fatal(err)
	}
	post := func(client *http.Client, body string) (int, string) {
		resp, err := client.Post(c.Node(member).APIURL()+"/failsafe", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(b)
	}
	key, err := agent.FailsafeKey(ca.Secret, c.Opts.Name)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := agent.FailsafeKey([]byte("not the cluster secret, 32 bytes"), c.Opts.Name)
	signed := func(key []byte, target string) string {
		req := model.FailsafeRequest{Leader: leader, Target: target, TTLMs: 3000}
		agent.SignFailsafe(key, &req, time.Now())
		b, _ := json.Marshal(req)
		return string(b)
	}
	genuine := signed(key, member)
	for _, tc := range []struct {
		client *http.Client
		body   string
		code   int
		want   string
	}{
		{asLeader, "\x00\xffnot json", 400, "bad request body"},
		{asLeader, `{"leader":"` + leader + `","target":"` + member + `","nonce":"00000000000000000000000000000000","sent_unix_ms":1,"ttl_ms":3000,"mac":"00"}`, 409, "bad signature"},
		{asLeader, `{"leader":"x","extra":1}`, 400, "unknown field"},
		{asLeader, strings.Repeat("A", 10000), 400, "bad request body"},
		{asLeader, signed(otherKey, member), 409, "bad signature"},
		{asLeader, signed(key, third), 409, "for another member"}, // redirected
		{asNobody, genuine, 409, "not authenticated"},
		{asThird, genuine, 409, "not authenticated"},
		{asLeader, genuine, 409, "reaches the store"},
		{asLeader, genuine, 409, "replayed"},
	} {
		if code, body := post(tc.client, tc.body); code != tc.code || !strings.Contains(body, tc.want) {
			t.Fatalf("POST /failsafe %.40q: %d %s, want %d %q", tc.body, code, body, tc.code, tc.want)
		}
	}

	t0 := time.Now()
	c.StopEtcd()
	t.Logf("etcd stopped in %v", time.Since(t0))
	restarted := false
	defer func() {
		if !restarted {
			_ = c.RestartEtcd(context.Background())
		}
	}()
	// Four lease TTLs (3 s each) without the store: every write must be
	// acknowledged (synchronously, the standby keeps streaming), and the
	// leader must say why it still serves.
	stop := time.Now().Add(12 * time.Second)
	n := 0
	for time.Now().Before(stop) {
		n++
		wctx, wcancel := context.WithTimeout(ctx, 3*time.Second)
		err := c.Exec(wctx, leader, "INSERT INTO fs VALUES ($1)", n)
		wcancel()
		if err != nil {
			t.Fatalf("write %d, %.1fs into the store outage: %v", n, 12-time.Until(stop).Seconds(), err)
		}
		for _, id := range c.IDs() {
			if id != leader {
				if st, err := c.Status(id); err == nil && st.Role == model.RolePrimary {
					t.Fatalf("%s is primary too during the store outage", id)
				}
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	st, err := c.Status(leader)
	if err != nil || st.Role != model.RolePrimary || !strings.Contains(strings.Join(st.Problems, ";"), "failsafe") {
		t.Fatalf("leader during the outage: %+v %v", st, err)
	}

	if err := c.RestartEtcd(ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true
	if err := testcluster.WaitFor(ctx, "the store back in every member's view", func() bool {
		for _, id := range c.IDs() {
			st, err := c.Status(id)
			if err != nil || slices.Contains(st.Problems, "store unreachable") {
				return false
			}
		}
		return true
	}); err != nil {
		t.Fatal(err)
	}
	if l, err := c.WaitLeader(ctx, ""); err != nil || l != leader {
		t.Fatalf("leader after the outage: %s %v (was %s)", l, err, leader)
	}
	if err := c.Exec(ctx, leader, "INSERT INTO fs VALUES ($1)", n+1); err != nil {
		t.Fatal(err)
	}
	if got, err := c.QueryInts(ctx, leader, "SELECT count(*) FROM fs"); err != nil || got[0] != int64(n+1) {
		t.Fatalf("rows after the outage: %v %v, want %d", got, err, n+1)
	}
}
