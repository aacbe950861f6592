package pg

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestOwnSettings: what a restart may apply is what petrel's files set; a
// change made with ALTER SYSTEM waits for a restart too, but is not
// petrel's (engine.restartActions refuses a restart for it).
func TestOwnSettings(t *testing.T) {
	if testing.Short() {
		t.Skip("needs PostgreSQL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := newTestServer(t, t.TempDir(), "n1")
	if err := s.Bootstrap(ctx, testSecrets); err != nil {
		t.Fatal(err)
	}
	if _, err := s.WriteUserConf(ctx, map[string]string{"work_mem": "8MB"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Exec(ctx, "ALTER SYSTEM SET max_worker_processes = 9"); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	own, err := s.OwnSettings()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"listen_addresses", "port", "max_connections", "shared_buffers", "work_mem"} {
		if !slices.Contains(own, n) {
			t.Errorf("petrel's files set %s, OwnSettings %v", n, own)
		}
	}
	waitFor(t, "max_worker_processes pending", 10*time.Second, func() error {
		pending, err := s.PendingRestart(ctx)
		if err != nil {
			return err
		}
		if !slices.Contains(pending, "max_worker_processes") {
			return fmt.Errorf("pending %v", pending)
		}
		return nil
	})
	// A client silent after TLS is cut by Postgres within 10 s, not 60 s.
	rows, done, err := s.Query(ctx, "SELECT setting FROM pg_settings WHERE name = 'authentication_timeout'")
	if err != nil {
		t.Fatal(err)
	}
	var authTimeout string
	for rows.Next() {
		if err := rows.Scan(&authTimeout); err != nil {
			t.Fatal(err)
		}
	}
	done()
	if authTimeout != "10" {
		t.Errorf("authentication_timeout = %q s, want 10", authTimeout)
	}
	if slices.Contains(own, "max_worker_processes") {
		t.Fatalf("an ALTER SYSTEM setting counted as petrel's: %v", own)
	}
}
