package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// startStandaloneProxy runs `petrel proxy` against c's etcd.
func startStandaloneProxy(t *testing.T, ctx context.Context, c *testcluster.Cluster, noLeaderWait time.Duration) int {
	t.Helper()
	port, err := testcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(c.Opts.Dir, "proxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary(t), "proxy", "--etcd", strings.Join(c.EtcdEndpoints(), ","), "--cluster", c.Opts.Name,
		"--ca-fingerprint", c.CAFingerprint, "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--no-leader-wait", noLeaderWait.String(), "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logf.Close() })
	return port
}

func proxyDSN(c *testcluster.Cluster, port int) string {
	return fmt.Sprintf("postgres://postgres:%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=10", c.Secrets.Superuser, port)
}

// serverPort is the Postgres port of the server a connection reached.
func serverPort(ctx context.Context, dsn string) (int, bool, error) {
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		return 0, false, err
	}
	defer conn.Close(context.Background())
	var port int
	var ro bool
	err = conn.QueryRow(cctx, "SELECT inet_server_port(), pg_is_in_recovery()").Scan(&port, &ro)
	return port, ro, err
}

type ack struct {
	id   int64
	port int
	at   time.Time
}

// proxyWriter inserts through the proxy, reconnecting on any error, and
// records each acknowledged write with the server that took it.
type proxyWriter struct {
	mu    sync.Mutex
	acks  []ack
	conns int
}

func (w *proxyWriter) run(ctx context.Context, dsn string, base int64) {
	var conn *pgx.Conn
	id := base
	for ctx.Err() == nil {
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			c, err := pgx.Connect(cctx, dsn)
			cancel()
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			conn = c
			w.mu.Lock()
			w.conns++
			w.mu.Unlock()
		}
		id++
		var a ack
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := conn.QueryRow(ictx, "INSERT INTO pwrites(id, port, at) VALUES ($1, inet_server_port(), clock_timestamp()) RETURNING id, port, at", id).Scan(&a.id, &a.port, &a.at)
		cancel()
		if err != nil {
			conn.Close(context.Background())
			conn = nil
			continue
		}
		w.mu.Lock()
		w.acks = append(w.acks, a)
		w.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	if conn != nil {
		conn.Close(context.Background())
	}
}

func (w *proxyWriter) snapshot() []ack {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]ack(nil), w.acks...)
}

// throughSwitch runs writers through the proxy across fn and checks that
// writes moved from the old leader's server to the new one's, that no
// write was accepted by the old leader after the new leader took one, and
// that none was lost.
func throughSwitch(ctx context.Context, t *testing.T, c *testcluster.Cluster, dsn, old string, fn func() string) {
	t.Helper()
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	ws := make([]*proxyWriter, 3)
	for i := range ws {
		ws[i] = &proxyWriter{}
		wg.Add(1)
		go func() { defer wg.Done(); ws[i].run(wctx, dsn, time.Now().UnixNano()/1000+int64(i)<<40) }()
	}
	total := func() (n int) {
		for _, w := range ws {
			n += len(w.snapshot())
		}
		return n
	}
	if err := testcluster.WaitFor(ctx, "first writes through the proxy", func() bool { return total() >= 20 }); err != nil {
		t.Fatal(err)
	}
	nl := fn()
	newPort := c.Node(nl).PGPort
	onNew := func() (n int) {
		for _, w := range ws {
			for _, a := range w.snapshot() {
				if a.port == newPort {
					n++
				}
			}
		}
		return n
	}
	if err := testcluster.WaitFor(ctx, "writes through the proxy to reach the new leader", func() bool { return onNew() >= 20 }); err != nil {
		stop()
		wg.Wait()
		t.Fatal(err)
	}
	stop()
	wg.Wait()
	oldPort := c.Node(old).PGPort
	var lastOld, firstNew time.Time
	var all []int64
	for _, w := range ws {
		for _, a := range w.snapshot() {
			all = append(all, a.id)
			switch a.port {
			case oldPort:
				if a.at.After(lastOld) {
					lastOld = a.at
				}
			case newPort:
				if firstNew.IsZero() || a.at.Before(firstNew) {
					firstNew = a.at
				}
			default:
				t.Fatalf("a write was acknowledged by port %d, neither %d nor %d", a.port, oldPort, newPort)
			}
		}
	}
	if !lastOld.Before(firstNew) {
		t.Fatalf("the old leader accepted a write at %v, after the new leader's first at %v", lastOld, firstNew)
	}
	t.Logf("writes: last on old leader %s, first on new %s (gap %v), %d acknowledged",
		lastOld.Format("15:04:05.000"), firstNew.Format("15:04:05.000"), firstNew.Sub(lastOld).Round(time.Millisecond), len(all))
	got, err := c.QueryInts(ctx, nl, "SELECT id FROM pwrites")
	if err != nil {
		t.Fatal(err)
	}
	have := map[int64]bool{}
	for _, id := range got {
		have[id] = true
	}
	for _, id := range all {
		if !have[id] {
			t.Fatalf("acknowledged write %d missing on the new leader %s", id, nl)
		}
	}
}

func runTool(ctx context.Context, t *testing.T, name string, args ...string) string {
	t.Helper()
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(cctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

func TestLeaderProxy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	for _, id := range []string{"scl1", "scl2"} {
		if _, err := c.AddNode(id, "scl"); err != nil {
			t.Fatal(err)
		}
	}
	leader, err := c.WaitLeader(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	other := map[string]string{"scl1": "scl2", "scl2": "scl1"}
	if err := c.WaitRole(ctx, other[leader], model.RoleReplica); err != nil {
		t.Fatal(err)
	}
	waitSync(ctx, t, c, leader)
	if err := c.Exec(ctx, leader, "CREATE TABLE pwrites (id bigint PRIMARY KEY, port int, at timestamptz)"); err != nil {
		t.Fatal(err)
	}
	pport := startStandaloneProxy(t, ctx, c, 2*time.Second)
	dsn := proxyDSN(c, pport)

	t.Run("node proxies reach the leader, read-only proxy a replica", func(t *testing.T) {
		for _, id := range c.IDs() {
			port, ro, err := serverPort(ctx, c.ProxyDSN(id))
			if err != nil || ro || port != c.Node(leader).PGPort {
				t.Fatalf("through %s's proxy: port %d (leader %d), in recovery %v, err %v", id, port, c.Node(leader).PGPort, ro, err)
			}
		}
		if err := testcluster.WaitFor(ctx, "the read-only proxy to use the replica", func() bool {
			port, ro, err := serverPort(ctx, c.ProxyRODSN(leader))
			return err == nil && ro && port == c.Node(other[leader]).PGPort
		}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("psql and pgbench", func(t *testing.T) {
		if out := runTool(ctx, t, "psql", dsn, "-XAtc", "SELECT 'via proxy ' || inet_server_port()"); !strings.Contains(out, "via proxy") {
			t.Fatalf("psql: %s", out)
		}
		runTool(ctx, t, "pgbench", "-i", "-s", "1", "-q", dsn)
		out := runTool(ctx, t, "pgbench", "-n", "-S", "-c", "2", "-j", "2", "-T", "3", dsn)
		t.Logf("pgbench -S: %s", lastLines(out, 2))
		out = runTool(ctx, t, "pgbench", "-n", "-C", "-c", "2", "-j", "2", "-T", "3", dsn)
		t.Logf("pgbench tpcb -C: %s", lastLines(out, 2))
	})

	t.Run("cancel reaches its backend", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		go func() {
			time.Sleep(500 * time.Millisecond)
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			_ = conn.PgConn().CancelRequest(cctx)
		}()
		start := time.Now()
		qctx, qcancel := context.WithTimeout(ctx, time.Minute)
		defer qcancel()
		_, err = conn.Exec(qctx, "SELECT pg_sleep(60)")
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "57014" {
			t.Fatalf("pg_sleep through the proxy: want query_canceled (57014), got %v", err)
		}
		t.Logf("pg_sleep(60) cancelled through the proxy after %v", time.Since(start).Round(time.Millisecond))
		// The connection is still usable.
		var one int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("malformed input and a half-open flood", func(t *testing.T) {
		addr := fmt.Sprintf("127.0.0.1:%d", c.Node(leader).ProxyPort) // the agent's own proxy
		var socks []net.Conn
		defer func() {
			for _, s := range socks {
				s.Close()
			}
		}()
		// The flood comes from another loopback source than the client
		// below: the proxy's limits are per source, and one source's flood
		// must not keep another out (its own connections are refused once
		// it holds MaxPendingPerSource unauthenticated ones).
		flooder := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
		for range 500 {
			s, err := flooder.Dial("tcp", addr)
			if err != nil {
				t.Fatalf("opening half-open socket %d: %v", len(socks), err)
			}
			socks = append(socks, s)
		}
		for _, junk := range [][]byte{
			[]byte("GET / HTTP/1.0\r\n\r\n"), {0xff, 0xff, 0xff, 0xff}, {0, 0, 0, 100, 0, 3, 0, 0}, make([]byte, 20000),
		} {
			s, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = s.Write(junk)
			_ = s.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, _ = io.ReadAll(s)
			s.Close()
		}
		// The agent still serves its API and its proxy still routes.
		resp, err := c.HTTPClient().Get(c.Node(leader).APIURL() + "/role")
		if err != nil {
			t.Fatalf("agent API after the flood: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != model.RolePrimary {
			t.Fatalf("agent role after the flood: %q", b)
		}
		if _, _, err := serverPort(ctx, c.ProxyDSN(leader)); err != nil {
			t.Fatalf("proxy during the flood: %v", err)
		}
		if c.Role(leader) != model.RolePrimary {
			t.Fatal("leader lost its role during the flood")
		}
	})

	t.Run("switchover", func(t *testing.T) {
		waitSync(ctx, t, c, leader)
		// An idle app connection on the old leader.
		idle, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer idle.Close(context.Background())
		old := leader
		throughSwitch(ctx, t, c, dsn, old, func() string {
			out, err := exec.CommandContext(ctx, binary(t), append([]string{"failover"}, c.CLIFlags()...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("petrel failover: %v\n%s", err, out)
			}
			nl, err := c.WaitLeader(ctx, old)
			if err != nil {
				t.Fatal(err)
			}
			leader = nl
			return nl
		})
		if err := idle.Ping(ctx); err == nil {
			t.Fatal("a connection to the old leader survived the switchover")
		}
		if err := c.WaitRole(ctx, old, model.RoleReplica); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("crash of the leader", func(t *testing.T) {
		waitSync(ctx, t, c, leader)
		old := leader
		throughSwitch(ctx, t, c, dsn, old, func() string {
			if err := c.Kill(old); err != nil {
				t.Fatal(err)
			}
			nl, err := c.WaitLeader(ctx, old)
			if err != nil {
				t.Fatal(err)
			}
			leader = nl
			return nl
		})
	})

	t.Run("no leader gets an ErrorResponse", func(t *testing.T) {
		if err := c.Kill(leader); err != nil {
			t.Fatal(err)
		}
		// Once the proxy has dropped the dead leader, a new connection
		// gets a FATAL error with SQLSTATE 57P03 after the bound (2s).
		var last error
		if err := testcluster.WaitFor(ctx, "a 57P03 error from the proxy", func() bool {
			cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			start := time.Now()
			conn, err := pgx.Connect(cctx, dsn)
			if err == nil {
				conn.Close(context.Background())
				return false
			}
			last = err
			var pe *pgconn.PgError
			if errors.As(err, &pe) && pe.Code == "57P03" {
				t.Logf("no leader: %s (SQLSTATE %s) after %v", pe.Message, pe.Code, time.Since(start).Round(time.Millisecond))
				return true
			}
			return false
		}); err != nil {
			t.Fatalf("%v; last error: %v", err, last)
		}
	})
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
