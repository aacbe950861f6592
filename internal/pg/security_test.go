package pg

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/petrel-db/petrel/internal/pki"
)

// TestUserConfRefusesCode: a stored map forged to run commands or load
// code (what anyone able to write /config in etcd could store) is checked
// against the real server's pg_settings and pkglibdir; only the harmless
// settings reach petrel-user.conf, running or stopped (saved pg_settings).
func TestUserConfRefusesCode(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := newTestServer(t, t.TempDir(), "n1")
	if err := s.Bootstrap(ctx, testSecrets); err != nil {
		t.Fatal(err)
	}
	forged := map[string]string{
		"archive_command":           "touch /tmp/petrel-pwned",
		"archive_mode":              "on",
		"archive_cleanup_command":   "touch /tmp/petrel-pwned",
		"restore_command":           "touch /tmp/petrel-pwned",
		"include_dir":               "/tmp",
		"include":                   "/tmp/evil.conf",
		"dynamic_library_path":      "/tmp",
		"session_preload_libraries": "evil",
		"jit_provider":              "../../../../tmp/evil",
		"shared_preload_libraries":  "../../tmp/evil",
		"search_path":               "x'\narchive_command = 'touch /tmp/petrel-pwned",
		"Work_Mem":                  "1MB",
		"no_such_setting":           "1",
		"work_mem":                  "13MB",
	}
	check := func(wantLive bool) {
		t.Helper()
		res, err := s.WriteUserConf(ctx, forged)
		if err != nil {
			t.Fatal(err)
		}
		if res.Live != wantLive {
			t.Errorf("Live = %v, want %v", res.Live, wantLive)
		}
		if len(res.Refused) != len(forged)-1 {
			t.Errorf("refused %d settings, want %d: %v", len(res.Refused), len(forged)-1, res.Refused)
		}
		b, err := os.ReadFile(filepath.Join(s.DataDir(), userConf))
		if err != nil {
			t.Fatal(err)
		}
		conf := string(b)
		for _, bad := range []string{"command", "archive", "include", "library", "preload", "/tmp", "jit", "search_path", "Work_Mem"} {
			if strings.Contains(conf, bad) {
				t.Errorf("petrel-user.conf holds %q:\n%s", bad, conf)
			}
		}
		if !strings.Contains(conf, "work_mem = '13MB'") {
			t.Errorf("petrel-user.conf lacks the valid work_mem:\n%s", conf)
		}
	}
	check(true)
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "work_mem 13MB", 10*time.Second, func() error {
		return s.queryRow(ctx, func(r rowScanner) error {
			var v string
			var set int
			if err := r.Scan(&v, &set); err != nil {
				return err
			}
			if v != "13MB" || set != 0 {
				return fmt.Errorf("work_mem=%s, %d forged settings applied", v, set)
			}
			return nil
		}, `SELECT current_setting('work_mem'), (SELECT count(*)::int FROM pg_settings WHERE source <> 'default'
AND (name LIKE '%command' OR name IN ('archive_mode', 'dynamic_library_path', 'session_preload_libraries',
'jit_provider', 'shared_preload_libraries', 'search_path')))`)
	})

	// A library that is installed passes; one that is not, does not.
	res, err := s.WriteUserConf(ctx, map[string]string{"shared_preload_libraries": "pg_stat_statements"})
	if err != nil || len(res.Refused) != 0 {
		t.Errorf("installed library refused: %v %v", err, res.Refused)
	}
	res, err = s.WriteUserConf(ctx, map[string]string{"shared_preload_libraries": "pg_stat_statements, no_such_lib"})
	if err != nil || len(res.Refused) != 1 {
		t.Errorf("missing library accepted: %v %v", err, res.Refused)
	}

	// Stopped: the saved pg_settings give the same answers.
	if err := s.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	check(false)
}

// TestPostgresEnvironHasNoSecrets: the agent's secrets in its own
// environment never reach the postmaster or a backend (whose environ any
// code running as the postgres user can read).
func TestPostgresEnvironHasNoSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	secrets := map[string]string{}
	for _, k := range []string{"SU_PASSWORD", "REPL_PASSWORD", "OPERATOR_PASSWORD", "EDGE_SECRET",
		"EDGE_DATABASE_URL", "ETCD_PASSWORD", "PETREL_SOMETHING_SECRET", "PGPASSWORD"} {
		v := "leak-" + strings.ToLower(k) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		t.Setenv(k, v)
		secrets[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := newTestServer(t, t.TempDir(), "n1")
	if err := s.Bootstrap(ctx, testSecrets); err != nil {
		t.Fatal(err)
	}
	var backend int
	if err := s.queryRow(ctx, func(r rowScanner) error { return r.Scan(&backend) }, "SELECT pg_backend_pid()"); err != nil {
		t.Fatal(err)
	}
	for what, pid := range map[string]int{"postmaster": s.PID(), "backend": backend} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil {
			t.Fatalf("reading the %s's environ: %v", what, err)
		}
		if len(b) == 0 {
			t.Fatalf("the %s's environ is empty: cannot prove anything", what)
		}
		for k, v := range secrets {
			if bytes.Contains(b, []byte(v)) || bytes.Contains(b, []byte(k+"=")) {
				t.Errorf("the %s (pid %d) has %s in its environment", what, pid, k)
			}
		}
		for _, kv := range bytes.Split(b, []byte{0}) {
			if k, _, _ := strings.Cut(string(kv), "="); secretName(k) {
				t.Errorf("the %s has %s in its environment", what, k)
			}
		}
		if what == "postmaster" && !bytes.Contains(b, []byte("PATH=")) {
			t.Errorf("the %s has no PATH: not its environment?", what)
		}
	}
	// A backend writes its process title over its original environ (so
	// /proc shows little); what code in a backend really sees is what a
	// program it starts inherits.
	if err := s.Exec(ctx, `CREATE TABLE env_probe (line text);
COPY env_probe FROM PROGRAM 'env' WITH (FORMAT csv, DELIMITER E'\x01', QUOTE E'\x02')`); err != nil {
		t.Fatal(err)
	}
	rows, release, err := s.Query(ctx, "SELECT line FROM env_probe")
	if err != nil {
		t.Fatal(err)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	release()
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Join(lines, "\n")
	if !strings.Contains(env, "PATH=") {
		t.Fatalf("a backend's program sees no PATH: %q", env)
	}
	for k, v := range secrets {
		if strings.Contains(env, v) || strings.Contains(env, k+"=") {
			t.Errorf("a backend's environment has %s", k)
		}
	}
	t.Logf("a backend's environment: %s", strings.Join(lines, " "))
}

// TestHBA checks pg_hba.conf on a real server with TLS: TCP needs TLS
// (plaintext only from the configured networks), the superuser logs in
// only from admin networks and members, and replication is only for the
// replication role, from members, over TLS.
func TestHBA(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := newTestServer(t, t.TempDir(), "n1")
	ca, stored, err := pki.NewCA("hba", testSecrets.Superuser)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("n1", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.InstallTLS(cert, key, []byte(stored.CertPEM)); err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap(ctx, testSecrets); err != nil {
		t.Fatal(err)
	}
	reconfigure := func(a Access, peers []string) {
		t.Helper()
		s.opts.Access = a
		if err := s.SetPeers(ctx, peers); err != nil {
			t.Fatal(err)
		}
		if _, err := s.writeHBA(); err != nil {
			t.Fatal(err)
		}
		if err := s.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // the reload is asynchronous
	}
	pw := map[string]string{"postgres": testSecrets.Superuser, "operator": testSecrets.Operator, "replicator": testSecrets.Replication}
	login := func(user, sslmode string, replication bool) error {
		cfg, err := pgconn.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d dbname=postgres sslmode=%s connect_timeout=5", s.opts.Port, sslmode))
		if err != nil {
			return err
		}
		cfg.User, cfg.Password = user, pw[user]
		if replication {
			cfg.RuntimeParams["replication"] = "true"
		}
		c, err := pgconn.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		return c.Close(ctx)
	}
	type probe struct {
		user, sslmode string
		replication   bool
		ok            bool
	}
	run := func(phase string, probes []probe) {
		t.Helper()
		for _, p := range probes {
			err := login(p.user, p.sslmode, p.replication)
			if (err == nil) != p.ok {
				t.Errorf("%s: %s sslmode=%s replication=%v: err=%v, want ok=%v", phase, p.user, p.sslmode, p.replication, err, p.ok)
			}
		}
	}

	reconfigure(Access{}, nil)
	run("defaults", []probe{
		{"operator", "require", false, true},
		{"operator", "disable", false, false}, // TLS required, loopback too
		{"postgres", "require", false, true},  // loopback is the default admin network
		{"postgres", "disable", false, false},
		{"replicator", "require", true, false}, // not a member's address
	})
	reconfigure(Access{}, []string{"127.0.0.1"})
	run("members", []probe{
		{"replicator", "require", true, true},
		{"replicator", "disable", true, false}, // replication needs TLS
		{"postgres", "require", true, false},   // only the replication role replicates
		{"operator", "require", true, false},
	})
	reconfigure(Access{LoopbackPlaintext: true}, []string{"127.0.0.1"})
	run("loopback plaintext", []probe{
		{"operator", "disable", false, true},
		{"postgres", "disable", false, true},
		{"replicator", "disable", true, false},
	})
	reconfigure(Access{AdminNetworks: []string{"192.0.2.0/24"}}, []string{"198.51.100.7"})
	run("admin elsewhere", []probe{
		{"postgres", "require", false, false}, // loopback is no admin network now, nor a member
		{"operator", "require", false, true},
		{"replicator", "require", true, false},
	})
	reconfigure(Access{PlaintextNetworks: []string{"127.0.0.0/8"}}, nil)
	run("plaintext network", []probe{
		{"operator", "disable", false, true},
		{"postgres", "disable", false, true}, // an admin network that is a plaintext one too
		{"replicator", "disable", true, false},
	})
}
