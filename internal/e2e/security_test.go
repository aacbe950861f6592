package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/testcluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestSecurity covers issue 13 on one two-node cluster (scl1, scl2):
// nothing in the store or the CLI runs code on a node, and the agents'
// secrets stay out of Postgres' processes.
func TestSecurity(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)

	// The agents start with every secret in their environment (the
	// cluster's own passwords, so they work, and others an operator might
	// export); Postgres must get none of them. Unset again once the agents
	// have started, so the CLI below runs with the credentials it is given.
	secrets := map[string]string{
		"SU_PASSWORD": c.Secrets.Superuser, "REPL_PASSWORD": c.Secrets.Replication,
		"OPERATOR_PASSWORD": c.Secrets.Operator, "EDGE_SECRET": "edge-secret-" + c.Secrets.Operator,
		"EDGE_DATABASE_URL": "postgres://operator:dburl-" + c.Secrets.Operator + "@x/y",
		"ETCD_PASSWORD":     "etcd-" + c.Secrets.Replication,
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	leader := startNodes(ctx, t, c, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"})
	for k := range secrets {
		os.Unsetenv(k)
	}
	replica := "scl1"
	if leader == replica {
		replica = "scl2"
	}
	etcd, err := clientv3.New(clientv3.Config{Endpoints: c.EtcdEndpoints(), DialTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	// A directory the postgres user can write (the test may run as root).
	probeDir, err := os.MkdirTemp("", "petrel-sec")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(probeDir)
	if err := os.Chmod(probeDir, 0o777); err != nil {
		t.Fatal(err)
	}
	pwned := filepath.Join(probeDir, "pwned")

	t.Run("postgres-environ", func(t *testing.T) {
		for _, id := range c.IDs() {
			conn, err := pgx.Connect(ctx, c.DSN(id))
			if err != nil {
				t.Fatal(err)
			}
			var backend int
			if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
				t.Fatal(err)
			}
			// What code in a backend sees: the environment of a program it
			// starts (a backend overwrites its /proc environ with its title).
			envFile := filepath.Join(probeDir, id+".env")
			if _, err := conn.Exec(ctx, fmt.Sprintf("COPY (SELECT 1) TO PROGRAM 'env > %s'", envFile)); err != nil {
				t.Fatal(err)
			}
			fromBackend, err := os.ReadFile(envFile)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(fromBackend, []byte("PATH=")) {
				t.Fatalf("%s: a backend's program has no PATH: %q", id, fromBackend)
			}
			pm := c.Node(id).PostmasterPID()
			procs := map[string][]byte{"a backend's program": fromBackend}
			for what, pid := range map[string]int{"postmaster": pm, "backend": backend} {
				b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
				if err != nil {
					t.Fatalf("%s: reading the %s's environ: %v", id, what, err)
				}
				procs[what] = b
			}
			// Closed only now: the backend exits with its session.
			conn.Close(context.Background())
			if !bytes.Contains(procs["postmaster"], []byte("PATH=")) {
				t.Fatalf("%s: the postmaster's environ has no PATH: not its environment?", id)
			}
			for what, b := range procs {
				for k, v := range secrets {
					if bytes.Contains(b, []byte(v)) || bytes.Contains(b, []byte(k+"=")) {
						t.Errorf("%s: the %s has %s in its environment", id, what, k)
					}
				}
			}
		}
	})

	configKey := "/petrel/" + c.Opts.Name + "/config"
	t.Run("config-set-refuses-code", func(t *testing.T) {
		before, err := etcd.Get(ctx, configKey)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			env  string
			args []string
		}{
			{"OPERATOR_PASSWORD=" + c.Secrets.Operator, []string{"archive_command=touch " + pwned}},
			{"OPERATOR_PASSWORD=" + c.Secrets.Operator, []string{"archive_mode=on"}},
			{"OPERATOR_PASSWORD=" + c.Secrets.Operator, []string{"shared_preload_libraries=pg_stat_statements"}},
			{"OPERATOR_PASSWORD=" + c.Secrets.Operator, []string{"dynamic_library_path=" + probeDir}},
			{"OPERATOR_PASSWORD=" + c.Secrets.Operator, []string{"session_preload_libraries=auto_explain"}},
			{"SU_PASSWORD=" + c.Secrets.Superuser, []string{"restore_command=touch " + pwned}},
			{"SU_PASSWORD=" + c.Secrets.Superuser, []string{"shared_preload_libraries=../../../" + probeDir + "/evil"}},
			{"SU_PASSWORD=" + c.Secrets.Superuser, []string{"shared_preload_libraries=no_such_library"}},
		} {
			_, stderr, err := petrelCLIEnv(ctx, t, c, tc.env, append([]string{"config", "set"}, tc.args...)...)
			if err == nil {
				t.Fatalf("config set %v (%s) accepted", tc.args, strings.SplitN(tc.env, "=", 2)[0])
			}
			t.Logf("config set %v refused: %s", tc.args, strings.TrimSpace(stderr))
		}
		after, err := etcd.Get(ctx, configKey)
		if err != nil {
			t.Fatal(err)
		}
		if len(after.Kvs) != len(before.Kvs) || len(after.Kvs) == 1 && after.Kvs[0].ModRevision != before.Kvs[0].ModRevision {
			t.Fatal("the settings were stored after a refusal")
		}
	})

	t.Run("forged-config-not-applied", func(t *testing.T) {
		forged := map[string]string{
			"archive_command":          "touch " + pwned,
			"archive_mode":             "on",
			"archive_cleanup_command":  "touch " + pwned,
			"include_dir":              probeDir,
			"dynamic_library_path":     probeDir,
			"shared_preload_libraries": "no_such_library",
			"work_mem":                 "13MB",
		}
		b, _ := json.Marshal(forged)
		if _, err := etcd.Put(ctx, configKey, string(b)); err != nil {
			t.Fatal(err)
		}
		// The valid setting arrives everywhere (so the map was read), and
		// every member reports what it refused.
		for _, id := range c.IDs() {
			err := testcluster.WaitFor(ctx, id+" to apply work_mem and report the refusals", func() bool {
				st, err := c.Status(id)
				if err != nil {
					return false
				}
				p := strings.Join(st.Problems, "\n")
				return strings.Contains(p, "archive_command") && strings.Contains(p, "shared_preload_libraries") &&
					strings.Contains(p, "include_dir") && show(ctx, t, c, id, "work_mem") == "13MB"
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		st, _ := c.Status(replica)
		t.Logf("%s problems: %q", replica, st.Problems)
		// ... and records the refusal in the cluster's history.
		if err := testcluster.WaitFor(ctx, "every member's refusal event", func() bool {
			evs, _, err := store.ListEvents(ctx, etcd, c.Opts.Name, 0, 0)
			if err != nil {
				return false
			}
			seen := map[string]bool{}
			for _, ev := range evs {
				if ev.Kind == model.EventConfig && strings.Contains(ev.Reason, "refused") && strings.Contains(ev.Reason, "archive_command") {
					seen[ev.Node] = true
				}
			}
			return len(seen) == len(c.IDs())
		}); err != nil {
			t.Fatal(err)
		}
		// A restart (the replica's node dies and comes back: Postgres is
		// started again from petrel-user.conf, written while it was down
		// from the saved pg_settings) applies nothing more.
		started := func() (t0 time.Time) {
			conn, err := pgx.Connect(ctx, c.DSN(replica))
			if err == nil {
				_ = conn.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&t0)
				conn.Close(context.Background())
			}
			return t0
		}
		t0 := started()
		if err := c.Kill(replica); err != nil {
			t.Fatal(err)
		}
		if err := c.StartNode(replica); err != nil {
			t.Fatal(err)
		}
		if err := testcluster.WaitFor(ctx, replica+" to stream again after a restart", func() bool {
			st, err := c.Status(replica)
			return err == nil && st.Role == "replica" && st.Streaming && started().After(t0)
		}); err != nil {
			t.Fatal(err)
		}
		if err := c.Exec(ctx, leader, "CREATE TABLE sec_probe AS SELECT 1 AS x; SELECT pg_switch_wal()"); err != nil {
			t.Fatal(err)
		}
		for _, id := range c.IDs() {
			n, err := c.QueryInts(ctx, id, `SELECT count(*) FROM pg_settings WHERE source <> 'default'
AND (name LIKE '%command' OR name IN ('archive_mode', 'dynamic_library_path', 'shared_preload_libraries'))
AND coalesce(sourcefile, '') !~ '/petrel(-archive)?\.conf$'`) // petrel's own archiving settings
			if err != nil || n[0] != 0 {
				t.Errorf("%s: %v forged settings in effect (%v)", id, n, err)
			}
			conf, err := os.ReadFile(filepath.Join(c.Node(id).DataDir, "pgdata", "petrel-user.conf"))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(conf, []byte("command")) || bytes.Contains(conf, []byte(probeDir)) || bytes.Contains(conf, []byte("archive")) {
				t.Errorf("%s: petrel-user.conf holds forged settings:\n%s", id, conf)
			}
		}
		// A restart request written straight into the store for the leader
		// (not a safe state: only a replica streaming from a live leader,
		// or the leader asked in place by the CLI) is cleared unhonoured.
		leaderStart := func() (t0 time.Time) {
			conn, err := pgx.Connect(ctx, c.DSN(leader))
			if err == nil {
				_ = conn.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&t0)
				conn.Close(context.Background())
			}
			return t0
		}
		l0 := leaderStart()
		restartKey := "/petrel/" + c.Opts.Name + "/restart/" + leader
		req, _ := json.Marshal(store.RestartRequest{RequestedAt: time.Now(), Force: true})
		if _, err := etcd.Put(ctx, restartKey, string(req)); err != nil {
			t.Fatal(err)
		}
		if err := testcluster.WaitFor(ctx, "the leader to clear a forged restart request", func() bool {
			r, err := etcd.Get(ctx, restartKey)
			return err == nil && len(r.Kvs) == 0
		}); err != nil {
			t.Fatal(err)
		}
		if l1 := leaderStart(); l0.IsZero() || !l1.Equal(l0) {
			t.Errorf("the leader restarted for a forged request: started %v, then %v", l0, l1)
		}
		if _, err := os.Stat(pwned); err == nil {
			t.Fatal("a forged command ran")
		}
	})

	t.Run("hba", func(t *testing.T) {
		// Replication is for the replication role only, over TLS; the
		// members' own walsenders (from 127.0.0.1, a member's address)
		// show it works for them.
		login := func(user, pw, sslmode string) error {
			cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d dbname=postgres sslmode=%s connect_timeout=5", c.Node(leader).PGPort, sslmode))
			if err != nil {
				return err
			}
			cfg.User, cfg.Password = user, pw
			cfg.RuntimeParams["replication"] = "true"
			conn, err := pgconn.ConnectConfig(ctx, cfg)
			if err != nil {
				return err
			}
			return conn.Close(ctx)
		}
		if err := login("postgres", c.Secrets.Superuser, "require"); err == nil {
			t.Error("a replication connection as the superuser was accepted")
		}
		if err := login("replicator", c.Secrets.Replication, "disable"); err == nil {
			t.Error("a replication connection without TLS was accepted")
		}
		if err := login("replicator", c.Secrets.Replication, "require"); err != nil {
			t.Errorf("a replication connection from a member's address over TLS: %v", err)
		}
		hba, err := os.ReadFile(filepath.Join(c.Node(leader).DataDir, "pgdata", "pg_hba.conf"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(hba, []byte("hostssl  all          all         0.0.0.0/0")) {
			t.Errorf("pg_hba.conf does not require TLS:\n%s", hba)
		}
	})

	t.Run("operator-hardened-on-an-older-cluster", func(t *testing.T) {
		// As a cluster bootstrapped by an older petrel left it: the operator
		// with CREATEROLE (and a grant it could have given itself), no
		// functions. The member that becomes leader next (it never led, so
		// its agent has not looked yet) takes both away.
		if err := c.Exec(ctx, leader, `ALTER ROLE operator CREATEROLE; GRANT pg_execute_server_program TO operator;
DROP SCHEMA petrel CASCADE`); err != nil {
			t.Fatal(err)
		}
		if _, stderr, err := petrelCLIEnv(ctx, t, c, "OPERATOR_PASSWORD="+c.Secrets.Operator, "failover"); err != nil {
			t.Fatalf("petrel failover: %v\n%s", err, stderr)
		}
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		defer wcancel()
		if err := testcluster.WaitFor(wctx, replica+" to lead and harden the operator role", func() bool {
			n, err := c.QueryInts(wctx, replica, `SELECT count(*) FROM pg_roles WHERE rolname = 'operator' AND NOT rolcreaterole
AND NOT pg_has_role('operator', 'pg_execute_server_program', 'MEMBER') AND NOT pg_is_in_recovery()
AND EXISTS (SELECT 1 FROM pg_proc WHERE proname = 'act_as')`)
			return err == nil && n[0] == 1
		}); err != nil {
			t.Fatal(err)
		}
	})
}
