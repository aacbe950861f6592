package backup

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/model"
)

// fakeBasebackup writes a pg_basebackup into a directory of its own that
// prints a progress line and then writes stdout the way the real one
// does: with -Z client-zstd:level=1 the zstd stream of the tar, else the
// tar, or, if withZstd is false, refuses -Z as a build without zstd does.
// It records its arguments in args.txt.
func fakeBasebackup(t *testing.T, tarFile, zstFile string, withZstd bool) string {
	t.Helper()
	dir := t.TempDir()
	zstd := fmt.Sprintf("cat %q", zstFile)
	if !withZstd {
		zstd = `echo "pg_basebackup: error: this build does not support compression with zstd" >&2; exit 1`
	}
	script := fmt.Sprintf(`#!/bin/sh
echo "$*" >> %q
echo "pg_basebackup: initiating base backup, waiting for checkpoint to complete" >&2
echo "0/2000 kB (0%%), 0/1 tablespace" >&2
case " $* " in
*client-zstd:level=1*) %s ;;
*) cat %q ;;
esac
`, filepath.Join(dir, "args.txt"), zstd, tarFile)
	if err := os.WriteFile(filepath.Join(dir, "pg_basebackup"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestCreate: Create stores the zstd stream of the tar, counts the tar's
// bytes, reads the WAL range from the manifest inside and reports
// progress; with a pg_basebackup that cannot compress with zstd it
// compresses here instead and stores the same thing; one that fails
// leaves nothing in the store.
func TestCreate(t *testing.T) {
	ctx := context.Background()
	tarData := tarOf(t, testManifest, 200000)
	dir := t.TempDir()
	tarFile, zstFile := filepath.Join(dir, "base.tar"), filepath.Join(dir, "base.tar.zst")
	enc, _ := zstd.NewWriter(nil)
	if err := os.WriteFile(tarFile, tarData, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(zstFile, enc.EncodeAll(tarData, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, withZstd := range []bool{true, false} {
		t.Run(fmt.Sprintf("zstd=%v", withZstd), func(t *testing.T) {
			st, err := backupstore.Open(ctx, model.BackupConfig{Kind: "file", Path: t.TempDir()}, backupstore.Credentials{})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			bin := fakeBasebackup(t, tarFile, zstFile, withZstd)
			var last Progress
			b, err := Create(ctx, st, Source{Member: "scl2", Host: "127.0.0.1", Port: 5432, User: "replicator", Password: "pw", PGBin: bin},
				func(p Progress) { last = p })
			if err != nil {
				t.Fatal(err)
			}
			if b.Size != int64(len(tarData)) || b.Timeline != 3 || b.StartLSN != "0/5000028" || b.EndLSN != "0/7000100" ||
				b.StartSeg != "000000020000000000000005" || b.Status != "complete" || b.Stored == 0 || b.Stored >= b.Size {
				t.Fatalf("backup %+v (tar %d bytes)", b, len(tarData))
			}
			if last.Read != int64(len(tarData)) || last.Total != 2000<<10 {
				t.Errorf("last progress %+v, want %d of %d", last, len(tarData), 2000<<10)
			}
			if err := CheckBackup(ctx, st, b); err != nil {
				t.Fatal(err)
			}
			r, err := st.Get(ctx, dataKey(b.ID))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			dec, _ := zstd.NewReader(r)
			defer dec.Close()
			var got bytes.Buffer
			if _, err := got.ReadFrom(dec); err != nil || !bytes.Equal(got.Bytes(), tarData) {
				t.Fatalf("stored stream decompresses to %d bytes (%v), want the tar's %d", got.Len(), err, len(tarData))
			}
			if bs, err := ListBackups(ctx, st); err != nil || len(bs) != 1 || bs[0].ID != b.ID {
				t.Fatalf("catalog %+v %v", bs, err)
			}
			args, _ := os.ReadFile(filepath.Join(bin, "args.txt"))
			if runs := strings.Count(string(args), "\n"); (withZstd && runs != 1) || (!withZstd && runs != 2) {
				t.Errorf("pg_basebackup runs:\n%s", args)
			}
		})
	}

	// A pg_basebackup that fails before writing anything: its error, and
	// no object stored.
	st, err := backupstore.Open(ctx, model.BackupConfig{Kind: "file", Path: t.TempDir()}, backupstore.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "pg_basebackup"), []byte("#!/bin/sh\necho 'pg_basebackup: error: connection to server failed' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(ctx, st, Source{Member: "scl2", Host: "127.0.0.1", Port: 5432, PGBin: bin}, nil); err == nil || !strings.Contains(err.Error(), "connection to server failed") {
		t.Fatalf("Create with a failing pg_basebackup: %v", err)
	}
	if objs, err := st.List(ctx, ""); err != nil || len(objs) != 0 {
		t.Fatalf("objects after a failed backup: %+v %v", objs, err)
	}
	// A corrupt compressed stream fails the backup.
	bad := filepath.Join(dir, "bad.zst")
	z := enc.EncodeAll(tarData, nil)
	z[len(z)/2] ^= 0xff
	if err := os.WriteFile(bad, z, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Create(ctx, st, Source{Member: "scl2", PGBin: fakeBasebackup(t, tarFile, bad, true)}, nil); err == nil {
		t.Fatal("a backup from a corrupt stream succeeded")
	}
}
