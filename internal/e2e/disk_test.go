package e2e

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// TestDiskFullReadOnly fills the leader's data directory (a small tmpfs)
// and expects: new transactions turn read-only with the reason in /status
// and /health, reads go on, the leader stays the leader, and writes come
// back by themselves once space returns. Root only (mount).
func TestDiskFullReadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs data dir (CI runs as root)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	if _, err := c.DefineNode("scl1", "scl"); err != nil {
		t.Fatal(err)
	}
	if err := c.MountTmpfs(ctx, "scl1", "256m"); err != nil {
		t.Fatal(err)
	}
	if err := c.StartNode("scl1"); err != nil {
		t.Fatal(err)
	}
	leader, err := c.WaitLeader(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, leader, "CREATE TABLE d (id int PRIMARY KEY, pad text)"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, leader, "INSERT INTO d VALUES (1, 'before')"); err != nil {
		t.Fatal(err)
	}
	free, err := c.FillDisk(leader)
	if err != nil {
		t.Fatal(err)
	}
	freed := false
	defer func() {
		if !freed {
			_ = free()
		}
	}()
	var st model.Status
	err = testcluster.WaitFor(ctx, "the leader to turn read-only", func() bool {
		st, err = c.Status(leader)
		return err == nil && st.ReadOnly
	})
	if err != nil {
		t.Fatalf("%v (last status %+v)", err, st)
	}
	if st.Role != model.RolePrimary || !strings.Contains(strings.Join(st.Problems, ";"), "disk nearly full") {
		t.Fatalf("read-only leader status: role %s, problems %q", st.Role, st.Problems)
	}
	if code, body := httpGet(t, c, leader, "/health"); code != 503 || !strings.Contains(body, "read-only") {
		t.Fatalf("/health while read-only: %d %s", code, body)
	}
	// A write through the leader proxy is refused as read-only, with
	// Postgres' own SQLSTATE; a read works.
	err = testcluster.WaitFor(ctx, "a write to be refused as read-only", func() bool {
		err := execProxy(ctx, c, leader, "INSERT INTO d VALUES (2, 'during')")
		return sqlState(err) == "25006"
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.QueryInts(ctx, leader, "SELECT count(*) FROM d"); err != nil || len(n) != 1 || n[0] != 1 {
		t.Fatalf("read while read-only: %v %v", n, err)
	}

	if err := free(); err != nil {
		t.Fatal(err)
	}
	freed = true
	err = testcluster.WaitFor(ctx, "writes to come back", func() bool {
		return execProxy(ctx, c, leader, "INSERT INTO d VALUES (3, 'after') ON CONFLICT DO NOTHING") == nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = testcluster.WaitFor(ctx, "/status to drop read-only", func() bool {
		st, err = c.Status(leader)
		return err == nil && !st.ReadOnly
	})
	if err != nil || st.Role != model.RolePrimary {
		t.Fatalf("after space returned: %+v %v", st, err)
	}
	if l, err := c.WaitLeader(ctx, ""); err != nil || l != leader {
		t.Fatalf("leader changed over a full disk: %s %v", l, err)
	}
}

// httpGet fetches path from node id's API.
func httpGet(t *testing.T, c *testcluster.Cluster, id, path string) (int, string) {
	t.Helper()
	resp, err := c.HTTPClient().Get(c.Node(id).APIURL() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

// execProxy runs one statement through node id's leader proxy.
func execProxy(ctx context.Context, c *testcluster.Cluster, id, sql string) error {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, c.ProxyDSN(id))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(cctx, sql)
	return err
}
