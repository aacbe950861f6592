package backupstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/model"
)

// TestConcurrentPut: of writers racing on one key exactly one succeeds,
// the others get ErrExists, and the stored content and metadata are the
// winner's (S3's If-None-Match, the directory's create-only links).
func TestConcurrentPut(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open("race")
			for round := 0; round < 5; round++ {
				key := "wal/seg" + string(rune('a'+round))
				const writers = 6
				var wg sync.WaitGroup
				errs := make([]error, writers)
				for i := 0; i < writers; i++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						v := strings.Repeat(string(rune('0'+i)), 1000)
						errs[i] = st.Put(ctx, key, strings.NewReader(v), map[string]string{"writer": string(rune('0' + i))})
					}()
				}
				wg.Wait()
				won := -1
				for i, err := range errs {
					switch {
					case err == nil && won >= 0:
						t.Fatalf("%s: writers %d and %d both succeeded", key, won, i)
					case err == nil:
						won = i
					case !errors.Is(err, ErrExists):
						t.Fatalf("%s: writer %d: %v", key, i, err)
					}
				}
				if won < 0 {
					t.Fatalf("%s: no writer succeeded: %v", key, errs)
				}
				o, err := st.Stat(ctx, key)
				if err != nil || o.Meta["writer"] != string(rune('0'+won)) {
					t.Fatalf("%s: stat %+v %v, want writer %d's metadata", key, o, err, won)
				}
				r, err := st.Get(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(r)
				r.Close()
				if string(b) != strings.Repeat(string(rune('0'+won)), 1000) {
					t.Fatalf("%s: content is not writer %d's", key, won)
				}
			}
		})
	}
}

// TestLargeObject: an object past the single-PUT size goes in parts and
// is still refused when its key exists.
func TestLargeObject(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	data := make([]byte, singlePutMax+3<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open("big")
			if err := st.Put(ctx, "backups/1/data.tar.zst", bytes.NewReader(data), nil); err != nil {
				t.Fatal(err)
			}
			if err := st.Put(ctx, "backups/1/data.tar.zst", bytes.NewReader(data[:10]), nil); !errors.Is(err, ErrExists) {
				t.Fatalf("second put: %v, want ErrExists", err)
			}
			r, err := st.Get(ctx, "backups/1/data.tar.zst")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes (%v), want %d equal", len(got), err, len(data))
			}
		})
	}
}

// TestInvalidKeys: keys that could leave the namespace or collide with
// the directory store's own files are refused by every store.
func TestInvalidKeys(t *testing.T) {
	ctx := context.Background()
	for name, open := range stores(t) {
		t.Run(name, func(t *testing.T) {
			st := open("keys")
			for _, k := range []string{"", "/abs", "a/../b", "..", "a//b", "a/", "x.attrs", "x.tmp", ".hidden", "a/.b", "a\\b", "nul\x00"} {
				if err := st.Put(ctx, k, strings.NewReader("x"), nil); err == nil || errors.Is(err, ErrExists) {
					t.Errorf("put %q: %v, want a refusal", k, err)
				}
				if _, err := st.Get(ctx, k); err == nil || errors.Is(err, ErrNotFound) {
					t.Errorf("get %q: %v, want a refusal", k, err)
				}
			}
		})
	}
}

// TestDirLayout: the directory store reads what gocloud's fileblob wrote
// (earlier petrel versions), skips its own temporary and attributes files
// in listings, and clears an attributes file a crash left without its
// object.
func TestDirLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := Open(ctx, model.BackupConfig{Kind: "file", Path: dir}, Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// As fileblob wrote it.
	write(filepath.Join(dir, "wal", "old"), "segment")
	write(filepath.Join(dir, "wal", "old.attrs"), `{"user.cache_control":"","user.content_disposition":"","user.content_encoding":"","user.content_language":"","user.content_type":"application/octet-stream","user.metadata":{"sha256":"abc"},"md5":"eA=="}`)
	write(filepath.Join(dir, "wal", ".new.123.tmp"), "partial")
	write(filepath.Join(dir, "wal", "new.9af.tmp"), "fileblob's temporary")
	o, err := st.Stat(ctx, "wal/old")
	if err != nil || o.Meta["sha256"] != "abc" || o.Size != 7 {
		t.Fatalf("stat of a fileblob object: %+v %v", o, err)
	}
	objs, err := st.List(ctx, "wal/")
	if err != nil || len(objs) != 1 || objs[0].Key != "wal/old" {
		t.Fatalf("list: %+v %v", objs, err)
	}
	// A crash between the attributes and the object: a recent orphan
	// holds the key (a writer may be in flight), an old one is cleared.
	orphan := filepath.Join(dir, "wal", "orphan.attrs")
	write(orphan, `{"user.metadata":{"sha256":"stale"}}`)
	if err := st.Put(ctx, "wal/orphan", strings.NewReader("x"), nil); !errors.Is(err, ErrExists) {
		t.Fatalf("put over a fresh orphan: %v, want ErrExists", err)
	}
	old := time.Now().Add(-2 * orphanAge)
	if err := os.Chtimes(orphan, old, old); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "wal/orphan", strings.NewReader("x"), map[string]string{"sha256": "new"}); err != nil {
		t.Fatalf("put over an old orphan: %v", err)
	}
	if o, err := st.Stat(ctx, "wal/orphan"); err != nil || o.Meta["sha256"] != "new" {
		t.Fatalf("stat after: %+v %v", o, err)
	}
	// No temporary file is left behind by puts.
	ents, _ := os.ReadDir(filepath.Join(dir, "wal"))
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".orphan") {
			t.Fatalf("temporary file left: %s", e.Name())
		}
	}
}
