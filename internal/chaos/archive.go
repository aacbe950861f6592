package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// archiveConfig is every run's backup store: a file store in the run's
// directory (outside any tmpfs data dir), a segment every 2 s at most.
func archiveConfig(dir string) model.BackupConfig {
	return model.BackupConfig{Kind: "file", Path: filepath.Join(dir, "archive"), ArchiveTimeoutSec: 2}
}

// configureArchive puts the backup configuration in etcd, before any
// node starts (as `petrel backup configure` does).
func configureArchive(ctx context.Context, c *testcluster.Cluster, cfg model.BackupConfig) error {
	if err := backupstore.Validate(cfg); err != nil {
		return err
	}
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		return fmt.Errorf("etcd client: %w", err)
	}
	defer cli.Close()
	b, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := cli.Put(pctx, store.KeysFor(c.Opts.Name).Backup(), string(b)); err != nil {
		return fmt.Errorf("putting the backup configuration: %w", err)
	}
	return nil
}

// archiveDrainWait bounds the wait for the final leader to push its
// spool and check its chain.
const archiveDrainWait = 60 * time.Second

// checkArchive is the end-of-run archive check (issue 9: no gap after
// any failover): a WAL switch on the leader, a bounded wait until the
// archive holds the segment it completed, the leader's spool is empty and
// the leader checked the chain on its current timeline; then our own
// chain check from the oldest backup's start (or the oldest archived
// segment) on the leader's timeline. A gap or a missing history file is
// an "archive" anomaly.
func checkArchive(ctx context.Context, c *testcluster.Cluster, acfg model.BackupConfig, leader string, res *Result) {
	start := time.Now()
	defer func() {
		if res.Extra == nil {
			res.Extra = map[string]int64{}
		}
		res.Extra["archive_check_ms"] = time.Since(start).Milliseconds()
	}()
	st, err := backupstore.Open(ctx, acfg, backupstore.Credentials{})
	if err != nil {
		res.anomaly("archive", "opening the archive %s: %v", acfg.Path, err)
		return
	}
	defer st.Close()

	// The segment the switch completes: pg_switch_wal's result is the end
	// of the switch record, in the segment it completes (or, with nothing
	// written since the last switch, at its end: named as that segment).
	var seg string
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = func() error {
		conn, err := pgx.Connect(qctx, c.DSN(leader))
		if err != nil {
			return err
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(qctx, "INSERT INTO app VALUES (-1) ON CONFLICT DO NOTHING"); err != nil {
			return err
		}
		return conn.QueryRow(qctx, "SELECT pg_walfile_name(pg_switch_wal())").Scan(&seg)
	}()
	cancel()
	if err != nil {
		res.unhealthy(ctx, "archive check: a WAL switch on the leader %s: %v", leader, err)
		return
	}

	var last model.Status
	archived := false
	wctx, cancel := context.WithTimeout(ctx, archiveDrainWait)
	defer cancel()
	err = testcluster.WaitFor(wctx, leader+" to archive "+seg+" and check its chain", func() bool {
		s, err := c.Status(leader)
		if err != nil || s.Archive == nil {
			return false
		}
		last = s
		if !archived {
			lctx, lcancel := context.WithTimeout(wctx, 10*time.Second)
			l, err := backup.ListWAL(lctx, st)
			lcancel()
			archived = err == nil && l[seg]
		}
		return archived && s.Role == model.RolePrimary && s.Archive.Role == "push" && s.Archive.Spooled == 0 &&
			strings.HasPrefix(s.Archive.Chain, fmt.Sprintf("timeline %d:", s.Timeline))
	})
	if err != nil {
		var a model.ArchiveStatus
		if last.Archive != nil {
			a = *last.Archive
		}
		if ctx.Err() != nil {
			res.unhealthy(ctx, "archive check: %v", err)
			return
		}
		res.anomaly("archive", "%s not archived and checked within %v (segment %s in the archive: %v; leader %s role %s timeline %d, archive role %q spooled %d uploading %q last failure %q chain %q)",
			seg, archiveDrainWait, seg, archived, leader, last.Role, last.Timeline, a.Role, a.Spooled, a.Uploading, a.LastFailure, a.Chain)
		return
	}
	judgeArchive(ctx, st, last.Timeline, leader, last.Archive, res)
}

// judgeArchive is our own chain check of st on timeline tli, from the
// oldest backup's start (or the oldest archived segment): a gap, a
// missing history file or an empty chain is an "archive" anomaly. own is
// the leader's archive status (its own last check, for the detail).
func judgeArchive(ctx context.Context, st backupstore.Store, tli uint32, leader string, own *model.ArchiveStatus, res *Result) {
	var ownChain string
	ownOK := true
	if own != nil {
		ownChain, ownOK = own.Chain, own.ChainOK
	}
	cctx, ccancel := context.WithTimeout(ctx, time.Minute)
	defer ccancel()
	from, err := backup.ChainStart(cctx, st)
	if err != nil {
		res.anomaly("archive", "reading the backup catalog: %v", err)
		return
	}
	ch, err := backup.CheckChain(cctx, st, tli, from)
	if err != nil {
		res.anomaly("archive", "checking the chain on timeline %d: %v", tli, err)
		return
	}
	res.Archive = ch.Summary()
	if !ch.OK() || ch.Segments == 0 {
		res.anomaly("archive", "the archive after the run: %s (the leader %s said: %s)", ch.Summary(), leader, ownChain)
		return
	}
	if !ownOK {
		// Its check ran once, when its spool first drained on this
		// timeline; ours found the chain whole since.
		res.Notes = append(res.Notes, fmt.Sprintf("archive: the leader's own chain check said %q; complete at the end", ownChain))
	}
}
