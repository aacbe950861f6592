package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/testcluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// freeAddr is a loopback address nothing listens on (for a child
// process), from testcluster's ports (below the ephemeral range).
func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := testcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

// startCommand runs `petrel args...` until the test ends, its output in
// the test log on failure.
func startCommand(ctx context.Context, t *testing.T, bin string, env []string, args ...string) {
	t.Helper()
	cctx, cancel := context.WithCancel(ctx)
	cmd := exec.CommandContext(cctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("petrel %s: %v", args[0], err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		if t.Failed() {
			t.Logf("petrel %s output:\n%s", args[0], out.String())
		}
	})
}

// checkHostCommands: `petrel proxy --config` and `petrel edge --config`,
// given only a host's node TOML (etcd over TLS with client certificates
// and a password from the secrets file, the pinned CA), reach the cluster:
// the proxy routes to the leader's Postgres, the edge registers in the
// store and serves its instance.
func checkHostCommands(ctx context.Context, t *testing.T, c *testcluster.Cluster, cfg, leader string, etcd *clientv3.Client) {
	t.Helper()
	paddr := freeAddr(t)
	startCommand(ctx, t, c.Opts.Binary, nil, "proxy", "--config", cfg, "--listen", paddr)
	dsn := fmt.Sprintf("postgres://postgres:%s@%s/postgres?sslmode=disable&connect_timeout=5", c.Secrets.Superuser, paddr)
	var port int
	var inRecovery bool
	if err := testcluster.WaitFor(ctx, "a query through petrel proxy --config", func() bool {
		qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
		defer qcancel()
		conn, err := pgx.Connect(qctx, dsn)
		if err != nil {
			return false
		}
		defer conn.Close(context.Background())
		return conn.QueryRow(qctx, "SELECT inet_server_port(), pg_is_in_recovery()").Scan(&port, &inRecovery) == nil
	}); err != nil {
		t.Fatal(err)
	}
	if port != c.Node(leader).PGPort || inRecovery {
		t.Fatalf("petrel proxy --config reached port %d (in recovery: %v), want the leader %s's %d", port, inRecovery, leader, c.Node(leader).PGPort)
	}

	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "app answered")
	}))
	defer app.Close()
	eaddr, admin := freeAddr(t), freeAddr(t)
	startCommand(ctx, t, c.Opts.Binary, []string{"EDGE_SECRET=edge-secret-for-the-test"},
		"edge", "--config", cfg, "--id", "edge-host", "--listen", eaddr, "--admin-listen", admin,
		"--instance", "id=app1,addr="+strings.TrimPrefix(app.URL, "http://"))
	if err := testcluster.WaitFor(ctx, "petrel edge --config registered in the store", func() bool {
		gctx, gcancel := context.WithTimeout(ctx, 3*time.Second)
		defer gcancel()
		resp, err := etcd.Get(gctx, store.KeysFor(c.Opts.Name).Edges()+"edge-host")
		return err == nil && len(resp.Kvs) == 1
	}); err != nil {
		t.Fatal(err)
	}
	var body string
	if err := testcluster.WaitFor(ctx, "a request through petrel edge --config", func() bool {
		resp, err := http.Get("http://" + eaddr + "/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		body = string(b)
		return resp.StatusCode == http.StatusOK
	}); err != nil {
		t.Fatal(err)
	}
	if body != "app answered" {
		t.Fatalf("the edge answered %q, want the app's answer", body)
	}
}
