package backup

import (
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pgtest"
)

func TestParseTarget(t *testing.T) {
	for _, c := range []struct {
		id, at, lsn string
		latest      bool
		ok          bool
	}{
		{id: "b1", ok: true},
		{at: "2026-12-02T16:30:00Z", ok: true},
		{lsn: "0/3000060", ok: true},
		{latest: true, ok: true},
		{},
		{id: "b1", latest: true},
		{at: "yesterday"},
		{lsn: "3000060"},
	} {
		_, err := ParseTarget(c.id, c.at, c.lsn, c.latest)
		if (err == nil) != c.ok {
			t.Errorf("ParseTarget(%q, %q, %q, %v): %v", c.id, c.at, c.lsn, c.latest, err)
		}
	}
}

// archiveAll pushes every complete segment of srv's pg_wal (after a WAL
// switch) to st, as the archiver would have.
func archiveAll(t *testing.T, ctx context.Context, srv *pgtest.Server, stores ...backupstore.Store) {
	t.Helper()
	c := connect(t, ctx, srv.URL())
	defer c.Close(ctx)
	// Every segment before the one being written is complete.
	var cur string
	if _, err := c.Exec(ctx, "SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_insert_lsn())").Scan(&cur); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(srv.DataDir(), "pg_wal")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if _, ok := ParseSegment(e.Name()); !ok || e.Name() >= cur {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.Size() != SegmentSize {
			t.Fatalf("pg_wal/%s: %d bytes", e.Name(), fi.Size())
		}
		for _, st := range stores {
			if _, err := Push(ctx, st, e.Name(), filepath.Join(dir, e.Name()), "primary"); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func connect(t *testing.T, ctx context.Context, url string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// restoreTo restores plan into a new server and returns the ids of table
// t in it (nil and the error when the restore failed).
func restoreTo(t *testing.T, ctx context.Context, st backupstore.Store, target Target) ([]int, error) {
	t.Helper()
	plan, err := PlanRestore(ctx, st, target)
	if err != nil {
		return nil, err
	}
	srv := pgtest.Empty(t)
	if _, err := Restore(ctx, st, plan, RestoreOptions{Server: srv.Server, WALDir: filepath.Join(filepath.Dir(srv.DataDir()), "wal"), Secrets: pgtest.Secrets}); err != nil {
		return nil, err
	}
	if srv.Running() {
		t.Fatal("the restored server was left running")
	}
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	c := connect(t, ctx, srv.URL())
	defer c.Close(ctx)
	var ids []int
	if err := c.QueryRow(ctx, "SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM t").Scan(&ids); err != nil {
		t.Fatal(err)
	}
	var inRecovery bool
	if err := c.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery); err != nil || inRecovery {
		t.Fatalf("restored server in recovery: %v %v", inRecovery, err)
	}
	return ids, nil
}

// TestRestore: on a real Postgres, back up, write, note a time, write
// more, archive; a restore to the time holds exactly the first rows, the
// latest all of them, the backup none; a point before the backup, a
// missing segment and a corrupt one are refused, as is a data directory
// that holds data. A restore to the time from an S3 store too.
func TestRestore(t *testing.T) {
	primary := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	st, err := backupstore.Open(ctx, model.BackupConfig{Kind: "file", Path: dir}, backupstore.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := connect(t, ctx, primary.URL())
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	// The same archive on a real S3 protocol server (gofakes3 over HTTP).
	be := s3mem.New()
	if err := be.CreateBucket("backups"); err != nil {
		t.Fatal(err)
	}
	s3srv := httptest.NewServer(gofakes3.New(be).Server())
	defer s3srv.Close()
	s3st, err := backupstore.Open(ctx, model.BackupConfig{Kind: "s3", Endpoint: s3srv.URL, Bucket: "backups", Prefix: "prod"}, backupstore.Credentials{AccessKeyID: "k", SecretAccessKey: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer s3st.Close()
	before := time.Now()
	src := Source{Member: "primary", Host: "127.0.0.1", Port: primary.Port, User: "replicator", Password: pgtest.Secrets.Replication}
	b, err := Create(ctx, st, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Create(ctx, s3st, src, nil); err != nil {
		t.Fatal(err)
	}
	insert := func(from, to int) {
		t.Helper()
		if _, err := c.Exec(ctx, "INSERT INTO t SELECT generate_series($1::int, $2::int)", from, to); err != nil {
			t.Fatal(err)
		}
	}
	insert(1, 100)
	time.Sleep(300 * time.Millisecond)
	mark := time.Now()
	time.Sleep(300 * time.Millisecond)
	insert(101, 150)
	// A segment of its own between the two, so a missing one after the
	// mark can be made.
	if _, err := c.Exec(ctx, "SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	insert(151, 160)
	if _, err := c.Exec(ctx, "SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	insert(161, 170)
	archiveAll(t, ctx, primary, st, s3st)

	upTo := func(n int) []int {
		var out []int
		for i := 1; i <= n; i++ {
			out = append(out, i)
		}
		return out
	}
	checkOn := func(st backupstore.Store, what string, target Target, want []int) {
		t.Helper()
		got, err := restoreTo(t, ctx, st, target)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s: restored %d rows (%v..), want %d", what, len(got), head(got), len(want))
		}
	}
	check := func(what string, target Target, want []int) {
		t.Helper()
		checkOn(st, what, target, want)
	}
	check("to the time", Target{Time: mark}, upTo(100))
	checkOn(s3st, "to the time, from S3", Target{Time: mark}, upTo(100))
	check("latest", Target{Latest: true}, upTo(170))
	check("the backup", Target{BackupID: b.ID}, nil)

	if _, err := PlanRestore(ctx, st, Target{Time: before.Add(-time.Hour)}); !errors.Is(err, ErrNotCovered) {
		t.Fatalf("a time before the backup: %v, want ErrNotCovered", err)
	}
	if _, err := PlanRestore(ctx, st, Target{LSN: 1 << 40}); !errors.Is(err, ErrNotCovered) {
		t.Fatalf("an LSN past the archive: %v, want ErrNotCovered", err)
	}

	// Into a directory that holds data.
	plan, err := PlanRestore(ctx, st, Target{Latest: true})
	if err != nil {
		t.Fatal(err)
	}
	full := pgtest.Empty(t)
	if err := os.MkdirAll(full.DataDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(full.DataDir(), "keep"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(ctx, st, plan, RestoreOptions{Server: full.Server, WALDir: filepath.Join(filepath.Dir(full.DataDir()), "wal"), Secrets: pgtest.Secrets}); !errors.Is(err, ErrNotEmpty) {
		t.Fatalf("restore into a directory with data: %v, want ErrNotEmpty", err)
	}
	if b, err := os.ReadFile(filepath.Join(full.DataDir(), "keep")); err != nil || string(b) != "mine" {
		t.Fatalf("the refused restore touched the directory: %q %v", b, err)
	}

	// A corrupt segment (the last one: rows 161..170) is refused for the
	// latest; a time before it still restores.
	last := plan.Segments[len(plan.Segments)-1]
	path := filepath.Join(dir, "wal", last+".zst")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := slices.Clone(orig)
	bad[len(bad)/2] ^= 0xff
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := restoreTo(t, ctx, st, Target{Latest: true}); !errors.Is(err, ErrNotCovered) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("latest with a corrupt segment: %v, want ErrNotCovered and ErrCorrupt", err)
	}
	check("to the time, past a corrupt later segment", Target{Time: mark}, upTo(100))

	// A missing one (rows 151..160) between archived ones: refused for
	// the latest, and for a time past it; a time before it restores.
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "wal", plan.Segments[len(plan.Segments)-2]+".zst")); err != nil {
		t.Fatal(err)
	}
	if _, err := PlanRestore(ctx, st, Target{Latest: true}); !errors.Is(err, ErrNotCovered) {
		t.Fatalf("latest with a missing segment: %v, want ErrNotCovered", err)
	}
	if _, err := restoreTo(t, ctx, st, Target{Time: time.Now()}); !errors.Is(err, ErrNotCovered) {
		t.Fatalf("a time past a missing segment: %v, want ErrNotCovered", err)
	}
	check("to the time, before a missing segment", Target{Time: mark}, upTo(100))
}

func head(ids []int) []int {
	if len(ids) > 5 {
		return ids[:5]
	}
	return ids
}
