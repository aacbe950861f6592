package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/testcluster"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// TestBackupArchive: WAL archiving on a real cluster follows a crash
// failover without a gap (the new leader pushes the old timeline's
// segments the dead leader never archived, and its chain check proves the
// archive continuous), and a segment that differs from the archived copy
// is refused loudly, the archived copy left as it was.
func TestBackupArchive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	archive := filepath.Join(c.Opts.Dir, "archive")
	cfg := model.BackupConfig{Kind: "file", Path: archive, ArchiveTimeoutSec: 2}
	putBackupConfig(ctx, t, c, cfg)
	leader := startNodes(ctx, t, c, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"})
	other := "scl2"
	if leader == "scl2" {
		other = "scl1"
	}
	waitSync(ctx, t, c, leader)
	if err := c.Exec(ctx, leader, "CREATE TABLE acked (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	st, err := backupstore.Open(ctx, cfg, backupstore.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	// The leader archives; the standby holds nothing it has not seen
	// archived.
	for range 3 {
		if err := c.Exec(ctx, leader, "INSERT INTO acked SELECT g FROM generate_series((SELECT coalesce(max(id),0)+1 FROM acked), (SELECT coalesce(max(id),0)+2000 FROM acked)) g"); err != nil {
			t.Fatal(err)
		}
		if err := c.Exec(ctx, leader, "SELECT pg_switch_wal()"); err != nil {
			t.Fatal(err)
		}
	}
	waitArchived(ctx, t, c, leader, 3)
	if s, _ := c.Status(other); s.Archive == nil || s.Archive.Role != "keep" {
		t.Fatalf("standby's archive status %+v, want role keep", s.Archive)
	}
	if m, err := backupstore.ReadMarker(ctx, st); err != nil || m.SystemID == "" {
		t.Fatalf("marker %+v %v", m, err)
	}

	// Crash the leader under writes. Its last segments may never have
	// been pushed: the new leader has them in its spool and pushes them.
	w, newLeader := writeThrough(ctx, t, c, func() {
		if err := c.Exec(ctx, leader, "SELECT pg_switch_wal()"); err != nil {
			t.Fatal(err)
		}
		if err := c.Kill(leader); err != nil {
			t.Fatal(err)
		}
	})
	if newLeader != other {
		t.Fatalf("new leader %s, want %s", newLeader, other)
	}
	if w.count() == 0 {
		t.Fatal("no write acknowledged")
	}
	var chain string
	if err := testcluster.WaitFor(ctx, newLeader+" to check the archive chain on its new timeline", func() bool {
		s, err := c.Status(newLeader)
		if err != nil || s.Archive == nil || s.Timeline < 2 || s.Archive.Chain == "" || !strings.HasPrefix(s.Archive.Chain, fmt.Sprintf("timeline %d:", s.Timeline)) {
			return false
		}
		chain = s.Archive.Chain
		return true
	}); err != nil {
		t.Fatal(err)
	}
	s, _ := c.Status(newLeader)
	if !s.Archive.ChainOK {
		t.Fatalf("chain after the failover: %s", chain)
	}
	// Our own check of the whole archive, from its first segment.
	if err := c.Exec(ctx, newLeader, "SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	waitArchived(ctx, t, c, newLeader, 1)
	ch, err := backup.CheckChain(ctx, st, s.Timeline, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !ch.OK() || ch.Segments < 4 || !strings.HasPrefix(ch.From, "00000001") {
		t.Fatalf("archive chain across the failover: %+v", ch)
	}
	t.Logf("after the failover: %s (the new leader said: %s)", ch.Summary(), chain)
	// The CLI's verify (a member reads every file back, through its admin
	// API; the old leader's is dead) agrees.
	etcdFlags := []string{"--etcd", strings.Join(c.EtcdEndpoints(), ","), "--cluster", "petrel", "--secrets-file", c.SecretsFile(), "--ca-fingerprint", c.CAFingerprint}
	out, err := exec.CommandContext(ctx, binary(t), append([]string{"backup", "verify"}, etcdFlags...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "no gap") || !strings.Contains(string(out), " 0 corrupt") {
		t.Fatalf("petrel backup verify: %v\n%s", err, out)
	}

	// A base backup, from the only streaming replica there is: none (the
	// old leader is dead), so from the leader; listed, and verified.
	if out, err := exec.CommandContext(ctx, binary(t), append([]string{"backup", "create"}, etcdFlags...)...).CombinedOutput(); err != nil {
		t.Fatalf("petrel backup create: %v\n%s", err, out)
	} else if !regexp.MustCompile(`\[[#.?]{30}\]`).Match(out) {
		t.Fatalf("petrel backup create showed no progress:\n%s", out)
	}
	out, err = exec.CommandContext(ctx, binary(t), append([]string{"backup", "list", "--json"}, etcdFlags...)...).Output()
	var listed []backup.Backup
	if err != nil || json.Unmarshal(out, &listed) != nil || len(listed) != 1 || listed[0].Status != "complete" || listed[0].Source != newLeader || listed[0].Timeline != s.Timeline {
		t.Fatalf("petrel backup list: %v\n%s", err, out)
	}
	if out, err := exec.CommandContext(ctx, binary(t), append([]string{"backup", "verify"}, etcdFlags...)...).CombinedOutput(); err != nil || !strings.Contains(string(out), " 0 corrupt") {
		t.Fatalf("petrel backup verify with a backup: %v\n%s", err, out)
	}
	// Retention down to that one backup: the WAL before its start goes,
	// the backup stays, and verify still passes on what remains.
	out, err = exec.CommandContext(ctx, binary(t), append([]string{"backup", "prune", "--window", "0s", "--min", "1", "--json"}, etcdFlags...)...).Output()
	var plan backup.PrunePlan
	if err != nil || json.Unmarshal(out, &plan) != nil || len(plan.Keep) != 1 || plan.Keep[0] != listed[0].ID || len(plan.DeleteBackups) != 0 || plan.KeepFrom != listed[0].StartSeg {
		t.Fatalf("petrel backup prune: %v\n%s", err, out)
	}
	if out, err := exec.CommandContext(ctx, binary(t), append([]string{"backup", "verify"}, etcdFlags...)...).CombinedOutput(); err != nil || !strings.Contains(string(out), " 0 corrupt") {
		t.Fatalf("petrel backup verify after prune: %v\n%s", err, out)
	}
	// backup configure through the admin API: a directory holding
	// something else is refused (and the configuration left alone); the
	// cluster's own archive is taken again.
	foreign := filepath.Join(c.Opts.Dir, "foreign")
	if err := os.MkdirAll(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(foreign, "someone-elses"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.CommandContext(ctx, binary(t), append([]string{"backup", "configure", "--path", foreign, "--archive-timeout", "2"}, etcdFlags...)...).CombinedOutput(); err == nil || !strings.Contains(string(out), "not empty") {
		t.Fatalf("petrel backup configure on a foreign directory: %v\n%s", err, out)
	}
	ecli, name := clusterEtcd(t, c)
	if got, err := backup.ReadConfig(ctx, ecli, name); err != nil || got.Path != archive {
		t.Fatalf("the configuration after a refused configure: %+v %v", got, err)
	}
	if out, err := exec.CommandContext(ctx, binary(t), append([]string{"backup", "configure", "--path", archive, "--archive-timeout", "2"}, etcdFlags...)...).CombinedOutput(); err != nil || !strings.Contains(string(out), "file store") {
		t.Fatalf("petrel backup configure on the cluster's archive: %v\n%s", err, out)
	}
	// All are in the cluster's events.
	evs, _, err := store.ListEvents(ctx, ecli, name, 0, 0)
	var created, pruned, configured bool
	for _, ev := range evs {
		created = created || (ev.Kind == model.EventBackup && strings.Contains(ev.Reason, "base backup "+listed[0].ID))
		pruned = pruned || (ev.Kind == model.EventBackup && strings.Contains(ev.Reason, "pruned 0 backups and") && len(plan.DeleteWAL) > 0)
		configured = configured || (ev.Kind == model.EventBackup && strings.Contains(ev.Reason, "backup store configured by api:") && strings.Contains(ev.Reason, archive))
	}
	if err != nil || !created || (len(plan.DeleteWAL) > 0 && !pruned) || !configured {
		t.Fatalf("backup events (created %v, pruned %v; %d WAL files pruned; configured %v): %+v %v", created, pruned, len(plan.DeleteWAL), configured, evs, err)
	}

	// A differing copy already in the archive under the name of the
	// segment being written now: the leader must refuse to overwrite it.
	var seg string
	conn, err := pgx.Connect(ctx, c.DSN(newLeader))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// A write first: right after a switch the current position is the
	// boundary, which pg_walfile_name names as the previous segment.
	if _, err := conn.Exec(ctx, "INSERT INTO acked VALUES (-1)"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())").Scan(&seg); err != nil {
		t.Fatal(err)
	}
	bogus := filepath.Join(t.TempDir(), seg)
	junk := make([]byte, backup.SegmentSize)
	_, _ = rand.Read(junk[:4096])
	if err := os.WriteFile(bogus, junk, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Push(ctx, st, seg, bogus, "intruder"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_switch_wal()"); err != nil {
		t.Fatal(err)
	}
	if err := testcluster.WaitFor(ctx, "the leader to refuse the differing segment", func() bool {
		s, err := c.Status(newLeader)
		return err == nil && s.Archive != nil && strings.Contains(s.Archive.LastFailure, "differs") && strings.Contains(s.Archive.LastFailure, seg)
	}); err != nil {
		s, _ := c.Status(newLeader)
		t.Fatalf("%v: %+v", err, s.Archive)
	}
	if same, err := backup.Archived(ctx, st, seg, bogus); err != nil || !same {
		t.Fatalf("the archived copy was changed: %v %v", same, err)
	}
	if v := metric(t, c, newLeader, "petrel_archive_diverged_total"); v < 1 {
		t.Fatalf("petrel_archive_diverged_total %v", v)
	}
	if s, _ := c.Status(newLeader); !hasProblem(s, "archiving") {
		t.Fatalf("no archiving problem in /status: %v", s.Problems)
	}
}

func hasProblem(s model.Status, sub string) bool {
	for _, p := range s.Problems {
		if strings.Contains(p, sub) {
			return true
		}
	}
	return false
}

// clusterEtcd is a client of c's etcd (closed when the test ends) and
// the cluster's name in it.
func clusterEtcd(t *testing.T, c *testcluster.Cluster) (*clientv3.Client, string) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.EtcdEndpoints(), DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	name := c.Opts.Name
	if name == "" {
		name = "petrel"
	}
	return cli, name
}

func putBackupConfig(ctx context.Context, t *testing.T, c *testcluster.Cluster, cfg model.BackupConfig) {
	t.Helper()
	cli, name := clusterEtcd(t, c)
	b, _ := json.Marshal(cfg)
	if _, err := cli.Put(ctx, store.KeysFor(name).Backup(), string(b)); err != nil {
		t.Fatal(err)
	}
}

// waitArchived waits until id has pushed at least n more files than when
// called, and its spool is empty.
func waitArchived(ctx context.Context, t *testing.T, c *testcluster.Cluster, id string, n float64) {
	t.Helper()
	start := metric(t, c, id, "petrel_archive_pushed_total")
	if err := testcluster.WaitFor(ctx, id+" to archive", func() bool {
		s, err := c.Status(id)
		return err == nil && s.Archive != nil && s.Archive.Spooled == 0 && metric(t, c, id, "petrel_archive_pushed_total") >= start+n
	}); err != nil {
		s, _ := c.Status(id)
		t.Fatalf("%v: %+v", err, s.Archive)
	}
}

// metric reads one unlabelled series from id's /metrics (0 if absent).
func metric(t *testing.T, c *testcluster.Cluster, id, name string) float64 {
	t.Helper()
	resp, err := c.HTTPClient().Get(c.Node(id).APIURL() + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			var f float64
			if _, err := fmt.Sscan(v, &f); err == nil {
				return f
			}
		}
	}
	return 0
}

// TestScheduledBackup: with a schedule, the archiving leader takes a base
// backup by itself, from the streaming replica (not loading the leader),
// shows it in /status and records an event.
func TestScheduledBackup(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	archive := filepath.Join(c.Opts.Dir, "archive")
	cfg := model.BackupConfig{Kind: "file", Path: archive, ArchiveTimeoutSec: 2}
	putBackupConfig(ctx, t, c, cfg)
	leader := startNodes(ctx, t, c, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"})
	replica := "scl2"
	if leader == "scl2" {
		replica = "scl1"
	}
	waitSync(ctx, t, c, leader)
	// The schedule once both members are registered: a leader alone
	// rightly backs up from itself.
	cfg.ScheduleSec = 3600
	putBackupConfig(ctx, t, c, cfg)
	st, err := backupstore.Open(ctx, cfg, backupstore.Credentials{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var bs []backup.Backup
	if err := testcluster.WaitFor(ctx, "a scheduled backup in the store", func() bool {
		bs, err = backup.ListBackups(ctx, st)
		return err == nil && len(bs) > 0 && bs[0].Status == "complete"
	}); err != nil {
		t.Fatal(err)
	}
	if len(bs) != 1 || bs[0].Source != replica {
		t.Fatalf("scheduled backups %+v: want one, from the replica %s", bs, replica)
	}
	if err := backup.CheckBackup(ctx, st, bs[0]); err != nil {
		t.Fatalf("the scheduled backup does not read back: %v", err)
	}
	if err := testcluster.WaitFor(ctx, "the leader's status naming the backup", func() bool {
		s, err := c.Status(leader)
		return err == nil && s.Archive != nil && s.Archive.LastBackup.Equal(bs[0].StartTime) && s.Archive.BackupSince.IsZero()
	}); err != nil {
		t.Fatal(err)
	}
	cli, name := clusterEtcd(t, c)
	if err := testcluster.WaitFor(ctx, "a backup event", func() bool {
		evs, _, err := store.ListEvents(ctx, cli, name, 0, 0)
		for _, ev := range evs {
			if err == nil && ev.Kind == model.EventBackup && ev.Node == leader && ev.To == replica && strings.Contains(ev.Reason, bs[0].ID) {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	// Not due again within the hour: still one.
	time.Sleep(3 * time.Second)
	if bs, err := backup.ListBackups(ctx, st); err != nil || len(bs) != 1 {
		t.Fatalf("backups a few seconds later: %d %v, want still 1", len(bs), err)
	}
	// `petrel backup create` also backs up from the replica, at once (it
	// asks the primary for the checkpoint the standby starts from).
	etcdFlags := []string{"--etcd", strings.Join(c.EtcdEndpoints(), ","), "--cluster", name, "--secrets-file", c.SecretsFile(), "--ca-fingerprint", c.CAFingerprint}
	cctx, ccancel := context.WithTimeout(ctx, 60*time.Second)
	defer ccancel()
	if out, err := exec.CommandContext(cctx, binary(t), append([]string{"backup", "create"}, etcdFlags...)...).CombinedOutput(); err != nil {
		t.Fatalf("petrel backup create from the replica: %v\n%s", err, out)
	} else if !strings.Contains(string(out), "backing up from "+replica) || strings.Contains(string(out), "could not ask") {
		t.Fatalf("petrel backup create: %s", out)
	}

	// The admin API: the catalog from any member; a backup on request from
	// the leader (the archiving member), refused by the replica.
	var tok struct{ Token string }
	if code := apiCall(ctx, t, c, "POST", c.Node(replica).APIURL()+"/api/v1/token", "Basic "+basicAuth("operator", c.Secrets.Operator), "", &tok); code != 200 || tok.Token == "" {
		t.Fatalf("token: %d", code)
	}
	bearer := "Bearer " + tok.Token
	var listed struct{ Backups []backup.Backup }
	if code := apiCall(ctx, t, c, "GET", c.Node(replica).APIURL()+"/api/v1/backups", bearer, "", &listed); code != http.StatusOK || len(listed.Backups) != 2 {
		t.Fatalf("GET /api/v1/backups on the replica: %d %+v, want the 2 backups", code, listed)
	}
	if code := apiCall(ctx, t, c, "POST", c.Node(replica).APIURL()+"/api/v1/backups", bearer, "", nil); code != http.StatusConflict {
		t.Fatalf("POST /api/v1/backups on the replica: %d, want 409", code)
	}
	if code := apiCall(ctx, t, c, "POST", c.Node(leader).APIURL()+"/api/v1/backups", bearer, "", nil); code != http.StatusAccepted {
		t.Fatalf("POST /api/v1/backups on the leader: %d, want 202", code)
	}
	if err := testcluster.WaitFor(ctx, "the requested backup", func() bool {
		bs, err := backup.ListBackups(ctx, st)
		return err == nil && len(bs) == 3 && bs[2].Status == "complete" && bs[2].Source == replica
	}); err != nil {
		t.Fatal(err)
	}
}
