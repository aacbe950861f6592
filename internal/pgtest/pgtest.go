// Package pgtest starts throwaway PostgreSQL servers (a primary, and
// streaming replicas of it) for tests outside internal/pg, through
// internal/pg's own lifecycle code, so they work as root (Postgres runs
// as the postgres OS user) and as an ordinary user alike.
package pgtest

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/pki"
)

// Secrets are the test servers' passwords; the superuser's has URL
// metacharacters so callers' URL handling is exercised.
var Secrets = config.Secrets{Superuser: "su p@ss/w:rd", Replication: "repl-secret", Operator: "op-secret"}

// Server is a running test server.
type Server struct {
	*pg.Server
	Port int
}

// URL is a superuser URL for database postgres over TCP (no TLS).
func (s *Server) URL() string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword("postgres", Secrets.Superuser),
		Host:     net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)),
		Path:     "/postgres",
		RawQuery: "sslmode=disable&connect_timeout=5",
	}
	return u.String()
}

// Skip skips t when no PostgreSQL server binaries are installed, or
// when running as root without a postgres OS user, or in -short mode.
func Skip(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs PostgreSQL (skipped in -short)")
	}
	if _, err := exec.LookPath("pg_config"); err != nil {
		t.Skip("pg_config not found: PostgreSQL is not installed")
	}
	if os.Geteuid() == 0 {
		if _, err := user.Lookup("postgres"); err != nil {
			t.Skip("running as root without a postgres OS user")
		}
	}
}

// Start bootstraps and starts a primary, stopped when t ends.
func Start(t testing.TB) *Server {
	t.Helper()
	Skip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := newServer(t, "primary")
	if err := s.Bootstrap(ctx, Secrets); err != nil {
		t.Fatal(err)
	}
	return s
}

// StartTLS is Start with TLS on: a server certificate for 127.0.0.1 from
// a throwaway CA (returned, PEM), as an agent installs before it starts
// Postgres. Plaintext stays allowed from loopback.
func StartTLS(t testing.TB) (*Server, []byte) {
	t.Helper()
	Skip(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := newServer(t, "primary")
	ca, stored, err := pki.NewCA("pgtest", Secrets.Superuser)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("primary", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.InstallTLS(cert, key, []byte(stored.CertPEM)); err != nil {
		t.Fatal(err)
	}
	if err := s.Bootstrap(ctx, Secrets); err != nil {
		t.Fatal(err)
	}
	return s, []byte(stored.CertPEM)
}

// Empty is a server on an empty data directory, not started (for a
// restore to fill), stopped and removed when t ends; URL works once it
// holds a cluster whose superuser has Secrets' password.
func Empty(t testing.TB) *Server {
	t.Helper()
	Skip(t)
	return newServer(t, "restored")
}

// StartReplica clones primary with pg_basebackup and starts it as a
// streaming hot standby, stopped when t ends. It returns once the
// replica accepts connections.
func StartReplica(t testing.TB, primary *Server) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := newServer(t, "replica")
	src := pg.ConnInfo{Host: "127.0.0.1", Port: primary.Port, User: "replicator", Password: Secrets.Replication}
	if err := s.BaseBackup(ctx, src); err != nil {
		t.Fatal(err)
	}
	if err := s.ConfigureStandby(&src, "", "pgtest-replica"); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for {
		st, err := s.Status(ctx)
		if err == nil && st.Running && st.InRecovery && st.Streaming {
			return s
		}
		if ctx.Err() != nil {
			t.Fatalf("replica did not start streaming: %+v, %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newServer(t testing.TB, name string) *Server {
	t.Helper()
	// Not t.TempDir: its path grows with the test name, and the unix
	// socket's path must stay under 108 bytes.
	base, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	s, err := pg.New(pg.Options{
		DataDir: filepath.Join(base, name, "pgdata"),
		RunDir:  filepath.Join(base, name, "run"),
		Host:    "127.0.0.1",
		Port:    port,
		RunAs:   "postgres",
		Logger:  slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})).With("pg", name),
		// Tests connect over loopback without TLS (no certificate here).
		Access: pg.Access{LoopbackPlaintext: true},
	})
	if err != nil {
		os.RemoveAll(base)
		t.Fatal(err)
	}
	// The replica clones and streams from 127.0.0.1: a member's address.
	if err := s.SetPeers(context.Background(), []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(context.Background(), "immediate"); err != nil {
			t.Errorf("stopping test postgres %s: %v", name, err)
		}
		s.Close()
		if t.Failed() {
			if data, err := os.ReadFile(s.ServerLog()); err == nil {
				t.Logf("%s server log (tail):\n%s", name, tailString(string(data), 3000))
			}
		}
		os.RemoveAll(base)
	})
	return &Server{Server: s, Port: port}
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tailString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return fmt.Sprint("...", s[len(s)-n:])
}
