package backup

import (
	"archive/tar"
	"bytes"
	"math/rand"
	"strings"
	"testing"
	"time"
)

// tarOf builds a tar stream like pg_basebackup's: directories, files of
// sizes on and off the 512-byte blocks, a symlink, a long name, and
// backup_manifest last (or manifest "" for none), and a file named
// backup_manifest elsewhere.
func tarOf(t *testing.T, manifest string, big int) []byte {
	t.Helper()
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	r := rand.New(rand.NewSource(1))
	add := func(h *tar.Header, body []byte) {
		h.Size = int64(len(body))
		h.Mode, h.ModTime = 0o600, time.Unix(1700000000, 0)
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	rnd := func(n int) []byte { p := make([]byte, n); r.Read(p); return p }
	add(&tar.Header{Name: "global/", Typeflag: tar.TypeDir}, nil)
	add(&tar.Header{Name: "PG_VERSION", Typeflag: tar.TypeReg}, []byte("15\n"))
	add(&tar.Header{Name: "base/5/16384", Typeflag: tar.TypeReg}, rnd(big))
	add(&tar.Header{Name: "base/5/16385", Typeflag: tar.TypeReg}, rnd(8192))
	add(&tar.Header{Name: "pg_tblspc/16400", Typeflag: tar.TypeSymlink, Linkname: "/srv/ts"}, nil)
	add(&tar.Header{Name: "base/5/" + strings.Repeat("d", 120) + "/backup_manifest", Typeflag: tar.TypeReg}, []byte("not this one"))
	add(&tar.Header{Name: "base/" + strings.Repeat("e", 300), Typeflag: tar.TypeReg}, rnd(700)) // a PAX header first
	add(&tar.Header{Name: "empty", Typeflag: tar.TypeReg}, nil)
	if manifest != "" {
		add(&tar.Header{Name: "backup_manifest", Typeflag: tar.TypeReg}, []byte(manifest))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

const testManifest = `{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [ { "Path": "PG_VERSION", "Size": 3 } ],
"WAL-Ranges": [
{ "Timeline": 2, "Start-LSN": "0/5000028", "End-LSN": "0/6000000" },
{ "Timeline": 3, "Start-LSN": "0/6000000", "End-LSN": "0/7000100" }
] }`

// TestReadWALRange: the last WAL range of the manifest (a standby's
// backup that spans a timeline switch has two), the start's timeline from
// the first; a tar without a manifest, or one without a range, is an
// error.
func TestReadWALRange(t *testing.T) {
	got := readWALRange(bytes.NewReader(tarOf(t, testManifest, 100000)))
	if got.err != nil || got.StartTLI != 2 || got.Timeline != 3 || got.Start != "0/5000028" || got.End != "0/7000100" {
		t.Fatalf("%+v", got)
	}
	if got := readWALRange(bytes.NewReader(tarOf(t, "", 1000))); got.err == nil || !strings.Contains(got.err.Error(), "no backup_manifest") {
		t.Errorf("without a manifest: %+v", got)
	}
	if got := readWALRange(bytes.NewReader(tarOf(t, `{"WAL-Ranges": []}`, 10))); got.err == nil {
		t.Errorf("a manifest without a WAL range: %+v", got)
	}
}
