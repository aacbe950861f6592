package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/localworld"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pgtest"
)

// TestRestoreAfterFailover: a base backup, then writes while the leader
// is killed (kill -9, in the middle of archiving). A restore to a time on
// the new timeline holds exactly what was committed before it. `petrel restore
// --latest` from the cluster's store makes a new `petrel up` directory,
// which starts as its own cluster holding every acknowledged write, with
// the restored member leading and another cloned from it. A restore into
// a directory that holds data, and one to a time before the backup, are
// refused.
func TestRestoreAfterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	archive := filepath.Join(c.Opts.Dir, "archive")
	putBackupConfig(ctx, t, c, model.BackupConfig{Kind: "file", Path: archive, ArchiveTimeoutSec: 2})
	leader := startNodes(ctx, t, c, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"})
	waitSync(ctx, t, c, leader)
	if err := c.Exec(ctx, leader, "CREATE TABLE acked (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	etcdFlags := []string{"--etcd", strings.Join(c.EtcdEndpoints(), ","), "--cluster", "petrel", "--secrets-file", c.SecretsFile(), "--ca-fingerprint", c.CAFingerprint}
	petrel := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, binary(t), args...).CombinedOutput()
		return string(out), err
	}
	if out, err := petrel(append([]string{"backup", "create"}, etcdFlags...)...); err != nil {
		t.Fatalf("petrel backup create: %v\n%s", err, out)
	}
	before := time.Now().Add(-time.Minute)

	// Writes across a crash of the leader while it archives.
	w, newLeader := writeThrough(ctx, t, c, func() {
		if err := c.Exec(ctx, leader, "SELECT pg_switch_wal()"); err != nil {
			t.Fatal(err)
		}
		if err := c.Kill(leader); err != nil {
			t.Fatal(err)
		}
	})
	if w.count() == 0 {
		t.Fatal("no write acknowledged")
	}
	// A point in time on the new timeline, between two batches.
	if err := c.Exec(ctx, newLeader, "INSERT INTO acked SELECT generate_series(1, 100)"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	mark := time.Now()
	time.Sleep(300 * time.Millisecond)
	if err := c.Exec(ctx, newLeader, "INSERT INTO acked SELECT generate_series(101, 200)"); err != nil {
		t.Fatal(err)
	}
	// The newest writes reach the archive with the next segment.
	if err := c.Exec(ctx, newLeader, "SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	waitArchived(ctx, t, c, newLeader, 1)

	// To that time, across the failover: every write acknowledged before
	// it, and nothing committed after it.
	st, err := backupstore.Open(ctx, model.BackupConfig{Kind: "file", Path: archive}, backupstore.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	plan, err := backup.PlanRestore(ctx, st, backup.Target{Time: mark})
	if err != nil {
		t.Fatal(err)
	}
	pit := pgtest.Empty(t)
	if _, err := backup.Restore(ctx, st, plan, backup.RestoreOptions{Server: pit.Server, WALDir: filepath.Join(t.TempDir(), "wal"), Secrets: pgtest.Secrets}); err != nil {
		t.Fatalf("restore to %s: %v", mark, err)
	}
	if err := pit.Start(ctx); err != nil {
		t.Fatal(err)
	}
	pconn, err := pgx.Connect(ctx, pit.URL())
	if err != nil {
		t.Fatal(err)
	}
	rows, err := pconn.Query(ctx, "SELECT id FROM acked")
	if err != nil {
		t.Fatal(err)
	}
	pitIDs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	pconn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	at := map[int64]bool{}
	for _, id := range pitIDs {
		at[id] = true
	}
	for id := int64(1); id <= 200; id++ {
		if at[id] != (id <= 100) {
			t.Fatalf("restored to the time: row %d present %v (want rows 1..100 only of the two batches)", id, at[id])
		}
	}
	w.mu.Lock()
	for _, id := range w.acked {
		if !at[id] {
			w.mu.Unlock()
			t.Fatalf("restored to the time: acknowledged write %d (before the failover) missing", id)
		}
	}
	w.mu.Unlock()

	into := filepath.Join(t.TempDir(), "fork")
	base := freeRange(t)
	restoreArgs := append([]string{"restore", "--latest", "--into", into, "--name", "fork", "--base-port", fmt.Sprint(base)}, etcdFlags...)
	out, err := petrel(restoreArgs...)
	if err != nil || !strings.Contains(out, "start it: petrel up --dir") {
		t.Fatalf("petrel restore: %v\n%s", err, out)
	}
	t.Logf("petrel restore: %s", out)
	if out, err := petrel(restoreArgs...); err == nil || !strings.Contains(out, "not empty") {
		t.Fatalf("a second restore into the same directory: %v\n%s", err, out)
	}
	early := filepath.Join(t.TempDir(), "early")
	if out, err := petrel(append([]string{"restore", "--time", before.UTC().Format(time.RFC3339), "--into", early}, etcdFlags...)...); err == nil || !strings.Contains(out, "before the earliest point") {
		t.Fatalf("a restore to before the backup: %v\n%s", err, out)
	}
	if _, err := os.Stat(early); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s behind: %v", early, err)
	}

	// On hosts: a member of a new cluster (its own etcd and secrets)
	// seeds it from the store; the next one clones it.
	c2 := newCluster(t, ctx)
	seed, err := c2.DefineNode("scl1", "scl")
	if err != nil {
		t.Fatal(err)
	}
	seed.ExtraFlags = []string{"--restore-from", archive, "--restore-target", "latest"}
	if err := c2.StartNode("scl1"); err != nil {
		t.Fatal(err)
	}
	if l, err := c2.WaitLeader(ctx, ""); err != nil || l != "scl1" {
		t.Fatalf("restored cluster's leader %q: %v", l, err)
	}
	if _, err := c2.AddNode("scl2", "scl"); err != nil {
		t.Fatal(err)
	}
	waitSync(ctx, t, c2, "scl1")
	waitReplicaHas(ctx, t, c2, "scl2", int64(w.count()))
	for _, id := range []string{"scl1", "scl2"} {
		if miss := w.missing(ctx, t, c2, id); len(miss) > 0 {
			t.Fatalf("%d acknowledged writes missing on %s of the cluster restored with --restore-from: %v", len(miss), id, miss)
		}
	}
	if s, err := c2.Status("scl1"); err != nil || s.Timeline < 3 {
		t.Fatalf("the seed's status %+v: %v", s, err)
	}

	// The fork starts as a cluster of its own.
	var upOut, upErr lockedBuffer
	up := exec.Command(binary(t), "up", "--dir", into, "--no-edges")
	up.Stdout, up.Stderr = &upOut, &upErr
	up.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- up.Wait() }()
	defer func() {
		up.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			syscall.Kill(-up.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("petrel up stdout:\n%s\nstderr (tail):\n%s", upOut.String(), lastLines(upErr.String(), 60))
		}
	}()
	waitFor(t, ctx, 3*time.Minute, "the restored cluster to be ready", func() bool {
		return strings.Contains(upOut.String(), "is up (")
	})
	cf, err := localworld.LoadClusterFile(into)
	if err != nil {
		t.Fatal(err)
	}
	if cf.Cluster != "fork" {
		t.Fatalf("restored cluster named %q", cf.Cluster)
	}
	var ids []int64
	waitFor(t, ctx, time.Minute, "the restored data", func() bool {
		conn, err := pgx.Connect(ctx, cf.SuperuserDSN)
		if err != nil {
			return false
		}
		defer conn.Close(ctx)
		rows, err := conn.Query(ctx, "SELECT id FROM acked")
		if err != nil {
			return false
		}
		ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err == nil
	})
	have := map[int64]bool{}
	for _, id := range ids {
		have[id] = true
	}
	w.mu.Lock()
	var lost []int64
	for _, id := range w.acked {
		if !have[id] {
			lost = append(lost, id)
		}
	}
	n := len(w.acked)
	w.mu.Unlock()
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged writes missing from the restore: %v", len(lost), n, lost)
	}
	t.Logf("the restore holds all %d acknowledged writes", n)

	// The seed leads; the others cloned it.
	waitFor(t, ctx, 2*time.Minute, "a member to clone the restored leader", func() bool {
		out, err := petrel("status", "--dir", into)
		return err == nil && strings.Contains(out, "primary") && strings.Contains(out, "replica")
	})
}
