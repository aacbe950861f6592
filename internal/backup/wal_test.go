package backup

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
)

func fileStore(t *testing.T) backupstore.Store {
	t.Helper()
	st, err := backupstore.Open(context.Background(), model.BackupConfig{Kind: "file", Path: t.TempDir()}, backupstore.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// walFile writes a segment-like file: half random (incompressible), half
// zeros, like a partly used segment.
func walFile(t *testing.T, dir, name string, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	if _, err := rand.Read(data[:size/2]); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return data
}

func TestPushFetch(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := fileStore(t)
	dir := t.TempDir()
	name := "000000010000000000000003"
	data := walFile(t, dir, name, 1<<20)
	res, err := Push(ctx, st, name, filepath.Join(dir, name), "scl1")
	if err != nil || !res.Uploaded {
		t.Fatalf("%+v %v", res, err)
	}
	if res.Bytes >= int64(len(data)) || res.Bytes == 0 {
		t.Fatalf("stored %d bytes for %d: not compressed", res.Bytes, len(data))
	}
	// The same file again (a retry, a new leader pushing what it spooled).
	if res, err := Push(ctx, st, name, filepath.Join(dir, name), "scl2"); err != nil || res.Uploaded {
		t.Fatalf("identical push: %+v %v", res, err)
	}
	var got bytes.Buffer
	if err := Fetch(ctx, st, name, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("fetch: %v (equal %v)", err, bytes.Equal(got.Bytes(), data))
	}
	// A different file under the same name: refused, archive unchanged.
	other := t.TempDir()
	walFile(t, other, name, 1<<20)
	if _, err := Push(ctx, st, name, filepath.Join(other, name), "ord1"); !errors.Is(err, ErrDiverged) {
		t.Fatalf("differing push: %v, want ErrDiverged", err)
	}
	if same, err := Archived(ctx, st, name, filepath.Join(other, name)); !errors.Is(err, ErrDiverged) || same {
		t.Fatalf("Archived of the differing copy: %v %v", same, err)
	}
	got.Reset()
	if err := Fetch(ctx, st, name, &got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatal("the archived copy changed")
	}
	if _, err := Push(ctx, st, "../../etc/passwd", filepath.Join(dir, name), "x"); err == nil {
		t.Fatal("pushed a file that is not WAL")
	}
}

func TestFetchDetectsCorruption(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := backupstore.Open(ctx, model.BackupConfig{Kind: "file", Path: dir}, backupstore.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	src := t.TempDir()
	name := "000000010000000000000004"
	walFile(t, src, name, 64<<10)
	if _, err := Push(ctx, st, name, filepath.Join(src, name), "scl1"); err != nil {
		t.Fatal(err)
	}
	// Flip a byte of the stored object (bit rot, a truncated upload).
	path := filepath.Join(dir, "wal", name+".zst")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Fetch(ctx, st, name, &out); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("fetch of a corrupt object: %v, want ErrCorrupt", err)
	}
}

type fakePG struct{ on *bool }

func (f *fakePG) SetArchive(_ context.Context, on bool, _ time.Duration) (bool, error) {
	changed := f.on == nil || *f.on != on
	f.on = &on
	return changed, nil
}

func TestArchiverRoles(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := model.BackupConfig{Kind: "file", Path: t.TempDir()}
	newArchiver := func(node string) (*Archiver, string) {
		spool := t.TempDir()
		return NewArchiver(ArchiverConfig{
			Node: node, Cluster: "c", Spool: spool, PG: &fakePG{},
			Source:   func() (model.BackupConfig, bool, bool, error) { return cfg, true, true, nil },
			SystemID: func() string { return "42" },
		}), spool
	}
	leader, lspool := newArchiver("scl1")
	standby, sspool := newArchiver("scl2")
	segs := []string{"000000010000000000000001", "000000010000000000000002", "000000010000000000000003"}
	for _, s := range segs {
		data := walFile(t, lspool, s, 32<<10)
		if err := os.WriteFile(filepath.Join(sspool, s), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// The standby's spool also holds a segment the leader never got to
	// archive (it died first): the standby keeps it.
	walFile(t, sspool, "000000010000000000000004", 32<<10)
	// A temporary file of basic_archive is never touched.
	if err := os.WriteFile(filepath.Join(sspool, "archtemp.000000010000000000000005.1.2"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	standby.Update(engineKeep(), 1)
	standby.round(ctx)
	if n := standby.Facts().Spooled; n != 4 {
		t.Fatalf("standby dropped WAL the archive does not hold: %d left", n)
	}
	// A base backup in the store: the start of the recoverability window.
	bstart := time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC)
	bst, err := backupstore.Open(ctx, cfg, backupstore.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	man, _ := json.Marshal(Backup{ID: "b1", StartTime: bstart, StartSeg: segs[0], Status: "complete"})
	if err := bst.Put(ctx, manifestKey("b1"), bytes.NewReader(man), nil); err != nil {
		t.Fatal(err)
	}
	bst.Close()
	leader.Update(enginePush(), 1)
	leader.round(ctx)
	st := leader.Status()
	if st.Spooled != 0 || st.LastArchived != segs[2] || !st.ChainOK || !st.RestoreFrom.Equal(bstart) || st.LastAt.IsZero() {
		t.Fatalf("leader status %+v", st)
	}
	// A newer backup, then the old one pruned by the CLI (a failed one
	// older than it does not count): the window follows within
	// catalogEvery, without a chain check.
	bst, err = backupstore.Open(ctx, cfg, backupstore.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []Backup{
		{ID: "b0", StartTime: bstart.Add(-time.Hour), StartSeg: segs[0], Status: "failed"},
		{ID: "b2", StartTime: bstart.Add(time.Hour), StartSeg: segs[0], Status: "complete"},
	} {
		man, _ := json.Marshal(b)
		if err := bst.Put(ctx, manifestKey(b.ID), bytes.NewReader(man), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := bst.Delete(ctx, manifestKey("b1")); err != nil {
		t.Fatal(err)
	}
	bst.Close()
	// The chain is checked (the engine stops asking): only the periodic
	// catalog read can move the window.
	leader.Update(engine.ArchivePlan{Role: engine.ArchivePush, Reason: "test leader, chain checked"}, 1)
	leader.round(ctx)
	if st := leader.Status(); !st.RestoreFrom.Equal(bstart) {
		t.Fatalf("restore_from re-read before catalogEvery: %v", st.RestoreFrom)
	}
	leader.catalogAt = time.Now().Add(-catalogEvery)
	leader.round(ctx)
	if st := leader.Status(); !st.RestoreFrom.Equal(bstart.Add(time.Hour)) {
		t.Fatalf("restore_from after the prune: %v, want b2's start %v", st.RestoreFrom, bstart.Add(time.Hour))
	}
	standby.keepSeen = map[string]time.Time{}
	standby.round(ctx)
	left, _ := standby.spoolFiles()
	if strings.Join(left, ",") != "000000010000000000000004" {
		t.Fatalf("standby spool after the leader archived: %v", left)
	}
	// The standby is promoted: it pushes the segment the old leader lost.
	standby.Update(enginePush(), 1)
	standby.round(ctx)
	if st := standby.Status(); st.Spooled != 0 || st.LastArchived != "000000010000000000000004" {
		t.Fatalf("promoted standby status %+v", st)
	}
	c, err := CheckChain(ctx, leader.st, 1, 0)
	if err != nil || !c.OK() || c.Segments != 4 {
		t.Fatalf("chain %+v %v", c, err)
	}
	if _, err := os.Stat(filepath.Join(sspool, "archtemp.000000010000000000000005.1.2")); err != nil {
		t.Fatal("a temporary file was removed")
	}
}

func TestArchiverRefusesForeignStore(t *testing.T) {
	ctx := context.Background()
	cfg := model.BackupConfig{Kind: "file", Path: t.TempDir()}
	st, _ := backupstore.Open(ctx, cfg, backupstore.Credentials{})
	if _, err := backupstore.Claim(ctx, st, "other", "1"); err != nil {
		t.Fatal(err)
	}
	st.Close()
	spool := t.TempDir()
	walFile(t, spool, "000000010000000000000001", 1024)
	a := NewArchiver(ArchiverConfig{Node: "n", Cluster: "c", Spool: spool, PG: &fakePG{},
		Source:   func() (model.BackupConfig, bool, bool, error) { return cfg, true, true, nil },
		SystemID: func() string { return "42" }})
	a.Update(enginePush(), 1)
	a.round(ctx)
	s := a.Status()
	if s.Spooled != 0 && !strings.Contains(s.LastFailure, "another cluster") {
		t.Fatalf("status %+v", s)
	}
	if _, err := os.Stat(filepath.Join(spool, "000000010000000000000001")); err != nil {
		t.Fatal("the spooled segment was dropped although nothing archived it")
	}
	if !strings.Contains(s.LastFailure, "another cluster") {
		t.Fatalf("no failure reported: %+v", s)
	}
}

// TestVerify: verify reads every archived file back, reports a corrupt
// one by name and a missing one as a gap on its timeline.
func TestVerify(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := backupstore.Open(ctx, model.BackupConfig{Kind: "file", Path: dir}, backupstore.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	src := t.TempDir()
	for no := uint64(1); no <= 6; no++ {
		name := Segment{TLI: 1, No: no}.Name()
		walFile(t, src, name, 16<<10)
		if no == 4 {
			continue // never archived
		}
		if _, err := Push(ctx, st, name, filepath.Join(src, name), "scl1"); err != nil {
			t.Fatal(err)
		}
	}
	r, err := Verify(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() || r.Files != 5 || len(r.Corrupt) != 0 || len(r.Chains) != 1 || len(r.Chains[0].Gaps) != 1 || r.Chains[0].Gaps[0].From != (Segment{TLI: 1, No: 4}).Name() {
		t.Fatalf("report %+v", r)
	}
	path := filepath.Join(dir, "wal", Segment{TLI: 1, No: 2}.Name()+".zst")
	b, _ := os.ReadFile(path)
	b[len(b)/2] ^= 1
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err = Verify(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Corrupt) != 1 || !strings.Contains(r.Corrupt[0], Segment{TLI: 1, No: 2}.Name()) {
		t.Fatalf("corrupt %v", r.Corrupt)
	}
}
