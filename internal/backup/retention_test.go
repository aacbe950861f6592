package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/model"
)

func TestPlanRetention(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	day := 24 * time.Hour
	bk := func(id string, ago time.Duration, start Segment) Backup {
		return Backup{ID: id, Status: "complete", Timeline: start.TLI, StartSeg: start.Name(),
			StartTime: now.Add(-ago), EndTime: now.Add(-ago + time.Hour)}
	}
	failed := func(id string, ago time.Duration) Backup {
		return Backup{ID: id, Status: "incomplete", StartTime: now.Add(-ago)}
	}
	// Timeline 2 begins at segment 8; b4 is on it.
	b1, b2, b3, b4 := bk("b1", 10*day, Segment{1, 2}), bk("b2", 8*day, Segment{1, 4}), bk("b3", 5*day, Segment{1, 6}), bk("b4", day, Segment{2, 9})
	all := []Backup{b4, b2, b1, b3} // any order
	var wal []string
	for no := uint64(1); no <= 7; no++ {
		wal = append(wal, seg(1, no))
	}
	wal = append(wal, seg(1, 2)+".00000028.backup", seg(1, 8)+".partial", HistoryName(2), seg(2, 8), seg(2, 9), seg(2, 10))
	upTo := func(no uint64) []string { // the wal names below segment no
		var out []string
		for _, n := range wal {
			if s, ok := ParseSegment(n[:min(len(n), 24)]); ok && len(n) != 16 && s.No < no {
				out = append(out, n)
			}
		}
		sort.Strings(out)
		return out
	}
	cases := []struct {
		name      string
		bs        []Backup
		wal       []string
		r         Retention
		keep, del []string
		delWAL    []string
	}{
		{name: "window: the newest backup ending before the window is kept", bs: all, wal: wal, r: Retention{7 * day, 2},
			keep: []string{"b2", "b3", "b4"}, del: []string{"b1"}, delWAL: upTo(4)},
		{name: "window boundary: a backup ending exactly at the window's start is the anchor", bs: all, wal: wal, r: Retention{8*day - time.Hour, 1},
			keep: []string{"b2", "b3", "b4"}, del: []string{"b1"}, delWAL: upTo(4)},
		{name: "window boundary: ending a second inside the window is not", bs: all, wal: wal, r: Retention{8*day - time.Hour + time.Second, 1},
			keep: []string{"b1", "b2", "b3", "b4"}, delWAL: upTo(2)},
		{name: "min count overrides a short window", bs: all, wal: wal, r: Retention{time.Hour, 3},
			keep: []string{"b2", "b3", "b4"}, del: []string{"b1"}, delWAL: upTo(4)},
		{name: "min count above the backups keeps all", bs: all, wal: wal, r: Retention{time.Hour, 9},
			keep: []string{"b1", "b2", "b3", "b4"}, delWAL: upTo(2)},
		{name: "timeline switch: old timeline's tail kept from the oldest kept start", bs: all, wal: wal, r: Retention{time.Hour, 2},
			keep: []string{"b3", "b4"}, del: []string{"b1", "b2"}, delWAL: upTo(6)},
		{name: "only the new timeline's backup kept: history kept, old timeline dropped", bs: all, wal: wal, r: Retention{time.Hour, 1},
			keep: []string{"b4"}, del: []string{"b1", "b2", "b3"}, delWAL: upTo(9)},
		{name: "failed backups older than the newest complete go, a newer one stays",
			bs: append([]Backup{failed("f1", 9*day), failed("f2", 3*day), failed("f3", time.Minute)}, all...), wal: wal, r: Retention{7 * day, 2},
			keep: []string{"b2", "b3", "b4"}, del: []string{"b1", "f1", "f2"}, delWAL: upTo(4)},
		{name: "one backup: never deleted, however old", bs: []Backup{b1}, wal: wal, r: Retention{time.Hour, 0},
			keep: []string{"b1"}, delWAL: upTo(2)},
		{name: "no complete backup: nothing deleted", bs: []Backup{failed("f1", 9*day)}, wal: wal, r: Retention{time.Hour, 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := PlanRetention(now, c.bs, c.wal, c.r)
			if !reflect.DeepEqual(p.Keep, c.keep) || !reflect.DeepEqual(p.DeleteBackups, c.del) || !reflect.DeepEqual(p.DeleteWAL, c.delWAL) {
				t.Fatalf("got keep %v delete %v wal %v\nwant keep %v delete %v wal %v", p.Keep, p.DeleteBackups, p.DeleteWAL, c.keep, c.del, c.delWAL)
			}
			for _, n := range p.DeleteWAL {
				if n == HistoryName(2) {
					t.Fatal("a history file deleted")
				}
			}
		})
	}
}

// putBackup stores a small backup (data and manifest) as Create would.
func putBackup(t *testing.T, st backupstore.Store, b Backup) {
	t.Helper()
	ctx := context.Background()
	data := []byte("base backup " + b.ID)
	sum := sha256.Sum256(data)
	b.SHA256, b.Stored, b.Status = hex.EncodeToString(sum[:]), int64(len(data)), "complete"
	if err := st.Put(ctx, dataKey(b.ID), bytes.NewReader(data), nil); err != nil {
		t.Fatal(err)
	}
	m, _ := json.Marshal(b)
	if err := st.Put(ctx, manifestKey(b.ID), bytes.NewReader(m), nil); err != nil {
		t.Fatal(err)
	}
}

// pruneScenario: a store with four backups across a timeline switch and
// a failed one; prune removes exactly the oldest backup, the failed one
// and the WAL before the oldest kept backup, and verify passes after.
func pruneScenario(t *testing.T, st backupstore.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// now is a month ahead, so the failed backup's objects (written now)
	// are older than the newest complete backup.
	now := time.Now().Add(30 * 24 * time.Hour)
	day := 24 * time.Hour
	src := t.TempDir()
	var wantWAL []string
	push := func(name string, keep bool) {
		if _, err := Push(ctx, st, name, filepath.Join(src, name), "scl1"); err != nil {
			t.Fatal(err)
		}
		if keep {
			wantWAL = append(wantWAL, WALKey(name))
		}
	}
	for no := uint64(1); no <= 7; no++ {
		walFile(t, src, seg(1, no), 8<<10)
		push(seg(1, no), no >= 4)
	}
	if err := os.WriteFile(filepath.Join(src, HistoryName(2)), []byte("1\t0/8000000\tno recovery target specified\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	push(HistoryName(2), true)
	for no := uint64(8); no <= 10; no++ {
		walFile(t, src, seg(2, no), 8<<10)
		push(seg(2, no), true)
	}
	for i, b := range []struct {
		ago   time.Duration
		start Segment
	}{{10 * day, Segment{1, 2}}, {8 * day, Segment{1, 4}}, {5 * day, Segment{1, 6}}, {day, Segment{2, 9}}} {
		putBackup(t, st, Backup{ID: string(rune('a' + i)), Timeline: b.start.TLI, StartSeg: b.start.Name(),
			StartTime: now.Add(-b.ago), EndTime: now.Add(-b.ago + time.Hour)})
	}
	if err := st.Put(ctx, dataKey("failed"), bytes.NewReader([]byte("partial")), nil); err != nil {
		t.Fatal(err)
	}
	before, err := st.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	r := Retention{Window: 7 * day, Min: 2}
	p, err := Prune(ctx, st, now, r, true)
	if err != nil || !reflect.DeepEqual(p.DeleteBackups, []string{"a", "failed"}) || len(p.DeleteWAL) != 3 {
		t.Fatalf("dry run %+v %v", p, err)
	}
	if after, _ := st.List(ctx, ""); len(after) != len(before) {
		t.Fatalf("dry run deleted: %d objects of %d left", len(after), len(before))
	}
	if _, err := Prune(ctx, st, now, r, false); err != nil {
		t.Fatal(err)
	}
	want := []string{}
	for _, id := range []string{"b", "c", "d"} {
		want = append(want, dataKey(id), manifestKey(id))
	}
	want = append(want, backupstore.MarkerKey)
	want = append(want, wantWAL...)
	sort.Strings(want)
	objs, err := st.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.Key)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("left\n%v\nwant\n%v", got, want)
	}
	rep, err := Verify(ctx, st)
	if err != nil || !rep.OK() || len(rep.Backups) != 3 || rep.Timeline != 2 {
		t.Fatalf("verify after prune %+v %v", rep, err)
	}
	// Pruning again changes nothing.
	if p, err := Prune(ctx, st, now, r, false); err != nil || len(p.DeleteBackups)+len(p.DeleteWAL) != 0 {
		t.Fatalf("second prune %+v %v", p, err)
	}
}

func TestPruneFileStore(t *testing.T) {
	st := fileStore(t)
	if _, err := backupstore.Claim(context.Background(), st, "c", ""); err != nil {
		t.Fatal(err)
	}
	pruneScenario(t, st)
}

func TestPruneS3(t *testing.T) {
	be := s3mem.New()
	if err := be.CreateBucket("wal"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(be).Server())
	defer srv.Close()
	st, err := backupstore.Open(context.Background(), model.BackupConfig{Kind: "s3", Endpoint: srv.URL, Bucket: "wal", Prefix: "prod/c"},
		backupstore.Credentials{AccessKeyID: "k", SecretAccessKey: "s"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := backupstore.Claim(context.Background(), st, "c", ""); err != nil {
		t.Fatal(err)
	}
	pruneScenario(t, st)
}

func TestRetentionOf(t *testing.T) {
	h, one, zero := time.Hour, 1, 0
	cfg := model.BackupConfig{RetentionWindowSec: 3600 * 24, RetentionMin: 3}
	cases := []struct {
		c      model.BackupConfig
		w      *time.Duration
		m      *int
		want   Retention
		wantOK bool
	}{
		{model.BackupConfig{}, nil, nil, Retention{DefaultRetentionWindow, DefaultRetentionMin}, true},
		{cfg, nil, nil, Retention{24 * time.Hour, 3}, true},
		{cfg, &h, &one, Retention{time.Hour, 1}, true},
		{cfg, nil, &zero, Retention{24 * time.Hour, 0}, false},
	}
	for i, c := range cases {
		r, err := RetentionOf(c.c, c.w, c.m)
		if r != c.want || (err == nil) != c.wantOK {
			t.Errorf("case %d: %+v %v, want %+v ok=%v", i, r, err, c.want, c.wantOK)
		}
	}
}
