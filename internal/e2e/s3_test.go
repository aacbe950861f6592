package e2e

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// TestS3Backups: the S3 path end to end, on an S3 protocol server
// (gofakes3 over HTTP): a cluster archives to it with the credentials in
// its members' secrets file, `petrel backup create` stores a base backup
// there, and `petrel restore --from s3://...` (the credentials from the
// CLI's secrets file) restores every acknowledged write.
func TestS3Backups(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	be := s3mem.New()
	if err := be.CreateBucket("petrel"); err != nil {
		t.Fatal(err)
	}
	s3 := httptest.NewServer(gofakes3.New(be).Server())
	defer s3.Close()

	c := newCluster(t, ctx)
	f, err := os.OpenFile(c.SecretsFile(), os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("AWS_ACCESS_KEY_ID=petrel-test\nAWS_SECRET_ACCESS_KEY=petrel-test-secret\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	putBackupConfig(ctx, t, c, model.BackupConfig{Kind: "s3", Endpoint: s3.URL, Bucket: "petrel", Prefix: "prod", ArchiveTimeoutSec: 2})
	leader := startNodes(ctx, t, c, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"})
	waitSync(ctx, t, c, leader)
	if err := c.Exec(ctx, leader, "CREATE TABLE acked (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	flags := c.CLIFlags()
	if out, err := exec.CommandContext(ctx, binary(t), append([]string{"backup", "create"}, flags...)...).CombinedOutput(); err != nil {
		t.Fatalf("petrel backup create: %v\n%s", err, out)
	}
	if err := c.Exec(ctx, leader, "INSERT INTO acked SELECT generate_series(1, 1000)"); err != nil {
		t.Fatal(err)
	}
	if err := c.Exec(ctx, leader, "SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	waitArchived(ctx, t, c, leader, 1)
	// (A failure at startup, before the system id is recorded, is fine.)
	if s, _ := c.Status(leader); s.Archive == nil || !s.Archive.ChainOK || (s.Archive.LastFailure != "" && s.Archive.FailureAt.After(s.Archive.LastAt)) {
		t.Fatalf("archive status on S3: %+v", s.Archive)
	}

	into := filepath.Join(t.TempDir(), "fork")
	from := "s3://petrel/prod?endpoint=" + url.QueryEscape(s3.URL)
	out, err := exec.CommandContext(ctx, binary(t), "restore", "--from", from, "--secrets-file", c.SecretsFile(), "--latest", "--into", into).CombinedOutput()
	if err != nil {
		t.Fatalf("petrel restore --from %s: %v\n%s", from, err, out)
	}
	// The restored data, started on its own.
	run, err := os.MkdirTemp("", "s3r-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(run)
	port, err := testcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := pg.New(pg.Options{DataDir: filepath.Join(into, "nodes", "scl1", "pgdata"), RunDir: run, Host: "127.0.0.1", Port: port,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), Access: pg.Access{LoopbackPlaintext: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Stop(context.Background(), "immediate"); srv.Close() }()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	rows, done, err := srv.Query(ctx, "SELECT id FROM acked")
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	done()
	if err != nil || len(ids) != 1000 {
		t.Fatalf("restored from S3: %d rows, %v; want 1000", len(ids), err)
	}
}
