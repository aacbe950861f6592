package pg

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Outputs of PostgreSQL 15's pg_rewind, captured from real runs (the
// crash-recovery chatter of the single-user backend trimmed).
var rewindOutputs = []struct {
	name string
	out  string
	want error
}{
	{"source down", `pg_rewind: error: connection to server at "127.0.0.1", port 25439 failed: Connection refused
	Is the server running on that host and accepting TCP/IP connections?`, ErrRewindUnavailable},
	{"source silent", `pg_rewind: error: connection to server at "127.0.0.1", port 25440 failed: timeout expired`, ErrRewindUnavailable},
	{"source hangs up", `pg_rewind: error: connection to server at "127.0.0.1", port 25441 failed: server closed the connection unexpectedly
	This probably means the server terminated abnormally
	before or while processing the request.`, ErrRewindUnavailable},
	{"login refused", `pg_rewind: error: connection to server at "127.0.0.1", port 25431 failed: FATAL:  no pg_hba.conf entry for host "10.0.0.5", user "postgres", database "postgres", SSL encryption`, ErrRewindUnavailable},
	{"different systems", `pg_rewind: error: source and target clusters are from different systems`, ErrRewindImpossible},
	{"target WAL gone", `pg_rewind: executing "/usr/lib/postgresql/15/bin/postgres" for target server to complete crash recovery
2026-12-02 05:51:21.475 UTC [12215] LOG:  database system was not properly shut down; automatic recovery in progress
PostgreSQL stand-alone backend 15.18 (Debian 15.18-0+deb12u1)
pg_rewind: servers diverged at WAL location 0/3000000 on timeline 1
pg_rewind: error: could not open file "b/pg_wal/000000010000000000000002": No such file or directory
pg_rewind: error: could not find previous WAL record at 0/2000100`, ErrRewindImpossible},
	{"no common ancestor", `pg_rewind: error: could not find common ancestor of the source and target cluster's timelines`, ErrRewindImpossible},
	{"no hints", `pg_rewind: error: target server needs to use either data checksums or "wal_log_hints = on"`, ErrRewindImpossible},
	{"connection lost while copying", `pg_rewind: servers diverged at WAL location 0/30000A0 on timeline 1
pg_rewind: rewinding from last common checkpoint at 0/3000028 on timeline 1
pg_rewind: error: could not fetch remote file "base/5/16384": server closed the connection unexpectedly`, ErrRewindImpossible},
	{"unexplained", `pg_rewind: error: could not open target file "global/pg_control": Permission denied`, ErrRewindImpossible},
}

func TestClassifyRewind(t *testing.T) {
	run := errors.New("exit status 1")
	for _, tc := range rewindOutputs {
		t.Run(tc.name, func(t *testing.T) {
			err := classifyRewind(tc.out, run, nil)
			if !errors.Is(err, tc.want) || !errors.Is(err, run) {
				t.Fatalf("classified as %v, want %v", err, tc.want)
			}
			other := ErrRewindImpossible
			if tc.want == ErrRewindImpossible {
				other = ErrRewindUnavailable
			}
			if errors.Is(err, other) {
				t.Fatalf("classified as both: %v", err)
			}
		})
	}
	// Stopped by its context: before it began, the data directory is
	// untouched; after, it may be half rewritten.
	if err := classifyRewind("", run, context.DeadlineExceeded); !errors.Is(err, ErrRewindUnavailable) {
		t.Fatalf("a rewind stopped before it began: %v", err)
	}
	if err := classifyRewind("pg_rewind: rewinding from last common checkpoint at 0/3000028 on timeline 1\n", run, context.DeadlineExceeded); !errors.Is(err, ErrRewindImpossible) {
		t.Fatalf("a rewind stopped while rewriting: %v", err)
	}
}

// TestRewindErrors runs pg_rewind on a real former primary against a
// source that is down, one that never answers, and one from another
// system: the first two keep the data directory usable and ask for a
// retry, the last asks for a re-clone.
func TestRewindErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	base := t.TempDir()
	n1 := newTestServer(t, base, "n1")
	if err := n1.Bootstrap(ctx, testSecrets); err != nil {
		t.Fatal(err)
	}
	if err := n1.Exec(ctx, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	if err := n1.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	src := func(port int) ConnInfo {
		return ConnInfo{Host: "127.0.0.1", Port: port, User: "postgres", Password: testSecrets.Superuser}
	}

	// Nothing listens: refused.
	if err := n1.Rewind(ctx, src(freePort(t))); !errors.Is(err, ErrRewindUnavailable) {
		t.Fatalf("rewind against a closed port: %v", err)
	}
	// A source that accepts and says nothing: libpq's connect_timeout.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, silent, until the test ends
		}
	}()
	err = n1.Rewind(ctx, src(l.Addr().(*net.TCPAddr).Port))
	t.Logf("silent source: %v", err)
	if !errors.Is(err, ErrRewindUnavailable) {
		t.Fatalf("rewind against a silent source: %v", err)
	}
	// Both kept the data directory: it starts with its row.
	if err := n1.Start(ctx); err != nil {
		t.Fatalf("starting after failed rewinds: %v", err)
	}
	wantRows(t, ctx, n1, 1)
	if err := n1.Stop(ctx, "fast"); err != nil {
		t.Fatal(err)
	}

	// Another cluster: its history has nothing in common with n1's.
	n2 := newTestServer(t, base, "n2")
	if err := n2.Bootstrap(ctx, testSecrets); err != nil {
		t.Fatal(err)
	}
	err = n1.Rewind(ctx, src(n2.opts.Port))
	if !errors.Is(err, ErrRewindImpossible) || errors.Is(err, ErrRewindUnavailable) {
		t.Fatalf("rewind against another system: %v", err)
	}
}

// TestRewindInterrupted: the marker a rewind leaves until it succeeds
// (as an agent killed while pg_rewind ran leaves it) says the rewind is
// unfinished until Wipe clears the data directory.
func TestRewindInterrupted(t *testing.T) {
	dir := t.TempDir()
	s := &Server{opts: Options{DataDir: filepath.Join(dir, "pgdata")}, log: slog.New(slog.DiscardHandler), uid: -1}
	if err := os.MkdirAll(s.opts.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if s.RewindInterrupted() {
		t.Fatal("interrupted before any rewind")
	}
	if err := writeSynced(s.rewindMarker(), ""); err != nil {
		t.Fatal(err)
	}
	if !s.RewindInterrupted() {
		t.Fatal("the marker of an unfinished rewind not seen")
	}
	if err := s.Wipe(); err != nil {
		t.Fatal(err)
	}
	if s.RewindInterrupted() {
		t.Fatal("still interrupted after the data directory was wiped")
	}
}
