package pg

import (
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/config"
)

var testSecrets = config.Secrets{Superuser: "su-p@ss:w'rd", Replication: "repl secret", Operator: "op\\pw"}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newTestServer(t *testing.T, base, name string) *Server {
	t.Helper()
	if _, err := exec.LookPath("pg_config"); err != nil {
		t.Fatal("pg_config not found: install PostgreSQL (scripts/install-deps.sh does)")
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			t.Fatal("running as root without a postgres OS user to run PostgreSQL as (scripts/install-deps.sh creates it)")
		}
	}
	s, err := New(Options{
		DataDir: filepath.Join(base, name, "pgdata"),
		RunDir:  filepath.Join(base, name, "run"),
		Host:    "127.0.0.1",
		Port:    freePort(t),
		RunAs:   "postgres",
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name),
		// Tests connect over loopback without TLS (no certificate here).
		Access: Access{LoopbackPlaintext: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Standbys clone and stream from 127.0.0.1: a member's address.
	if err := s.SetPeers(context.Background(), []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(context.Background(), "immediate"); err != nil {
			t.Errorf("cleanup stop %s: %v", name, err)
		}
		s.Close()
		if t.Failed() {
			if data, err := os.ReadFile(s.ServerLog()); err == nil {
				t.Logf("%s server log:\n%s", name, tail(string(data), 4000))
			}
		}
	})
	return s
}

func tcpConnect(ctx context.Context, port int, user, password string) error {
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d dbname=postgres sslmode=disable connect_timeout=2", port))
	if err != nil {
		return err
	}
	cfg.User, cfg.Password = user, password
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	return c.Close(ctx)
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func countRows(ctx context.Context, s *Server) (int, error) {
	rows, release, err := s.Query(ctx, "SELECT count(*) FROM t")
	if err != nil {
		return 0, err
	}
	defer release()
	return pgx.CollectExactlyOneRow(rows, pgx.RowTo[int])
}

func wantRows(t *testing.T, ctx context.Context, s *Server, n int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d rows", n), 20*time.Second, func() error {
		got, err := countRows(ctx, s)
		if err != nil {
			return err
		}
		if got != n {
			return fmt.Errorf("have %d rows", got)
		}
		return nil
	})
}

func waitStreaming(t *testing.T, ctx context.Context, s *Server, tli uint32) Status {
	t.Helper()
	var st Status
	waitFor(t, "streaming", 30*time.Second, func() error {
		var err error
		st, err = s.Status(ctx)
		if err != nil {
			return err
		}
		if !st.InRecovery || !st.Streaming || st.Timeline != tli {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	return st
}

func TestServerLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	base := t.TempDir()

	// --- Bootstrap a primary.
	n1 := newTestServer(t, base, "n1")
	if n1.Initialized() {
		t.Fatal("fresh data dir reports initialized")
	}
	if st, err := n1.Status(ctx); err != nil || st.Running {
		t.Fatalf("status of stopped server = %+v, %v", st, err)
	}
	if err := n1.Bootstrap(ctx, testSecrets); err != nil {
		t.Fatal(err)
	}
	if !n1.Initialized() || !n1.Running() || n1.PID() == 0 {
		t.Fatal("bootstrapped server not initialized/running")
	}
	// Bootstrap is idempotent.
	if err := n1.Bootstrap(ctx, testSecrets); err != nil {
		t.Fatalf("second bootstrap: %v", err)
	}
	st, err := n1.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Running || st.InRecovery || st.Timeline != 1 || st.CurrentLSN == 0 || st.ReadOnly {
		t.Fatalf("primary status = %+v", st)
	}
	if err := n1.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	if err := n1.Exec(ctx, "INSERT INTO t VALUES ($1)", 1); err != nil {
		t.Fatal(err)
	}

	// Passwords work over TCP; wrong ones don't; none leaked to the log.
	for _, c := range []struct{ user, pw string }{
		{"postgres", testSecrets.Superuser}, {"replicator", testSecrets.Replication}, {"operator", testSecrets.Operator},
	} {
		if err := tcpConnect(ctx, n1.opts.Port, c.user, c.pw); err != nil {
			t.Errorf("login as %s: %v", c.user, err)
		}
		if err := tcpConnect(ctx, n1.opts.Port, c.user, c.pw+"x"); err == nil {
			t.Errorf("login as %s with a wrong password succeeded", c.user)
		}
	}
	if data, _ := os.ReadFile(n1.ServerLog()); strings.Contains(string(data), "SCRAM-SHA-256$") ||
		strings.Contains(string(data), testSecrets.Replication) {
		t.Error("server log contains a password or verifier")
	}

	// ClientSessions lists an authenticated TCP client by its own address
	// and port, and not one still silent in authentication; it gives
	// petrel's authentication_timeout.
	checkClientSessions(t, ctx, n1)

	// --- Slots.
	for range 2 {
		if err := n1.CreateSlot(ctx, "node2"); err != nil {
			t.Fatal(err)
		}
	}
	if err := n1.CreateSlot(ctx, "tmp"); err != nil {
		t.Fatal(err)
	}
	if slots, err := n1.Slots(ctx); err != nil || !slices.Equal(slots, []string{"node2", "tmp"}) {
		t.Fatalf("slots = %v, %v", slots, err)
	}
	for range 2 {
		if err := n1.DropSlot(ctx, "tmp"); err != nil {
			t.Fatal(err)
		}
	}

	// --- Clone a standby.
	n2 := newTestServer(t, base, "n2")
	repl1 := ConnInfo{Host: "127.0.0.1", Port: n1.opts.Port, User: "replicator", Password: testSecrets.Replication}
	if err := n2.BaseBackup(ctx, repl1); err != nil {
		t.Fatal(err)
	}
	if err := n2.ConfigureStandby(&repl1, "node2", "node2"); err != nil {
		t.Fatal(err)
	}
	if err := n2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	st2 := waitStreaming(t, ctx, n2, 1)
	if st2.UpstreamPort != n1.opts.Port || st2.UpstreamHost != "127.0.0.1" || st2.ReceivedTLI != 1 {
		t.Errorf("standby status = %+v", st2)
	}
	if err := n1.Exec(ctx, "INSERT INTO t VALUES (2)"); err != nil {
		t.Fatal(err)
	}
	wantRows(t, ctx, n2, 2)
	if st2, err = n2.Status(ctx); err != nil || st2.ReplayLSN == 0 || st2.CurrentLSN < st2.ReplayLSN {
		t.Errorf("standby status = %+v, %v", st2, err)
	}

	// --- Replication view and quorum sync.
	if err := n1.SetSynchronousStandbys(ctx, `ANY 1 ("node2")`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "quorum standby", 20*time.Second, func() error {
		sbs, err := n1.Replication(ctx)
		if err != nil {
			return err
		}
		if len(sbs) != 1 || sbs[0].AppName != "node2" || sbs[0].State != "streaming" || sbs[0].SyncState != "quorum" ||
			sbs[0].FlushLSN == 0 || sbs[0].ClientAddr != "127.0.0.1" {
			return fmt.Errorf("standbys = %+v", sbs)
		}
		return nil
	})
	if st, err = n1.Status(ctx); err != nil || st.SyncStandbyNames != `ANY 1 ("node2")` {
		t.Fatalf("primary status = %+v, %v", st, err)
	}
	if err := n1.Exec(ctx, "INSERT INTO t VALUES (3)"); err != nil { // needs the standby's ack
		t.Fatal(err)
	}
	wantRows(t, ctx, n2, 3)

	// --- Fail over: stop n1 hard, promote n2.
	if err := n1.Stop(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}
	if n1.Running() || n1.PID() != 0 {
		t.Fatal("n1 still running")
	}
	if err := n1.Stop(ctx, "fast"); err != nil {
		t.Fatalf("stopping a stopped server: %v", err)
	}
	if c, err := n1.Control(ctx); err != nil || c.State != "in production" || c.Timeline != 1 || c.CheckpointLSN == 0 {
		t.Fatalf("n1 control = %+v, %v", c, err)
	}
	if err := n2.Promote(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n2.Promote(ctx); err != nil { // idempotent
		t.Fatal(err)
	}
	if err := n2.ConfigurePrimary(); err != nil {
		t.Fatal(err)
	}
	if st2, err = n2.Status(ctx); err != nil || st2.InRecovery || st2.Timeline != 2 {
		t.Fatalf("promoted status = %+v, %v", st2, err)
	}
	if c, err := n2.Control(ctx); err != nil || c.Timeline != 2 {
		t.Fatalf("n2 control after promote = %+v, %v", c, err)
	}
	if err := n2.Exec(ctx, "INSERT INTO t VALUES (4)"); err != nil {
		t.Fatal(err)
	}
	// A promoted standby must not report a restart nobody asked for
	// (regression: removing recovery_target_timeline from the files
	// marked it pending_restart, failing rolling config restarts).
	if err := n2.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "reload seen", 10*time.Second, func() error {
		var pending []string
		for range 3 {
			p, err := n2.PendingRestart(ctx)
			if err != nil {
				return err
			}
			pending = append(pending, p...)
			time.Sleep(100 * time.Millisecond)
		}
		if len(pending) > 0 {
			t.Fatalf("promoted server pending a restart for %v", pending)
		}
		return nil
	})

	// Make n1 diverge: restart it as a primary and commit locally.
	if err := n1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n1.Exec(ctx, "BEGIN; SET LOCAL synchronous_commit = local; INSERT INTO t VALUES (100); COMMIT"); err != nil {
		t.Fatal(err)
	}
	if err := n1.Stop(ctx, "immediate"); err != nil {
		t.Fatal(err)
	}

	// --- Rewind n1 and follow n2.
	if err := n1.Rewind(ctx, ConnInfo{Host: "127.0.0.1", Port: n2.opts.Port, User: "postgres", Password: testSecrets.Superuser}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(n1.opts.RunDir, superPassFile)); !os.IsNotExist(err) {
		t.Errorf("superuser passfile left behind: %v", err)
	}
	// Every WAL segment the rewind left has an archive status: none will
	// be archived by n1 later unless it was already waiting to be.
	checkWALStatus(t, n1)
	if n1.RewindInterrupted() {
		t.Error("a rewind that succeeded is reported unfinished")
	}
	if err := n2.CreateSlot(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	repl2 := ConnInfo{Host: "127.0.0.1", Port: n2.opts.Port, User: "replicator", Password: testSecrets.Replication}
	if err := n1.ConfigureStandby(&repl2, "node1", "node1"); err != nil {
		t.Fatal(err)
	}
	if err := n1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, ctx, n1, 2)
	if st, err = n1.Status(ctx); err != nil || st.SyncStandbyNames != "" {
		t.Errorf("rewound standby status = %+v, %v", st, err)
	}
	if err := n2.Exec(ctx, "INSERT INTO t VALUES (5)"); err != nil {
		t.Fatal(err)
	}
	wantRows(t, ctx, n1, 5)

	// Detach via Reload with no primary: the walreceiver stops.
	if err := n1.ConfigureStandby(nil, "", "node1"); err != nil {
		t.Fatal(err)
	}
	if err := n1.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "walreceiver to stop", 20*time.Second, func() error {
		st, err := n1.Status(ctx)
		if err != nil {
			return err
		}
		if st.Streaming || !st.InRecovery {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})

	// --- DropSlot on an (until recently) active slot, with a fresh
	// reconnection racing it.
	if err := n1.ConfigureStandby(&repl2, "node1", "node1"); err != nil {
		t.Fatal(err)
	}
	if err := n1.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	waitStreaming(t, ctx, n1, 2)
	if err := n2.DropSlot(ctx, "node1"); err != nil {
		t.Fatal(err)
	}
	if slots, err := n2.Slots(ctx); err != nil || slices.Contains(slots, "node1") {
		t.Fatalf("slots after drop = %v, %v", slots, err)
	}

	// Wipe refuses while running, works when stopped.
	if err := n1.Wipe(); err == nil {
		t.Fatal("Wipe of a running server succeeded")
	}
	if err := n1.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if c, err := n1.Control(ctx); err != nil || c.State != "shut down in recovery" {
		t.Errorf("n1 control = %+v, %v", c, err)
	}
	if err := n1.Wipe(); err != nil {
		t.Fatal(err)
	}
	if n1.Initialized() {
		t.Fatal("initialized after wipe")
	}
}

func checkClientSessions(t *testing.T, ctx context.Context, s *Server) {
	t.Helper()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d dbname=postgres sslmode=disable connect_timeout=5 user=operator", s.opts.Port))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Password = testSecrets.Operator
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	authed := netip.MustParseAddrPort(c.PgConn().Conn().LocalAddr().String())
	silent, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.opts.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	// A startup packet, then nothing: the backend waits for the password.
	startup := binary.BigEndian.AppendUint32(nil, 0)
	startup = binary.BigEndian.AppendUint32(startup, 196608)
	startup = append(startup, "user\x00operator\x00database\x00postgres\x00\x00"...)
	binary.BigEndian.PutUint32(startup, uint32(len(startup)))
	if _, err := silent.Write(startup); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := silent.Read(b[:]); err != nil || b[0] != 'R' {
		t.Fatalf("no authentication request for the silent client: %q, %v", b[0], err)
	}
	silentAddr := netip.MustParseAddrPort(silent.LocalAddr().String())
	ss, err := s.ClientSessions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ss.AuthTimeout != 10*time.Second {
		t.Errorf("AuthTimeout = %v, want petrel's 10s", ss.AuthTimeout)
	}
	if !slices.Contains(ss.Authenticated, authed) {
		t.Errorf("authenticated session %v not listed in %v", authed, ss.Authenticated)
	}
	if slices.Contains(ss.Authenticated, silentAddr) {
		t.Errorf("session %v still authenticating is listed as authenticated", silentAddr)
	}
}

// checkWALStatus fails t for a WAL segment in s's pg_wal with neither
// .ready nor .done.
func checkWALStatus(t *testing.T, s *Server) {
	t.Helper()
	dir := filepath.Join(s.opts.DataDir, "pg_wal")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if !walSegmentName.MatchString(e.Name()) {
			continue
		}
		n++
		_, r := os.Stat(filepath.Join(dir, "archive_status", e.Name()+".ready"))
		_, d := os.Stat(filepath.Join(dir, "archive_status", e.Name()+".done"))
		if r != nil && d != nil {
			t.Errorf("WAL segment %s has no archive status after the rewind", e.Name())
		}
	}
	if n == 0 {
		t.Error("no WAL segment in pg_wal after the rewind")
	}
}

// TestBootstrapInterrupted: a bootstrap that stops between initdb and the
// roles' passwords (here its first start fails: the port is taken) leaves
// the marker, so the agent hands the directory to Bootstrap again rather
// than starting a cluster whose roles have no passwords; the next
// Bootstrap finishes it. An initdb that stopped half way is run again.
func TestBootstrapInterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newTestServer(t, t.TempDir(), "n1")
	taken, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", s.opts.Port))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap(ctx, testSecrets); err == nil {
		t.Fatal("bootstrap on a taken port succeeded")
	}
	taken.Close()
	if !s.Initialized() || !s.BootstrapUnfinished() {
		t.Fatalf("after a failed first start: initialized %v, unfinished %v (want both)", s.Initialized(), s.BootstrapUnfinished())
	}
	if err := s.Bootstrap(ctx, testSecrets); err != nil {
		t.Fatalf("finishing the bootstrap: %v", err)
	}
	if s.BootstrapUnfinished() {
		t.Fatal("the marker outlived a finished bootstrap")
	}
	if err := tcpConnect(ctx, s.opts.Port, "operator", testSecrets.Operator); err != nil {
		t.Fatalf("the finished bootstrap's roles: %v", err)
	}

	// initdb stopped half way: only the marker's phase tells; the
	// directory is wiped and initialized again.
	if err := s.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	if err := s.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("stopped server answered")
	}
	if err := s.setBootstrapPhase(bootstrapInitdb); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(s.opts.DataDir, "global", "pg_control")); err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap(ctx, testSecrets); err != nil {
		t.Fatalf("bootstrap after a half initdb: %v", err)
	}
	if s.BootstrapUnfinished() {
		t.Fatal("the marker outlived a finished bootstrap")
	}
	if err := tcpConnect(ctx, s.opts.Port, "postgres", testSecrets.Superuser); err != nil {
		t.Fatalf("after re-running initdb: %v", err)
	}
}
