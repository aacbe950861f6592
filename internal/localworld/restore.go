package localworld

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// RestoreDir is a new `petrel up` directory for a restored cluster (a
// fork): src's regions and members under a new cluster name and ports,
// its own secrets and etcd, and the seed member whose data directory the
// restore fills. `petrel up --dir Dir` then starts it.
type RestoreDir struct {
	Dir     string
	Cluster string
	Seed    string         // the first primary-region member
	DataDir string         // the seed's PGDATA (empty)
	Secrets config.Secrets // the new cluster's passwords
	w       *world
}

// ErrDirInUse: the directory a restore would create holds something.
var ErrDirInUse = errors.New("the directory is not empty")

// NewRestoreDir creates into (absent or empty) for a fork of the world in
// src (the default layout when src has none), named cluster (default:
// src's name + "-restored"), its ports at basePort (default: src's + 100,
// so both can run at once).
func NewRestoreDir(src, into, cluster string, basePort int) (*RestoreDir, error) {
	if ents, err := os.ReadDir(into); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("refusing to restore into %s: %w (a restore never overwrites a cluster: pick a new directory)", into, ErrDirInUse)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	w, err := loadWorld(src)
	if errors.Is(err, fs.ErrNotExist) {
		regions, _ := ParseRegions(DefaultRegions)
		w = &world{Cluster: DefaultCluster, PrimaryRegion: regions[0].Region, BasePort: DefaultBasePort}
		for _, r := range regions {
			for k := 1; k <= r.Count; k++ {
				w.Nodes = append(w.Nodes, worldNode{ID: fmt.Sprintf("%s%d", r.Region, k), Region: r.Region})
			}
		}
	} else if err != nil {
		return nil, err
	}
	nw := &world{PrimaryRegion: w.PrimaryRegion, Latency: w.Latency, NoLinks: w.NoLinks, NoEdges: w.NoEdges, NextNum: w.NextNum}
	nw.Cluster = cluster
	if nw.Cluster == "" {
		nw.Cluster = w.Cluster + "-restored"
	}
	if !clusterRE.MatchString(nw.Cluster) {
		return nil, fmt.Errorf("cluster name %q: use letters, digits, '.', '_' or '-'", nw.Cluster)
	}
	nw.BasePort = basePort
	if nw.BasePort == 0 {
		nw.BasePort = w.BasePort + 100
	}
	if nw.BasePort < 1024 || nw.BasePort+etcdPeerOff > 65535 {
		return nil, fmt.Errorf("base port %d: want 1024..%d", nw.BasePort, 65535-etcdPeerOff)
	}
	nw.EtcdClientPort, nw.EtcdPeerPort = nw.BasePort+etcdClientOff, nw.BasePort+etcdPeerOff
	for i, n := range w.Nodes {
		nw.Nodes = append(nw.Nodes, worldNode{ID: n.ID, Region: n.Region,
			PGPort: nw.BasePort + pgPortOffset + i, APIPort: nw.BasePort + apiPortOffset + i, ProxyPort: nw.BasePort + proxyPortOffset + i})
		if nw.Seed == "" && n.Region == nw.PrimaryRegion {
			nw.Seed = n.ID
		}
	}
	if nw.Seed == "" {
		return nil, fmt.Errorf("%s has no member in its primary region %s", src, nw.PrimaryRegion)
	}
	if err := os.MkdirAll(into, 0o700); err != nil {
		return nil, err
	}
	rd := &RestoreDir{Dir: into, Cluster: nw.Cluster, Seed: nw.Seed, DataDir: filepath.Join(into, "nodes", nw.Seed, "pgdata"), w: nw}
	path, _, err := ensureSecrets(into)
	if err == nil {
		_, _, err = ensureExtraSecrets(path)
	}
	if err == nil {
		rd.Secrets, err = config.LoadSecrets(path)
	}
	if err != nil {
		rd.Remove()
		return nil, err
	}
	return rd, nil
}

// Finish writes world.json, naming the seed and what was restored: only
// a finished restore makes a directory `petrel up` starts.
func (r *RestoreDir) Finish(restoredFrom string) error {
	r.w.RestoredFrom = restoredFrom
	if err := writeJSON(filepath.Join(r.Dir, WorldFileName), r.w, 0o600); err != nil {
		return fmt.Errorf("writing world.json: %w", err)
	}
	return nil
}

// Remove deletes the directory (a failed restore leaves nothing behind).
func (r *RestoreDir) Remove() { os.RemoveAll(r.Dir) }

// SourceBackupConfig is where a `petrel up` directory's backups go when
// its etcd is not running: `up` configures BackupsDir under it.
func SourceBackupConfig(dir string) (model.BackupConfig, error) {
	abs, err := filepath.Abs(filepath.Join(dir, BackupsDir))
	if err != nil {
		return model.BackupConfig{}, err
	}
	if _, err := os.Stat(abs); err != nil {
		return model.BackupConfig{}, fmt.Errorf("no backup store in %s: %w", dir, err)
	}
	return model.BackupConfig{Kind: "file", Path: abs}, nil
}

// claimSeed claims a restored world's initialization for its seed, once:
// the other members then wait for it and clone it, and none runs initdb.
func claimSeed(ctx context.Context, endpoints []string, w *world, lg *slog.Logger) error {
	if w.Seed == "" {
		return nil
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("connecting to etcd: %w", err)
	}
	defer cli.Close()
	info := model.ClusterInfo{Name: w.Cluster, PrimaryRegion: w.PrimaryRegion, InitializedBy: w.Seed, InitializedAt: time.Now().UTC(), RestoredFrom: w.RestoredFrom}
	err = store.New(cli, w.Cluster, 0, lg).ClaimInit(ctx, info)
	switch {
	case err == nil:
		lg.Info("the restored member bootstraps the cluster; the others clone it", "seed", w.Seed, "restored_from", w.RestoredFrom)
	case errors.Is(err, store.ErrLostRace):
		// Claimed on an earlier run.
	default:
		return err
	}
	return nil
}

// RestoreInto restores plan from st into a new directory into (see
// NewRestoreDir), whose seed member holds the data; on failure nothing is
// left of into.
func RestoreInto(ctx context.Context, st backupstore.Store, plan backup.RestorePlan, src, into, cluster string, basePort int, lg *slog.Logger) (*RestoreDir, backup.RestoreResult, error) {
	var res backup.RestoreResult
	rd, err := NewRestoreDir(src, into, cluster, basePort)
	if err != nil {
		return nil, res, err
	}
	// The socket directory lives under /tmp: a unix socket's path is
	// limited to 107 bytes, and nothing but this process connects.
	run, err := os.MkdirTemp("", "petrel-restore-")
	if err != nil {
		rd.Remove()
		return nil, res, err
	}
	defer os.RemoveAll(run)
	var port int
	for _, n := range rd.w.Nodes {
		if n.ID == rd.Seed {
			port = n.PGPort
		}
	}
	srv, err := pg.New(pg.Options{DataDir: rd.DataDir, RunDir: filepath.Join(run, "run"), Port: port, Logger: lg.With("component", "pg")})
	if err != nil {
		rd.Remove()
		return nil, res, err
	}
	defer srv.Close()
	res, err = backup.Restore(ctx, st, plan, backup.RestoreOptions{Server: srv, WALDir: filepath.Join(rd.Dir, "nodes", rd.Seed, "restore-wal"), Secrets: rd.Secrets, Log: lg})
	if err == nil {
		err = rd.Finish(fmt.Sprintf("%s (base backup %s) from %s", plan.Target, plan.Backup.ID, st))
	}
	if err != nil {
		rd.Remove()
		return nil, res, err
	}
	return rd, res, nil
}
