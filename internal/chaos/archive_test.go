package chaos

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/backupstore"
)

// TestJudgeArchive: the end-of-run check passes a continuous archive and
// reports a gap (with its range) or a missing history file as an
// "archive" anomaly. Real file store, real pushes.
func TestJudgeArchive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tmp := t.TempDir()
	seg := filepath.Join(tmp, "seg")
	if err := os.WriteFile(seg, make([]byte, backup.SegmentSize), 0o600); err != nil {
		t.Fatal(err)
	}
	open := func(names ...string) backupstore.Store {
		t.Helper()
		acfg := archiveConfig(t.TempDir())
		st, err := backupstore.Open(ctx, acfg, backupstore.Credentials{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		for _, n := range names {
			if _, err := backup.Push(ctx, st, n, seg, "test"); err != nil {
				t.Fatal(err)
			}
		}
		return st
	}
	judge := func(st backupstore.Store, tli uint32) *Result {
		res := &Result{}
		judgeArchive(ctx, st, tli, "scl1", nil, res)
		return res
	}

	whole := open("000000010000000000000001", "000000010000000000000002", "000000010000000000000003")
	if res := judge(whole, 1); len(res.Anomalies) != 0 || !strings.Contains(res.Archive, "3 segments") {
		t.Fatalf("continuous archive: %+v", res)
	}
	gap := open("000000010000000000000001", "000000010000000000000003")
	if res := judge(gap, 1); len(res.Anomalies) != 1 || res.Anomalies[0].Kind != "archive" || !strings.Contains(res.Anomalies[0].Detail, "000000010000000000000002") {
		t.Fatalf("a gap: %+v", res)
	}
	if res := judge(whole, 2); len(res.Anomalies) != 1 || !strings.Contains(res.Anomalies[0].Detail, "00000002.history") {
		t.Fatalf("timeline 2 without its history file: %+v", res)
	}
	if res := judge(open(), 1); len(res.Anomalies) != 1 {
		t.Fatalf("an empty archive: %+v", res)
	}
}
