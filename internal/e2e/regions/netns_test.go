package regions

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/hostcluster"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/netns"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// TestSeparateHosts runs a 3-node cluster the way real hosts do
// (internal/hostcluster: each node in its own network namespace with its
// own address, the same ports on every host, a three-member etcd cluster
// with TLS and authentication, one member per host, each `petrel node`
// started from a TOML config file). Only
// primary-region members lead: after the leader dies, scl2 (not ord1)
// takes over and ord1 follows it. The dead host reboots (its node started
// again from the same file, as its service manager would) and rejoins by
// itself. Then the new leader's host goes silent (its link taken down: no
// RST, no FIN, nothing) while a client writes: scl1 takes writes, nothing
// acknowledged is lost, and the silent host rejoins by itself when its
// network returns.
func TestSeparateHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root (CI runs as root)")
	}
	// As root, anything missing fails with the reason, before anything starts.
	if err := netns.Check(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bin := binary(t)
	dir, err := os.MkdirTemp("", "petrel-netns")
	if err != nil {
		t.Fatal(err)
	}
	c, err := hostcluster.Start(ctx, hostcluster.Options{Dir: dir, Binary: bin, Name: "regions"})
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

	sql := func(id, q string) (string, error) { return c.SQL(ctx, id, q, 3*time.Second) }
	waitRole := func(id, role string) {
		t.Helper()
		if err := testcluster.WaitFor(ctx, id+" "+role, func() bool {
			s, ok := c.Status(ctx)[id]
			return ok && s.Role == role && (role != model.RoleReplica || s.Streaming)
		}); err != nil {
			t.Fatal(err)
		}
	}
	add := func(id, region string, last int) {
		t.Helper()
		if _, err := c.AddNode(id, region, last); err != nil {
			t.Fatal(err)
		}
	}

	add("scl1", "scl", 11)
	waitRole("scl1", model.RolePrimary)
	add("scl2", "scl", 12)
	add("ord1", "ord", 13)
	waitRole("scl2", model.RoleReplica)
	waitRole("ord1", model.RoleReplica)
	if s := c.Status(ctx)["ord1"]; s.PostgresAddr != c.Node("ord1").IP+":5433" {
		t.Fatalf("ord1 advertises %q, want its own address", s.PostgresAddr)
	}
	if out, err := sql("scl1", "CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)"); err != nil {
		t.Fatalf("write: %v: %s", err, out)
	}
	if err := testcluster.WaitFor(ctx, "ord1 to have the rows", func() bool {
		out, err := sql("ord1", "SELECT count(*) FROM t")
		return err == nil && out == "10"
	}); err != nil {
		t.Fatal(err)
	}
	if err := testcluster.WaitFor(ctx, "scl2 synchronous", func() bool { return c.Status(ctx)["scl2"].Sync }); err != nil {
		t.Fatal(err)
	}

	c.KillNode("scl1")
	if err := testcluster.WaitFor(ctx, "scl2 to lead", func() bool {
		sts := c.Status(ctx)
		if sts["ord1"].Role == model.RolePrimary {
			t.Fatal("ord1, outside the primary region, became primary")
		}
		return sts["scl2"].Role == model.RolePrimary
	}); err != nil {
		t.Fatal(err)
	}
	if out, err := sql("scl2", "INSERT INTO t SELECT generate_series(11, 20)"); err != nil {
		t.Fatalf("write on the new leader: %v: %s", err, out)
	}
	if err := testcluster.WaitFor(ctx, "ord1 to follow scl2", func() bool {
		out, err := sql("ord1", "SELECT count(*) FROM t")
		return err == nil && out == "20"
	}); err != nil {
		t.Fatal(err)
	}

	// The dead host reboots: its service manager starts the node again.
	if err := c.StartNode("scl1"); err != nil {
		t.Fatal(err)
	}
	waitRole("scl1", model.RoleReplica)
	if err := testcluster.WaitFor(ctx, "scl1 synchronous", func() bool { return c.Status(ctx)["scl1"].Sync }); err != nil {
		t.Fatal(err)
	}

	// The leader's host goes silent while a client writes.
	w := &psqlWriter{c: c, next: 1000}
	wctx, stopW := context.WithCancel(ctx)
	wdone := make(chan struct{})
	go func() { defer close(wdone); w.run(wctx, []string{"scl1", "scl2"}) }()
	if err := testcluster.WaitFor(ctx, "first writes", func() bool { return w.count() >= 5 }); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	if err := c.Net.LinkDown("scl2"); err != nil {
		t.Fatal(err)
	}
	linkUp := false
	defer func() {
		if !linkUp {
			_ = c.Net.LinkUp("scl2")
		}
	}()
	if err := testcluster.WaitFor(ctx, "scl1 to take writes", func() bool {
		_, err := sql("scl1", "INSERT INTO t VALUES (-1) ON CONFLICT DO NOTHING")
		return err == nil
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("scl1 took writes %.1fs after scl2's link went down (figures: bench/hosts)", time.Since(down).Seconds())
	before := w.count()
	if err := testcluster.WaitFor(ctx, "writes to go on", func() bool { return w.count() >= before+5 }); err != nil {
		t.Fatal(err)
	}
	stopW()
	<-wdone
	if miss := w.missing(t, "scl1"); len(miss) > 0 {
		t.Fatalf("%d acknowledged writes lost on scl1: %v", len(miss), miss)
	}

	// Its network returns: the old leader rejoins by itself.
	if err := c.Net.LinkUp("scl2"); err != nil {
		t.Fatal(err)
	}
	linkUp = true
	waitRole("scl2", model.RoleReplica)
	if sts := c.Status(ctx); sts["scl1"].Role != model.RolePrimary || sts["ord1"].Role != model.RoleReplica {
		t.Fatalf("after scl2 came back: scl1 %s, ord1 %s", sts["scl1"].Role, sts["ord1"].Role)
	}
}

// psqlWriter inserts increasing ids with psql on the admin host (the test
// process has no route into the hosts' network), to whichever of its
// members accepts, and records the acknowledged ones.
type psqlWriter struct {
	c     *hostcluster.Cluster
	mu    sync.Mutex
	acked []int64
	next  int64
}

func (w *psqlWriter) run(ctx context.Context, ids []string) {
	for ctx.Err() == nil {
		w.mu.Lock()
		w.next++
		id := w.next
		w.mu.Unlock()
		for _, node := range ids {
			if ctx.Err() != nil {
				return
			}
			// A commit waits for its synchronous standby: one that does
			// not return within the timeout is not acknowledged.
			if _, err := w.c.SQL(ctx, node, fmt.Sprintf("INSERT INTO t VALUES (%d)", id), 2*time.Second); err == nil {
				w.mu.Lock()
				w.acked = append(w.acked, id)
				w.mu.Unlock()
				break
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *psqlWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.acked)
}

func (w *psqlWriter) missing(t *testing.T, id string) []int64 {
	t.Helper()
	out, err := w.c.SQL(context.Background(), id, "SELECT id FROM t", 10*time.Second)
	if err != nil {
		t.Fatalf("reading the rows on %s: %v: %s", id, err, out)
	}
	have := map[int64]bool{}
	for _, line := range strings.Fields(out) {
		n, _ := strconv.ParseInt(line, 10, 64)
		have[n] = true
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
