package regions

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/netsim"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/testcluster"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
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
	return filepath.Join(filepath.Dir(f), "..", "..", "..")
}

func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
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

// testMatrix is the default matrix scaled down, so that tests keep the
// shape of the world without waiting on 150 ms links for every etcd call.
func testMatrix() netsim.Matrix {
	m := netsim.DefaultMatrix()
	for k, d := range m.Delays {
		m.Delays[k] = d / 5
	}
	return m
}

// world starts a cluster whose members reach each other and etcd through
// netsim links, with nodes given as id→region pairs.
func world(t *testing.T, ctx context.Context, nodes ...[2]string) *testcluster.Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	dir, err := os.MkdirTemp("", "petrel-regions")
	if err != nil {
		t.Fatal(err)
	}
	m := testMatrix()
	c, err := testcluster.Start(ctx, testcluster.Options{Dir: dir, Binary: binary(t), World: &m})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("logs kept in %s", dir)
		}
	})
	// The first primary-region node bootstraps; the others clone it.
	if _, err := c.AddNode(nodes[0][0], nodes[0][1]); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitLeader(ctx, ""); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes[1:] {
		if _, err := c.AddNode(n[0], n[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes[1:] {
		if err := c.WaitRole(ctx, n[0], model.RoleReplica); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// waitRows waits until node id has at least n rows in table t.
func waitRows(ctx context.Context, c *testcluster.Cluster, id string, n int64) error {
	return testcluster.WaitFor(ctx, fmt.Sprintf("%s to have %d rows", id, n), func() bool {
		v, err := c.QueryInts(ctx, id, "SELECT count(*) FROM t")
		return err == nil && len(v) == 1 && v[0] >= n
	})
}

// senderPort is the port node id's WAL receiver streams from.
func senderPort(ctx context.Context, c *testcluster.Cluster, id string) int64 {
	v, err := c.QueryInts(ctx, id, "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'")
	if err != nil || len(v) != 1 {
		return 0
	}
	return v[0]
}

// linkPort is the port from's link to to's Postgres listens on.
func linkPort(c *testcluster.Cluster, from, to string) int64 {
	addr := c.World().Via(from, "127.0.0.1:"+strconv.Itoa(c.Node(to).PGPort))
	_, p, _ := net.SplitHostPort(addr)
	n, _ := strconv.ParseInt(p, 10, 64)
	return n
}

// neverPrimary fails the test if any of ids reports primary until stop.
func neverPrimary(t *testing.T, c *testcluster.Cluster, ids ...string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			for _, id := range ids {
				if c.Role(id) == model.RolePrimary {
					t.Errorf("%s, outside the primary region, became primary", id)
					return
				}
			}
			select {
			case <-done:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

// TestCascadeFollowsFailover: syd cascades (syd2 streams from syd1, the
// hub); the leader dies; the new leader is the other scl member, never
// the ord or syd replicas; both syd members still stream (syd1 from the
// new leader, syd2 still from syd1) and have the writes made after.
func TestCascadeFollowsFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := world(t, ctx, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"}, [2]string{"ord1", "ord"}, [2]string{"syd1", "syd"}, [2]string{"syd2", "syd"})
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.EtcdEndpoints(), DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if err := store.SetCascade(ctx, cli, "petrel", []string{"syd"}); err != nil {
		t.Fatal(err)
	}
	if err := testcluster.WaitFor(ctx, "syd2 to stream from syd1 (the hub)", func() bool {
		return senderPort(ctx, c, "syd2") == linkPort(c, "syd2", "syd1")
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, "scl1", "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, "scl1", "INSERT INTO t SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"ord1", "syd1", "syd2"} {
		if err := waitRows(ctx, c, id, 100); err != nil {
			t.Fatal(err)
		}
	}
	// scl2 must be synchronous before the kill, or no automatic
	// promotion can be proven safe.
	if err := testcluster.WaitFor(ctx, "scl2 in the sync record", func() bool {
		st, err := c.Status("scl2")
		return err == nil && st.Sync
	}); err != nil {
		t.Fatal(err)
	}

	stop := neverPrimary(t, c, "ord1", "syd1", "syd2")
	if err := c.Kill("scl1"); err != nil {
		t.Fatal(err)
	}
	leader, err := c.WaitLeader(ctx, "scl1")
	stop()
	if err != nil {
		t.Fatal(err)
	}
	if leader != "scl2" {
		t.Fatalf("new leader %s, want scl2 (the only other primary-region member)", leader)
	}
	if err := c.Exec(ctx, "scl2", "INSERT INTO t SELECT generate_series(101, 200)"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"ord1", "syd1", "syd2"} {
		if err := waitRows(ctx, c, id, 200); err != nil {
			t.Fatal(err)
		}
	}
	if err := testcluster.WaitFor(ctx, "syd1 streaming from scl2 and syd2 from syd1", func() bool {
		return senderPort(ctx, c, "syd1") == linkPort(c, "syd1", "scl2") && senderPort(ctx, c, "syd2") == linkPort(c, "syd2", "syd1")
	}); err != nil {
		t.Fatal(err)
	}
	// Turning cascading off re-points syd2 at the leader.
	if err := store.SetCascade(ctx, cli, "petrel", nil); err != nil {
		t.Fatal(err)
	}
	if err := testcluster.WaitFor(ctx, "syd2 to stream from scl2 after cascade off", func() bool {
		return senderPort(ctx, c, "syd2") == linkPort(c, "syd2", "scl2")
	}); err != nil {
		t.Fatal(err)
	}
}

// TestPartitionHealAndRegionLoss: a region's replica cut off by its link
// falls behind and catches up by itself once the link heals; then the
// whole syd region dies and writes go on as before, on the same leader.
func TestPartitionHealAndRegionLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := world(t, ctx, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"}, [2]string{"ord1", "ord"}, [2]string{"syd1", "syd"})
	if err := c.Exec(ctx, "scl1", "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if err := waitRows(ctx, c, "ord1", 0); err != nil {
		t.Fatal(err)
	}

	// Partition ord1 from everything (members and etcd).
	c.World().Isolate("ord1")
	if err := c.Exec(ctx, "scl1", "INSERT INTO t SELECT generate_series(1, 500)"); err != nil {
		t.Fatal(err)
	}
	if err := waitRows(ctx, c, "syd1", 500); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if v, err := c.QueryInts(ctx, "ord1", "SELECT count(*) FROM t"); err != nil || len(v) != 1 || v[0] != 0 {
		t.Fatalf("ord1 behind a partitioned link has rows: %v %v", v, err)
	}
	c.World().HealAll()
	if err := waitRows(ctx, c, "ord1", 500); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRole(ctx, "ord1", model.RoleReplica); err != nil {
		t.Fatal(err)
	}

	// Lose the whole syd region.
	if err := c.Kill("syd1"); err != nil {
		t.Fatal(err)
	}
	for i := 501; i <= 600; i++ {
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		start := time.Now()
		err := c.Exec(wctx, "scl1", "INSERT INTO t VALUES ($1)", i)
		wcancel()
		if err != nil {
			t.Fatalf("write %d after losing syd: %v", i, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("write %d took %v after losing syd", i, d)
		}
	}
	if leader, err := c.WaitLeader(ctx, ""); err != nil || leader != "scl1" {
		t.Fatalf("leader after losing syd: %q %v", leader, err)
	}
	st, err := c.Status("scl1")
	if err != nil || st.SyncState != "sync" {
		t.Fatalf("leader status after losing syd: %+v %v", st, err)
	}
	for _, id := range []string{"scl2", "ord1"} {
		if err := waitRows(ctx, c, id, 600); err != nil {
			t.Fatal(err)
		}
	}
}
