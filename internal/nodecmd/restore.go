package nodecmd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/store"
)

// seedFromRestore makes this member the seed of a new cluster restored
// from cfg.RestoreFrom, before the agent starts: it claims the cluster's
// initialization (so no other member runs initdb: they wait, then clone
// it), restores into its empty data directory, and leaves the rest to the
// agent, whose engine bootstraps from the restored data (the claimant of
// an unfinished bootstrap). A cluster already initialized by another
// member, or already bootstrapped, is never restored over: the first is
// refused, the second ignored (restore_from may stay in the config file).
func seedFromRestore(ctx context.Context, cfg config.Node, sec config.Secrets, srv *pg.Server, st *store.Store, log *slog.Logger) error {
	raw, ok, err := st.Get(ctx, "info")
	if err != nil {
		return fmt.Errorf("restore_from: %w", err)
	}
	var info model.ClusterInfo
	if ok {
		if err := json.Unmarshal(raw, &info); err != nil {
			return fmt.Errorf("restore_from: decoding the cluster info: %w", err)
		}
		switch {
		case info.SystemID != "":
			log.Info("restore_from ignored: the cluster is bootstrapped", "initialized_by", info.InitializedBy, "restored_from", info.RestoredFrom)
			return nil
		case info.InitializedBy != cfg.ID:
			return fmt.Errorf("restore_from: cluster %q is being initialized by %s: a restore seeds a new cluster only (start the restoring member first, on an empty cluster)", cfg.Cluster, info.InitializedBy)
		case srv.Initialized():
			// Restored on an earlier run; the agent finishes the bootstrap.
			return nil
		}
	} else if srv.Initialized() {
		return fmt.Errorf("restore_from: %s already holds data: a restore never overwrites it", srv.DataDir())
	}
	target := backup.Target{Latest: true}
	if cfg.RestoreTarget != "" {
		if target, err = backup.ParseTargetSpec(cfg.RestoreTarget); err != nil {
			return err
		}
	}
	loc, err := backup.ParseLocation(cfg.RestoreFrom)
	if err != nil {
		return fmt.Errorf("restore_from: %w", err)
	}
	bs, err := backup.OpenLocation(ctx, loc, cfg.SecretsFile)
	if err != nil {
		return fmt.Errorf("restore_from: %w", err)
	}
	defer bs.Close()
	plan, err := backup.PlanRestore(ctx, bs, target)
	if err != nil {
		return fmt.Errorf("restore_from: %w", err)
	}
	if !ok {
		info = model.ClusterInfo{Name: cfg.Cluster, PrimaryRegion: cfg.PrimaryRegion, InitializedBy: cfg.ID, InitializedAt: time.Now().UTC(),
			RestoredFrom: fmt.Sprintf("%s (base backup %s) from %s", target, plan.Backup.ID, bs)}
		if err := st.ClaimInit(ctx, info); errors.Is(err, store.ErrLostRace) {
			return fmt.Errorf("restore_from: another member initialized cluster %q first: a restore seeds a new cluster only", cfg.Cluster)
		} else if err != nil {
			return fmt.Errorf("restore_from: %w", err)
		}
	}
	log.Info("restoring: this member seeds the cluster", "plan", plan.Describe())
	// Recovery runs on a server of its own over the same directories: no
	// TCP listener (nobody may write before the promotion), no archiving
	// (the WAL it replays is the source cluster's).
	rsrv, err := pg.New(pg.Options{BinDir: cfg.PGBin, DataDir: srv.DataDir(), RunDir: srv.SocketDir(), Port: cfg.PGPort, RunAs: cfg.RunAs, Logger: log.With("component", "restore")})
	if err != nil {
		return err
	}
	defer rsrv.Close()
	res, err := backup.Restore(ctx, bs, plan, backup.RestoreOptions{Server: rsrv, WALDir: filepath.Join(cfg.DataDir, "restore-wal"), Secrets: sec, Log: log})
	if err != nil {
		return fmt.Errorf("restore_from: %w", err)
	}
	log.Info("restored: bootstrapping the cluster from it", "timeline", res.Timeline, "lsn", res.LSN)
	return nil
}
