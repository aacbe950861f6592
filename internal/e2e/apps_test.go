package e2e

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/testcluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// petrelCLI runs the petrel binary against c with the superuser password
// in the environment; it returns stdout, stderr and the error.
func petrelCLI(ctx context.Context, t *testing.T, c *testcluster.Cluster, args ...string) (string, string, error) {
	t.Helper()
	args = append(args, "--etcd", strings.Join(c.EtcdEndpoints(), ","), "--cluster", c.Opts.Name)
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = append(os.Environ(), "SU_PASSWORD="+c.Secrets.Superuser)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func show(ctx context.Context, t *testing.T, c *testcluster.Cluster, id, name string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, c.DSN(id))
	if err != nil {
		t.Fatalf("connecting to %s: %v", id, err)
	}
	defer conn.Close(context.Background())
	var v string
	if err := conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v); err != nil {
		t.Fatalf("SHOW %s on %s: %v", name, id, err)
	}
	return v
}

func sqlState(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// TestTLSAttachConfig covers issue 3's TLS, attach/detach and cluster
// settings on one three-node cluster (scl1, scl2, ord1).
func TestTLSAttachConfig(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	for _, n := range [][2]string{{"scl1", "scl"}, {"scl2", "scl"}, {"ord1", "ord"}} {
		if _, err := c.AddNode(n[0], n[1]); err != nil {
			t.Fatal(err)
		}
		if n[0] == "scl1" {
			if _, err := c.WaitLeader(ctx, ""); err != nil {
				t.Fatal(err)
			}
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
	etcd, err := clientv3.New(clientv3.Config{Endpoints: c.EtcdEndpoints(), DialTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	tmp := t.TempDir()

	t.Run("tls", func(t *testing.T) {
		resp, err := etcd.Get(ctx, "/petrel/"+c.Opts.Name+"/ca")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("reading the CA from etcd: %v", err)
		}
		if bytes.Contains(resp.Kvs[0].Value, []byte("PRIVATE KEY")) || bytes.Contains(resp.Kvs[0].Value, []byte(c.Secrets.Superuser)) {
			t.Fatal("the CA key is stored in clear")
		}
		// attach --ca-file writes the CA certificate for clients.
		caFile := filepath.Join(tmp, "ca.crt")
		if _, stderr, err := petrelCLI(ctx, t, c, "attach", "--app", "tlsprobe", "--ca-file", caFile); err != nil {
			t.Fatalf("attach --ca-file: %v: %s", err, stderr)
		}
		for _, id := range c.IDs() {
			dsn := strings.Replace(c.DSN(id), "sslmode=disable", "sslmode=verify-full&sslrootcert="+url.QueryEscape(caFile), 1)
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatalf("verify-full connection to %s: %v", id, err)
			}
			var ssl bool
			err = conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl)
			conn.Close(context.Background())
			if err != nil || !ssl {
				t.Fatalf("%s: session not encrypted (ssl=%v, err=%v)", id, ssl, err)
			}
		}
		// Every walsender on the leader runs over TLS, and the replicas
		// connect with verify-full.
		err = testcluster.WaitFor(ctx, "two TLS walsenders", func() bool {
			n, err := c.QueryInts(ctx, leader, `SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid
WHERE s.ssl AND r.state = 'streaming'`)
			return err == nil && len(n) == 1 && n[0] == 2
		})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := c.QueryInts(ctx, leader, `SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid WHERE NOT s.ssl`); err != nil || n[0] != 0 {
			t.Fatalf("unencrypted walsenders: %v %v", n, err)
		}
		for _, id := range c.IDs() {
			if id == leader {
				continue
			}
			n, err := c.QueryInts(ctx, id, `SELECT count(*) FROM pg_stat_wal_receiver WHERE conninfo LIKE '%sslmode=verify-full%' AND status = 'streaming'`)
			if err != nil || n[0] != 1 {
				t.Fatalf("%s does not stream with sslmode=verify-full: %v %v", id, n, err)
			}
		}
		if _, stderr, err := petrelCLI(ctx, t, c, "detach", "--app", "tlsprobe", "--drop-database"); err != nil {
			t.Fatalf("detach: %v: %s", err, stderr)
		}
	})

	t.Run("attach", func(t *testing.T) {
		out, stderr, err := petrelCLI(ctx, t, c, "attach", "--app", "shop-app")
		if err != nil {
			t.Fatalf("attach: %v: %s", err, stderr)
		}
		vars := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			k, v, _ := strings.Cut(l, "=")
			vars[k] = v
		}
		for _, k := range []string{"DATABASE_URL", "DATABASE_URL_SCL", "DATABASE_URL_ORD"} {
			if vars[k] == "" {
				t.Fatalf("attach printed no %s:\n%s", k, out)
			}
		}
		if strings.Contains(stderr, vars["DATABASE_URL"][strings.Index(vars["DATABASE_URL"], ":")+3:]) {
			t.Fatal("password on stderr")
		}
		u, err := url.Parse(vars["DATABASE_URL"])
		if err != nil || u.User.Username() != "shop_app" || u.Path != "/shop_app" {
			t.Fatalf("DATABASE_URL %v: %v", u.Redacted(), err)
		}
		// Through the leader proxy: the user can create tables in its database.
		conn, err := pgx.Connect(ctx, u.String()+"?connect_timeout=5")
		if err != nil {
			t.Fatalf("connecting as the app through %s: %v", u.Host, err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(ctx, "CREATE TABLE orders (id int PRIMARY KEY); INSERT INTO orders VALUES (1)"); err != nil {
			t.Fatalf("creating a table in its own database: %v", err)
		}
		var super, createdb, createrole bool
		if err := conn.QueryRow(ctx, "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user").Scan(&super, &createdb, &createrole); err != nil {
			t.Fatal(err)
		}
		if super || createdb || createrole {
			t.Fatalf("app user too privileged: super=%v createdb=%v createrole=%v", super, createdb, createrole)
		}
		// Not in another database: postgres (public schema not writable)...
		pu := *u
		pu.Path = "/postgres"
		pc, err := pgx.Connect(ctx, pu.String()+"?connect_timeout=5")
		if err != nil {
			t.Fatalf("connecting to postgres as the app: %v", err)
		}
		_, err = pc.Exec(ctx, "CREATE TABLE intruder (id int)")
		pc.Close(context.Background())
		if sqlState(err) != "42501" {
			t.Fatalf("creating a table in postgres: want insufficient_privilege, got %v", err)
		}
		// ...nor another app's database (CONNECT revoked from PUBLIC).
		if _, stderr, err := petrelCLI(ctx, t, c, "attach", "--app", "other"); err != nil {
			t.Fatalf("attach other: %v: %s", err, stderr)
		}
		ou := *u
		ou.Path = "/other"
		_, err = pgx.Connect(ctx, ou.String()+"?connect_timeout=5")
		if sqlState(err) != "42501" {
			t.Fatalf("connecting to another app's database: want insufficient_privilege, got %v", err)
		}
		// The regional direct URL reaches a member of that region.
		if rc, err := pgx.Connect(ctx, vars["DATABASE_URL_ORD"]+"?connect_timeout=5"); err != nil {
			t.Fatalf("DATABASE_URL_ORD: %v", err)
		} else {
			rc.Close(context.Background())
		}

		conn.Close(context.Background())
		if _, stderr, err := petrelCLI(ctx, t, c, "detach", "--app", "shop-app"); err != nil {
			t.Fatalf("detach: %v: %s", err, stderr)
		}
		if n, err := c.QueryInts(ctx, leader, "SELECT count(*) FROM pg_roles WHERE rolname = 'shop_app'"); err != nil || n[0] != 0 {
			t.Fatalf("user still there after detach: %v %v", n, err)
		}
		if n, err := c.QueryInts(ctx, leader, "SELECT count(*) FROM pg_database WHERE datname = 'shop_app'"); err != nil || n[0] != 1 {
			t.Fatalf("database not kept after detach: %v %v", n, err)
		}
		if _, err := pgx.Connect(ctx, u.String()+"?connect_timeout=5"); err == nil {
			t.Fatal("detached user can still log in")
		}
	})

	configKey := "/petrel/" + c.Opts.Name + "/config"
	t.Run("config-refused", func(t *testing.T) {
		before := show(ctx, t, c, leader, "work_mem")
		for _, args := range [][]string{
			{"no_such_setting=1"},
			{"work_mem=1kB"},              // below the 64kB minimum
			{"log_min_messages=loud"},     // bad enum
			{"wal_level=minimal"},         // managed by petrel
			{"work_mem=8MB", "jit=maybe"}, // one bad value refuses all
		} {
			_, stderr, err := petrelCLI(ctx, t, c, append([]string{"config", "set"}, args...)...)
			if err == nil {
				t.Fatalf("config set %v accepted", args)
			}
			t.Logf("config set %v refused: %s", args, strings.TrimSpace(stderr))
		}
		resp, err := etcd.Get(ctx, configKey)
		if err != nil || len(resp.Kvs) != 0 {
			t.Fatalf("config key written after refusals: %v %v", resp, err)
		}
		for _, id := range c.IDs() {
			if v := show(ctx, t, c, id, "work_mem"); v != before {
				t.Fatalf("%s work_mem changed to %s", id, v)
			}
		}
	})

	t.Run("config-reload", func(t *testing.T) {
		out, stderr, err := petrelCLI(ctx, t, c, "config", "set", "work_mem=12MB")
		if err != nil {
			t.Fatalf("config set: %v\n%s%s", err, out, stderr)
		}
		t.Logf("config set work_mem=12MB:\n%s", out)
		for _, id := range c.IDs() {
			if v := show(ctx, t, c, id, "work_mem"); v != "12MB" {
				t.Fatalf("%s work_mem = %s after config set returned", id, v)
			}
		}
	})

	t.Run("config-rolling-restart", func(t *testing.T) {
		if err := c.Exec(ctx, leader, "CREATE TABLE acked (id bigint PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		var out, stderr string
		w, newLeader := writeThrough(ctx, t, c, func() {
			var err error
			out, stderr, err = petrelCLI(ctx, t, c, "config", "set", "max_connections=150")
			if err != nil {
				t.Errorf("config set max_connections: %v\n%s%s", err, out, stderr)
			}
		})
		t.Logf("config set max_connections=150 (%d acknowledged writes, leader now %s):\n%s", w.count(), newLeader, out)
		if t.Failed() {
			return
		}
		for _, id := range c.IDs() {
			if v := show(ctx, t, c, id, "max_connections"); v != "150" {
				t.Fatalf("%s max_connections = %s after the rolling restart", id, v)
			}
			st, err := c.Status(id)
			if err != nil || st.PendingRestart {
				t.Fatalf("%s still pending a restart: %+v %v", id, st, err)
			}
		}
		for _, id := range c.IDs() {
			if id != newLeader {
				waitReplicaHas(ctx, t, c, id, 1)
			}
		}
	})
}
