package backupstore

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/petrel-db/petrel/internal/model"
)

// FakeS3 serves a real S3 protocol server (gofakes3, in memory) with one
// bucket; it returns the config and credentials to reach it.
func fakeS3(t *testing.T, bucket string) (model.BackupConfig, Credentials) {
	t.Helper()
	be := s3mem.New()
	if err := be.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(be).Server())
	t.Cleanup(srv.Close)
	return model.BackupConfig{Kind: "s3", Endpoint: srv.URL, Bucket: bucket, Region: "us-east-1"},
		Credentials{AccessKeyID: "petrel-test", SecretAccessKey: "petrel-test-secret"}
}

func stores(t *testing.T) map[string]func(prefix string) Store {
	s3cfg, creds := fakeS3(t, "archive")
	dir := t.TempDir()
	open := func(c model.BackupConfig, cr Credentials) Store {
		st, err := Open(context.Background(), c, cr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	return map[string]func(string) Store{
		"file": func(prefix string) Store {
			return open(model.BackupConfig{Kind: "file", Path: dir, Prefix: prefix}, Credentials{})
		},
		"s3": func(prefix string) Store {
			c := s3cfg
			c.Prefix = prefix
			return open(c, creds)
		},
	}
}

func TestStore(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open("clusters/a")
			if _, err := st.Stat(ctx, "wal/x"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("stat of a missing object: %v, want ErrNotFound", err)
			}
			if _, err := st.Get(ctx, "wal/x"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("get of a missing object: %v, want ErrNotFound", err)
			}
			meta := map[string]string{"sha256": "abc", "size": "5"}
			if err := st.Put(ctx, "wal/x", strings.NewReader("hello"), meta); err != nil {
				t.Fatal(err)
			}
			// Write-once: a second put fails and leaves the first content.
			if err := st.Put(ctx, "wal/x", strings.NewReader("other"), nil); !errors.Is(err, ErrExists) {
				t.Fatalf("second put: %v, want ErrExists", err)
			}
			o, err := st.Stat(ctx, "wal/x")
			if err != nil {
				t.Fatal(err)
			}
			if o.Size != 5 || o.Meta["sha256"] != "abc" {
				t.Fatalf("stat: %+v", o)
			}
			r, err := st.Get(ctx, "wal/x")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(r)
			r.Close()
			if string(b) != "hello" {
				t.Fatalf("content %q", b)
			}
			if err := st.Put(ctx, "wal/y", strings.NewReader("y"), nil); err != nil {
				t.Fatal(err)
			}
			if err := st.Put(ctx, "base/1", strings.NewReader("b"), nil); err != nil {
				t.Fatal(err)
			}
			objs, err := st.List(ctx, "wal/")
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) != 2 || objs[0].Key != "wal/x" || objs[1].Key != "wal/y" {
				t.Fatalf("list: %+v", objs)
			}
			if err := st.Delete(ctx, "wal/y"); err != nil {
				t.Fatal(err)
			}
			if err := st.Delete(ctx, "wal/y"); err != nil {
				t.Fatalf("deleting a missing object: %v", err)
			}
			// Another prefix is another namespace.
			if objs, err := open("clusters/b").List(ctx, ""); err != nil || len(objs) != 0 {
				t.Fatalf("other prefix: %v %v", objs, err)
			}
		})
	}
}

func TestClaim(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open("claim")
			m, err := Claim(ctx, st, "alpha", "7001")
			if err != nil {
				t.Fatal(err)
			}
			if m.Cluster != "alpha" || m.SystemID != "7001" {
				t.Fatalf("marker %+v", m)
			}
			if _, err := Claim(ctx, st, "alpha", "7001"); err != nil {
				t.Fatalf("the same cluster again: %v", err)
			}
			if _, err := Claim(ctx, st, "beta", "7001"); !errors.Is(err, ErrForeign) {
				t.Fatalf("another cluster's name: %v, want ErrForeign", err)
			}
			if _, err := Claim(ctx, st, "alpha", "9999"); !errors.Is(err, ErrForeign) {
				t.Fatalf("another system id: %v, want ErrForeign", err)
			}
			// Somebody else's data without a marker is refused too.
			other := open("foreign")
			if err := other.Put(ctx, "something", strings.NewReader("x"), nil); err != nil {
				t.Fatal(err)
			}
			if _, err := Claim(ctx, other, "alpha", "7001"); !errors.Is(err, ErrForeign) {
				t.Fatalf("non-empty store without marker: %v, want ErrForeign", err)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	bad := []model.BackupConfig{
		{Kind: "file"},
		{Kind: "file", Path: "relative/dir"},
		{Kind: "s3"},
		{Kind: "s3", Bucket: "b", Endpoint: "ftp://x"},
		{Kind: "s3", Bucket: "b", Endpoint: "http://"},
		{Kind: "gcs", Bucket: "b"},
		{Kind: "file", Path: "/x", Prefix: "../up"},
		{Kind: "file", Path: "/x", ArchiveTimeoutSec: -1},
	}
	for _, c := range bad {
		if err := Validate(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	good := []model.BackupConfig{
		{Kind: "file", Path: "/var/backups/petrel"},
		{Kind: "s3", Bucket: "b", Endpoint: "https://s3.example.com", Prefix: "prod/", Region: "eu-west-1"},
	}
	for _, c := range good {
		if err := Validate(c); err != nil {
			t.Errorf("%+v refused: %v", c, err)
		}
	}
	if _, err := Open(context.Background(), model.BackupConfig{Kind: "s3", Bucket: "b"}, Credentials{}); err == nil {
		t.Error("s3 without credentials opened")
	}
}

func TestFileStoreCreatesDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	st, err := Open(context.Background(), model.BackupConfig{Kind: "file", Path: dir}, Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("directory not created: %v", err)
	}
}
