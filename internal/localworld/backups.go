package localworld

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// BackupsDir is where `petrel up` keeps the cluster's backups and WAL
// archive, under its directory.
const BackupsDir = "backups"

// ensureBackupConfig gives a cluster without a backup configuration a
// local directory store under dir (create-only: a configuration the
// operator set with `petrel backup configure` is kept).
func ensureBackupConfig(ctx context.Context, endpoints []string, cluster, dir string) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("connecting to etcd: %w", err)
	}
	defer cli.Close()
	abs, err := filepath.Abs(filepath.Join(dir, BackupsDir))
	if err != nil {
		return err
	}
	v, _ := json.Marshal(model.BackupConfig{Kind: "file", Path: abs})
	k := store.KeysFor(cluster).Backup()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := cli.Txn(cctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).Then(clientv3.OpPut(k, string(v))).Commit(); err != nil {
		return fmt.Errorf("storing the backup configuration: %w", err)
	}
	return nil
}
