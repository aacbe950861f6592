package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/petrel-db/petrel/internal/testcluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// petrelCLI runs the petrel binary against c with the superuser password
// in the environment; it returns stdout, stderr and the error. The cluster
// flags go before a "--" in args (what follows it is for psql).
func petrelCLI(ctx context.Context, t *testing.T, c *testcluster.Cluster, args ...string) (string, string, error) {
	t.Helper()
	return petrelCLIEnv(ctx, t, c, "SU_PASSWORD="+c.Secrets.Superuser, args...)
}

// petrelCLIEnv is petrelCLI with the admin credentials given as env
// (SU_PASSWORD=... or OPERATOR_PASSWORD=...).
func petrelCLIEnv(ctx context.Context, t *testing.T, c *testcluster.Cluster, env string, args ...string) (string, string, error) {
	t.Helper()
	flags := []string{"--etcd", strings.Join(c.EtcdEndpoints(), ","), "--cluster", c.Opts.Name, "--ca-fingerprint", c.CAFingerprint}
	i := len(args)
	for j, a := range args {
		if a == "--" {
			i = j
			break
		}
	}
	args = append(append(append([]string{}, args[:i]...), flags...), args[i:]...)
	cmd := exec.CommandContext(ctx, binary(t), args...)
	cmd.Env = append(os.Environ(), env)
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
	leader := startNodes(ctx, t, c, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"}, [2]string{"ord1", "ord"})
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
		// Through each member's leader proxy too; the proxy holds each TLS
		// session's authentication slot until the leader's agent lists it
		// as authenticated (GET /sessions), and lets it go then.
		for _, id := range c.IDs() {
			dsn := strings.Replace(c.ProxyDSN(id), "sslmode=disable", "sslmode=verify-full&sslrootcert="+url.QueryEscape(caFile), 1)
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatalf("verify-full connection through %s's proxy: %v", id, err)
			}
			var ssl bool
			err = conn.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl)
			if err != nil || !ssl {
				t.Fatalf("%s's proxy: session not encrypted (ssl=%v, err=%v)", id, ssl, err)
			}
			var metrics string
			err = testcluster.WaitFor(ctx, id+"'s proxy lets the TLS session go as authenticated", func() bool {
				b, err := c.API.Get(ctx, c.Node(id).APIURL(), id, "/metrics", 4<<20)
				metrics = string(b)
				return err == nil && metricValue(metrics, `petrel_proxy_tls_holds_total{outcome="authenticated"}`) >= 1
			})
			conn.Close(context.Background())
			if err != nil {
				t.Fatalf("%v; its metrics say:\n%s", err, grepLines(metrics, "petrel_proxy_tls_holds_total"))
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

	t.Run("db-users-connect", func(t *testing.T) {
		const db, owned, user = "cli_db", "cli_owned", "cli_user"
		login := func(id, user, pw, db string) (*pgx.Conn, error) {
			return pgx.Connect(ctx, fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable&connect_timeout=5",
				user, url.QueryEscape(pw), c.Node(id).PGPort, db))
		}
		// row is name's row of a `db list` or `users list` table, nil when absent.
		row := func(out, name string) []string {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) == 0 || !strings.HasPrefix(lines[0], "NAME") {
				t.Fatalf("not a listing:\n%s", out)
			}
			for _, l := range lines[1:] {
				if f := strings.Fields(l); len(f) > 0 && f[0] == name {
					return f
				}
			}
			return nil
		}
		list := func(what string) string {
			t.Helper()
			out, stderr, err := petrelCLI(ctx, t, c, what, "list")
			if err != nil {
				t.Fatalf("%s list: %v: %s", what, err, stderr)
			}
			return out
		}
		count := func(id, sql string) int64 {
			t.Helper()
			n, err := c.QueryInts(ctx, id, sql)
			if err != nil || len(n) != 1 {
				t.Fatalf("%s on %s: %v %v", sql, id, n, err)
			}
			return n[0]
		}
		refused := func(want string, args ...string) {
			t.Helper()
			out, stderr, err := petrelCLI(ctx, t, c, args...)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() == 0 {
				t.Fatalf("%q: want a non-zero exit, got %v\n%s%s", args, err, out, stderr)
			}
			if !strings.Contains(stderr, want) {
				t.Fatalf("%q: stderr %q does not say %q", args, stderr, want)
			}
			t.Logf("%q refused: %s", args, strings.TrimSpace(stderr))
		}

		// Bad names are refused before any SQL runs, and nothing is created.
		dbs, roles := count(leader, "SELECT count(*) FROM pg_database"), count(leader, "SELECT count(*) FROM pg_roles")
		for _, name := range []string{"bad name;drop", `x"; DROP DATABASE postgres; --`, "Upper", "1digit", "a-b", "", strings.Repeat("a", 64)} {
			refused(fmt.Sprintf("database name %q: use 1-63 of a-z, 0-9 and _", name), "db", "create", name)
		}
		refused(`user name "bad name;drop"`, "users", "create", "bad name;drop")
		refused(`user name "postgres" is reserved`, "users", "create", "postgres")
		refused(`user name "pg_monitor" is reserved`, "users", "create", "pg_monitor")
		refused(`user name "postgres" is reserved`, "users", "delete", "postgres")
		refused(`user name "replicator" is reserved`, "users", "delete", "replicator")
		refused(`no user nobody_here`, "users", "delete", "nobody_here")
		if d, r := count(leader, "SELECT count(*) FROM pg_database"), count(leader, "SELECT count(*) FROM pg_roles"); d != dbs || r != roles {
			t.Fatalf("refused commands changed the cluster: %d->%d databases, %d->%d roles", dbs, d, roles, r)
		}
		if count(leader, "SELECT count(*) FROM pg_roles WHERE rolname = 'postgres' AND rolsuper AND rolcanlogin") != 1 {
			t.Fatal("postgres lost its superuser login")
		}

		// db create / db list.
		out, stderr, err := petrelCLI(ctx, t, c, "db", "create", db)
		if err != nil || out != "created database "+db+"\n" {
			t.Fatalf("db create: %v: %q %s", err, out, stderr)
		}
		refused("already exists", "db", "create", db)
		l := list("db")
		if r := row(l, db); len(r) < 3 || r[1] != "postgres" {
			t.Fatalf("db list: no %s owned by postgres:\n%s", db, l)
		}
		t.Logf("db list:\n%s", l)
		// The operator (CREATEDB, not superuser) lists them too,
		// including app databases whose CONNECT is revoked from PUBLIC.
		asOperator := "OPERATOR_PASSWORD=" + c.Secrets.Operator
		out, stderr, err = petrelCLIEnv(ctx, t, c, asOperator, "db", "list")
		if r := row(out, db); err != nil || len(r) < 4 || r[1] != "postgres" || !strings.HasSuffix(r[3], "B") {
			t.Fatalf("db list as the operator: %v: no %s with its size\n%s%s", err, db, out, stderr)
		}
		if r := row(out, "other"); len(r) != 3 || r[1] != "other" || r[2] != "-" {
			t.Fatalf("db list as the operator: want other's size unknown (-), got %q\n%s", r, out)
		}
		t.Logf("db list as the operator:\n%s", out)

		// users create prints the password once, on stdout.
		out, stderr, err = petrelCLI(ctx, t, c, "users", "create", user)
		if err != nil {
			t.Fatalf("users create: %v: %s", err, stderr)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		pw, ok := "", false
		if len(lines) == 2 && lines[0] == "created user "+user {
			pw, ok = strings.CutPrefix(lines[1], "password: ")
		}
		if !ok || len(pw) != 32 {
			t.Fatalf("users create printed %q", out)
		}
		if strings.Contains(stderr, pw) {
			t.Fatal("password on stderr")
		}
		refused("user "+user+" already exists", "users", "create", user)
		// The user logs in over TCP and is not privileged.
		conn, err := login(leader, user, pw, "postgres")
		if err != nil {
			t.Fatalf("logging in as %s: %v", user, err)
		}
		var super, createdb, createrole, repl bool
		if err := conn.QueryRow(ctx, "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication FROM pg_roles WHERE rolname = current_user").Scan(&super, &createdb, &createrole, &repl); err != nil {
			t.Fatal(err)
		}
		if super || createdb || createrole || repl {
			t.Fatalf("%s too privileged: super=%v createdb=%v createrole=%v replication=%v", user, super, createdb, createrole, repl)
		}
		if _, err := conn.Exec(ctx, "CREATE DATABASE sneaky"); sqlState(err) != "42501" {
			t.Fatalf("CREATE DATABASE as %s: want insufficient_privilege, got %v", user, err)
		}
		conn.Close(context.Background())
		if _, err := login(leader, user, pw+"x", "postgres"); sqlState(err) != "28P01" {
			t.Fatalf("wrong password: want invalid_password, got %v", err)
		}
		l = list("users")
		if r := row(l, user); len(r) != 1 {
			t.Fatalf("users list: want %s without attributes:\n%s", user, l)
		}
		if r := row(l, "postgres"); len(r) != 2 || !strings.Contains(r[1], "superuser") {
			t.Fatalf("users list: postgres not shown as superuser:\n%s", l)
		}
		t.Logf("users list:\n%s", l)

		// db create --owner: the user owns it and can create tables there.
		if out, stderr, err := petrelCLI(ctx, t, c, "db", "create", owned, "--owner", user); err != nil || out != "created database "+owned+"\n" {
			t.Fatalf("db create --owner: %v: %q %s", err, out, stderr)
		}
		if r := row(list("db"), owned); len(r) < 3 || r[1] != user {
			t.Fatalf("db list: %s not owned by %s: %v", owned, user, r)
		}
		session, err := login(leader, user, pw, owned)
		if err != nil {
			t.Fatalf("logging in to %s as its owner: %v", owned, err)
		}
		defer session.Close(context.Background())
		if _, err := session.Exec(ctx, "CREATE TABLE notes (id int PRIMARY KEY); INSERT INTO notes VALUES (1)"); err != nil {
			t.Fatalf("creating a table in its own database: %v", err)
		}

		// connect runs psql on the leader, or on --region's member (ord1,
		// a replica), with the extra arguments after --.
		if err := testcluster.WaitFor(ctx, db+" on ord1", func() bool {
			n, err := c.QueryInts(ctx, "ord1", "SELECT count(*) FROM pg_database WHERE datname = '"+db+"'")
			return err == nil && len(n) == 1 && n[0] == 1
		}); err != nil {
			t.Fatal(err)
		}
		if leader != "scl1" && leader != "scl2" {
			t.Fatalf("leader %s is not in scl", leader)
		}
		sclReplica := map[string]string{"scl1": "scl2", "scl2": "scl1"}[leader]
		const probe = "SELECT pg_is_in_recovery(), inet_server_port(), current_database(), current_user, (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())"
		for _, tc := range []struct {
			args []string
			want string
		}{
			{[]string{"connect", "-d", db}, fmt.Sprintf("f|%d|%s|postgres|t", c.Node(leader).PGPort, db)},
			{[]string{"connect", "--region", "ord", "-d", db}, fmt.Sprintf("t|%d|%s|postgres|t", c.Node("ord1").PGPort, db)},
			// scl's nearest member is its replica, not the leader.
			{[]string{"connect", "--region", "scl"}, fmt.Sprintf("t|%d|postgres|postgres|t", c.Node(sclReplica).PGPort)},
		} {
			out, stderr, err := petrelCLI(ctx, t, c, append(tc.args, "--", "-X", "-At", "-c", probe)...)
			if err != nil || strings.TrimSpace(out) != tc.want {
				t.Fatalf("%q: %v: got %q, want %q\n%s", tc.args, err, out, tc.want, stderr)
			}
		}
		refused(`no live member in region "nowhere"`, "connect", "--region", "nowhere")
		refused(`ERROR:  syntax error`, "connect", "--", "-X", "-v", "ON_ERROR_STOP=1", "-c", "SELEC 1")
		// psql's own exit status comes through (3: a script stopped by
		// ON_ERROR_STOP), so scripts can tell failures apart.
		script := filepath.Join(t.TempDir(), "bad.sql")
		if err := os.WriteFile(script, []byte("SELECT 1;\nSELEC 2;\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, stderr, err = petrelCLI(ctx, t, c, "connect", "--", "-X", "-v", "ON_ERROR_STOP=1", "-f", script)
		if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ExitCode() != 3 {
			t.Fatalf("connect -f with a failing script: want exit status 3 (psql's), got %v\n%s", err, stderr)
		}

		// users delete ends its sessions, reassigns what it owns to the
		// admin and drops it: it can no longer log in.
		out, stderr, err = petrelCLI(ctx, t, c, "users", "delete", user)
		if err != nil || out != "deleted user "+user+"\n" {
			t.Fatalf("users delete: %v: %q %s", err, out, stderr)
		}
		if _, err := session.Exec(ctx, "SELECT 1"); err == nil {
			t.Fatal("the deleted user's session survived")
		}
		if _, err := login(leader, user, pw, "postgres"); sqlState(err) != "28P01" {
			t.Fatalf("logging in as the deleted user: want invalid_password, got %v", err)
		}
		if l := list("users"); row(l, user) != nil {
			t.Fatalf("users list still shows %s:\n%s", user, l)
		}
		if r := row(list("db"), owned); len(r) < 3 || r[1] != "postgres" {
			t.Fatalf("db list: %s not kept and given to postgres: %v", owned, r)
		}
		refused("no user "+user, "users", "delete", user)
		for _, d := range []string{db, owned} {
			if err := c.Exec(ctx, leader, "DROP DATABASE "+d+" WITH (FORCE)"); err != nil {
				t.Fatal(err)
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

	// Lowering a setting standbys must run at least as high as the primary
	// rolls the other way round: the leader restarts in place first. In the
	// usual order the replicas would come back below the primary's value
	// and PostgreSQL would pause their recovery.
	t.Run("config-lowering", func(t *testing.T) {
		l, err := c.WaitLeader(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		// Self-contained when run alone: start above the target value.
		if err := c.Exec(ctx, l, "CREATE TABLE IF NOT EXISTS acked (id bigint PRIMARY KEY)"); err != nil {
			t.Fatal(err)
		}
		if v, _ := strconv.Atoi(show(ctx, t, c, l, "max_connections")); v <= 120 {
			if out, stderr, err := petrelCLI(ctx, t, c, "config", "set", "max_connections=150"); err != nil {
				t.Fatalf("raising max_connections first: %v\n%s%s", err, out, stderr)
			}
			if l, err = c.WaitLeader(ctx, ""); err != nil {
				t.Fatal(err)
			}
		}
		w, newLeader := writeThrough(ctx, t, c, func() {
			out, stderr, err := petrelCLI(ctx, t, c, "config", "set", "max_connections=120")
			if err != nil || !strings.Contains(out, "in place") {
				t.Errorf("config set max_connections=120: %v\n%s%s", err, out, stderr)
			}
			t.Logf("config set max_connections=120:\n%s", out)
		})
		if t.Failed() {
			return
		}
		if newLeader != l {
			t.Errorf("leader moved from %s to %s: lowering restarts it in place", l, newLeader)
		}
		for _, id := range c.IDs() {
			if v := show(ctx, t, c, id, "max_connections"); v != "120" {
				t.Fatalf("%s max_connections = %s after lowering", id, v)
			}
			if st, err := c.Status(id); err != nil || st.PendingRestart {
				t.Fatalf("%s still pending a restart: %+v %v", id, st, err)
			}
		}
		// Replicas replay every write: their recovery is not paused.
		got, err := c.QueryInts(ctx, newLeader, "SELECT count(*) FROM acked")
		if err != nil || len(got) != 1 || got[0] < int64(w.count()) {
			t.Fatalf("rows on the leader: %v %v (%d acknowledged in this subtest)", got, err, w.count())
		}
		n := got[0]
		for _, id := range c.IDs() {
			if id != newLeader {
				waitReplicaHas(ctx, t, c, id, n)
			}
			// No replica came back below the primary's value (it would have
			// refused to start and been re-cloned).
			if b, _ := os.ReadFile(filepath.Join(c.Node(id).DataDir, "postgres.log")); bytes.Contains(b, []byte("insufficient parameter settings")) {
				t.Errorf("%s refused to start below the primary's max_connections", id)
			}
		}
	})

	// The cluster commands are clients of the admin API: with only the
	// operator's password, a member's API URL and the CA, and an etcd that
	// is not there, they work, and the member's request log has them.
	t.Run("cli-through-admin-api", func(t *testing.T) {
		caFile := filepath.Join(t.TempDir(), "ca.crt")
		if err := os.WriteFile(caFile, c.CAPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		via := "ord1" // a replica's API: the operations reach the leader from there
		run := func(env string, args ...string) (string, string, error) {
			cmd := exec.CommandContext(ctx, binary(t), append(args, "--etcd", "127.0.0.1:1", "--cluster", c.Opts.Name,
				"--api", c.Node(via).APIURL(), "--api-ca-file", caFile, "--ca-fingerprint", c.CAFingerprint, "--secrets-file", "/nonexistent")...)
			cmd.Env = append(os.Environ(), "SU_PASSWORD=", env)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			err := cmd.Run()
			return out.String(), errb.String(), err
		}
		op := "OPERATOR_PASSWORD=" + c.Secrets.Operator
		// events --follow (polling the API) prints what happens next.
		follow := exec.Command(binary(t), "events", "--follow", "--json", "-n", "1", "--etcd", "127.0.0.1:1", "--cluster", c.Opts.Name,
			"--api", c.Node(via).APIURL(), "--api-ca-file", caFile, "--ca-fingerprint", c.CAFingerprint, "--secrets-file", "/nonexistent")
		follow.Env = append(os.Environ(), "SU_PASSWORD=", op)
		var followed lockedBuffer
		follow.Stdout, follow.Stderr = &followed, &followed
		if err := follow.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { follow.Process.Kill(); follow.Wait() }()
		fctx, fcancel := context.WithTimeout(ctx, 20*time.Second)
		defer fcancel()
		if err := testcluster.WaitFor(fctx, "events --follow to print the newest event", func() bool { return strings.Contains(followed.String(), `"kind"`) }); err != nil {
			t.Fatalf("%v: %s", err, followed.String())
		}
		out, stderr, err := run(op, "db", "create", "via_api")
		if err != nil || out != "created database via_api\n" {
			t.Fatalf("db create through the API: %v: %q %s", err, out, stderr)
		}
		if err := testcluster.WaitFor(fctx, "events --follow to print the new event", func() bool { return strings.Contains(followed.String(), "created database via_api") }); err != nil {
			t.Fatalf("%v: %s", err, followed.String())
		}
		owner := func(out, name string) string {
			for _, l := range strings.Split(out, "\n") {
				if f := strings.Fields(l); len(f) > 1 && f[0] == name {
					return f[1]
				}
			}
			return ""
		}
		if out, stderr, err = run(op, "db", "list"); err != nil || owner(out, "via_api") != "operator" {
			t.Fatalf("db list through the API: %v: no via_api owned by the operator\n%s%s", err, out, stderr)
		}
		if out, stderr, err = run(op, "config", "show"); err != nil || out == "" {
			t.Fatalf("config show through the API: %v\n%s%s", err, out, stderr)
		}
		if out, stderr, err = run(op, "events", "--json", "-n", "5"); err != nil || !strings.Contains(out, "via_api") {
			t.Fatalf("events through the API: %v\n%s%s", err, out, stderr)
		}
		if _, stderr, err = run("OPERATOR_PASSWORD=wrong-password", "users", "list"); err == nil || !strings.Contains(stderr, "bad credentials") {
			t.Fatalf("a wrong operator password: want bad credentials, got %v: %s", err, stderr)
		}
		l, err := c.WaitLeader(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Exec(ctx, l, "DROP DATABASE via_api"); err != nil {
			t.Fatal(err)
		}
		log, err := os.ReadFile(filepath.Join(c.Opts.Dir, via+".log"))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"method=POST path=/api/v1/databases principal=operator/password", "method=GET path=/api/v1/databases principal=operator/password",
			"method=GET path=/api/v1/config principal=operator/password", "method=GET path=/api/v1/events principal=operator/password", "path=/api/v1/users principal=- remote="} {
			if !bytes.Contains(log, []byte(want)) {
				t.Errorf("%s's log has no admin API request %q", via, want)
			}
		}
	})
}

// grepLines is the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// metricValue is the value of the series named (with its labels) in a
// Prometheus text exposition, 0 when absent.
func metricValue(text, series string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f
		}
	}
	return 0
}
