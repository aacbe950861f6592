package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/engine"
	"github.com/petrel-db/petrel/internal/model"
)

// TestScheduledBackup: the pushing member takes a backup when the
// schedule says (none yet: at once), one at a time, records it, prunes
// after it, and takes the next only when due; a member that keeps takes
// none; a failure is reported and not retried at once.
func TestScheduledBackup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := model.BackupConfig{Kind: "file", Path: t.TempDir(), ScheduleSec: 3600, RetentionMin: 1, RetentionWindowSec: 1}
	var (
		mu      sync.Mutex
		taken   int
		fail    bool
		release = make(chan struct{})
		ended   []error
	)
	take := func(ctx context.Context, st backupstore.Store, _ func(Progress)) (Backup, error) {
		mu.Lock()
		taken++
		n, f := taken, fail
		mu.Unlock()
		<-release
		if f {
			return Backup{}, errors.New("pg_basebackup failed")
		}
		// Each backup ended 10 s ago: with a 1 s window the newest is the
		// window's anchor and the older ones go.
		end := time.Now().UTC().Add(-10 * time.Second)
		b := Backup{ID: "b" + string(rune('0'+n)), StartTime: end.Add(-time.Second), EndTime: end, StartSeg: "000000010000000000000001", Status: "complete"}
		man, _ := json.Marshal(b)
		return b, st.Put(ctx, manifestKey(b.ID), bytes.NewReader(man), nil)
	}
	newArchiver := func(node string) *Archiver {
		return NewArchiver(ArchiverConfig{
			Node: node, Cluster: "c", Spool: t.TempDir(), PG: &fakePG{},
			Source:     func() (model.BackupConfig, bool, bool, error) { return cfg, true, true, nil },
			SystemID:   func() string { return "42" },
			TakeBackup: take,
			OnBackup: func(b Backup, _ string, err error) {
				mu.Lock()
				ended = append(ended, err)
				mu.Unlock()
			},
		})
	}
	count := func() (int, int) {
		mu.Lock()
		defer mu.Unlock()
		return taken, len(ended)
	}
	wait := func(a *Archiver, ends int) {
		t.Helper()
		for {
			a.round(ctx)
			if _, e := count(); e >= ends {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("no end of backup %d", ends)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}

	standby := newArchiver("scl2")
	standby.Update(engineKeep(), 1)
	standby.round(ctx)
	if n, _ := count(); n != 0 {
		t.Fatalf("a keeping member took %d backups", n)
	}

	leader := newArchiver("scl1")
	leader.Update(enginePush(), 1)
	// The first round checks the chain (reading the catalog: no backup
	// yet), the next starts one.
	for n, _ := count(); n == 0; n, _ = count() {
		if ctx.Err() != nil {
			t.Fatal("no backup started")
		}
		leader.round(ctx)
		time.Sleep(5 * time.Millisecond)
	}
	for range 3 {
		leader.round(ctx)
	}
	if n, _ := count(); n != 1 || leader.Status().BackupSince.IsZero() {
		t.Fatalf("after two rounds: %d backups started, status %+v; want one running", n, leader.Status())
	}
	close(release)
	wait(leader, 1)
	leader.round(ctx)
	st := leader.Status()
	if n, e := count(); n != 1 || e != 1 || st.LastBackup.IsZero() || !st.BackupSince.IsZero() || st.LastFailure != "" {
		t.Fatalf("after the backup: %d taken, %d ended, status %+v", n, e, st)
	}
	// Not due again for an hour.
	for range 3 {
		leader.round(ctx)
	}
	if n, _ := count(); n != 1 {
		t.Fatalf("%d backups taken within the hour", n)
	}

	// Due again (the newest backup is old): taken; the prune after it
	// leaves only the newest (retention: 1 backup, 1 s).
	st0, _ := backupstore.Open(ctx, cfg, backupstore.Credentials{})
	defer st0.Close()
	leader.newest, leader.lastAttempt = time.Now().Add(-2*time.Hour), time.Now().Add(-2*time.Hour)
	wait(leader, 2)
	bs, err := ListBackups(ctx, st0)
	if err != nil || len(bs) != 1 || bs[0].ID != "b2" {
		t.Fatalf("after the second backup and its prune: %+v %v", bs, err)
	}

	// A failure: reported, and not retried before engine.BackupRetry.
	mu.Lock()
	fail = true
	mu.Unlock()
	leader.newest, leader.lastAttempt = time.Now().Add(-2*time.Hour), time.Now().Add(-2*time.Hour)
	wait(leader, 3)
	leader.newest = time.Now().Add(-2 * time.Hour) // the catalog's re-read brought b2 back
	for range 3 {
		leader.round(ctx)
	}
	if n, _ := count(); n != 3 || leader.Status().LastFailure == "" {
		t.Fatalf("after a failure: %d taken (want 3), status %+v", n, leader.Status())
	}
	_ = engine.BackupRetry

	// A requested backup (petrel backup create): refused by a member that
	// does not push; on the leader taken at once, not followed by a
	// prune, and its request's outcome in Backups.
	if _, err := standby.RequestBackup("api:test"); !errors.Is(err, ErrNotArchiving) {
		t.Fatalf("a keeping member's RequestBackup: %v, want ErrNotArchiving", err)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	req, err := leader.RequestBackup("api:test")
	if err != nil || leader.Backups().Requested != req {
		t.Fatalf("RequestBackup: %d %v, state %+v", req, err, leader.Backups())
	}
	wait(leader, 4)
	bst := leader.Backups()
	if bst.Running != nil || bst.Last == nil || bst.Last.Request != req || bst.Last.Backup == nil || bst.Last.Backup.ID != "b4" || bst.Last.Error != "" {
		t.Fatalf("after the requested backup: %+v (last %+v)", bst, bst.Last)
	}
	if bs, err := ListBackups(ctx, st0); err != nil || len(bs) != 2 {
		t.Fatalf("after the requested backup: %+v %v, want b2 and b4 (no prune)", bs, err)
	}
}
