package backup

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/model"
)

// TestArchiveOnS3: the archiver's whole path (claim, push, the keep
// role's lookups, a refused differing copy, fetch, the chain) on a real
// S3 protocol server (gofakes3 over HTTP).
func TestArchiveOnS3(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	be := s3mem.New()
	if err := be.CreateBucket("wal"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(be).Server())
	defer srv.Close()
	cfg := model.BackupConfig{Kind: "s3", Endpoint: srv.URL, Bucket: "wal", Prefix: "prod/c"}
	creds := backupstore.Credentials{AccessKeyID: "k", SecretAccessKey: "s"}
	spool := t.TempDir()
	a := NewArchiver(ArchiverConfig{Node: "scl1", Cluster: "c", Spool: spool, PG: &fakePG{}, Creds: creds,
		Source:   func() (model.BackupConfig, bool, bool, error) { return cfg, true, true, nil },
		SystemID: func() string { return "42" }})
	var data [][]byte
	for no := uint64(1); no <= 3; no++ {
		data = append(data, walFile(t, spool, Segment{TLI: 1, No: no}.Name(), 256<<10))
	}
	a.Update(enginePush(), 1)
	a.round(ctx)
	if s := a.Status(); s.Spooled != 0 || !s.ChainOK || s.LastFailure != "" {
		t.Fatalf("status %+v", s)
	}
	st, err := backupstore.Open(ctx, cfg, creds)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if m, err := backupstore.ReadMarker(ctx, st); err != nil || m.Cluster != "c" || m.SystemID != "42" {
		t.Fatalf("marker %+v %v", m, err)
	}
	var got bytes.Buffer
	if err := Fetch(ctx, st, Segment{TLI: 1, No: 2}.Name(), &got); err != nil || !bytes.Equal(got.Bytes(), data[1]) {
		t.Fatalf("fetch: %v", err)
	}
	other := t.TempDir()
	name := Segment{TLI: 1, No: 3}.Name()
	walFile(t, other, name, 256<<10)
	if _, err := Push(ctx, st, name, filepath.Join(other, name), "ord1"); !errors.Is(err, ErrDiverged) {
		t.Fatalf("differing push on S3: %v", err)
	}
	r, err := Verify(ctx, st)
	if err != nil || !r.OK() || r.Files != 3 {
		t.Fatalf("verify %+v %v", r, err)
	}
}
