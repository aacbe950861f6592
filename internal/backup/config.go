package backup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrNotConfigured: the cluster has no backup store.
var ErrNotConfigured = errors.New("the cluster has no backup store (petrel backup configure)")

// ReadConfig reads cluster's backup configuration from etcd.
func ReadConfig(ctx context.Context, cli *clientv3.Client, cluster string) (model.BackupConfig, error) {
	var c model.BackupConfig
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := cli.Get(cctx, store.KeysFor(cluster).Backup())
	if err != nil {
		return c, fmt.Errorf("reading the backup configuration: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return c, ErrNotConfigured
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &c); err != nil {
		return c, fmt.Errorf("decoding the backup configuration: %w", err)
	}
	return c, nil
}

// OpenCluster opens cluster's backup store with the S3 credentials of
// secretsFile or the environment.
func OpenCluster(ctx context.Context, cli *clientv3.Client, cluster, secretsFile string) (backupstore.Store, model.BackupConfig, error) {
	c, err := ReadConfig(ctx, cli, cluster)
	if err != nil {
		return nil, c, err
	}
	sec, err := config.LoadBackupSecrets(secretsFile)
	if err != nil && c.Kind == "s3" {
		return nil, c, err
	}
	st, err := backupstore.Open(ctx, c, backupstore.Credentials{AccessKeyID: sec.AccessKeyID, SecretAccessKey: sec.SecretAccessKey, SessionToken: sec.SessionToken})
	return st, c, err
}

// Configure checks c (valid, reachable, empty or this cluster's) and
// stores it as cluster's backup configuration; the agents follow within
// a second.
func Configure(ctx context.Context, cli *clientv3.Client, cluster, secretsFile string, c model.BackupConfig) error {
	if err := backupstore.Validate(c); err != nil {
		return fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	sec, err := config.LoadBackupSecrets(secretsFile)
	if err != nil && c.Kind == "s3" {
		return err
	}
	return ConfigureWith(ctx, cli, cluster, backupstore.Open, backupstore.Credentials{AccessKeyID: sec.AccessKeyID, SecretAccessKey: sec.SecretAccessKey, SessionToken: sec.SessionToken}, c)
}

// ErrBadConfig: the backup configuration itself is invalid (not the
// store behind it).
var ErrBadConfig = errors.New("invalid backup configuration")

// ConfigureWith is Configure with the store opened by open with creds
// (a member's own: the admin API's PUT /api/v1/backup/config).
func ConfigureWith(ctx context.Context, cli *clientv3.Client, cluster string, open func(context.Context, model.BackupConfig, backupstore.Credentials) (backupstore.Store, error), creds backupstore.Credentials, c model.BackupConfig) error {
	if err := backupstore.Validate(c); err != nil {
		return fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	st, err := open(ctx, c, creds)
	if err != nil {
		return err
	}
	defer st.Close()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	m, err := backupstore.ReadMarker(cctx, st)
	switch {
	case err == nil && m.Cluster != cluster:
		return fmt.Errorf("%s holds the archive of cluster %q: %w", st, m.Cluster, backupstore.ErrForeign)
	case errors.Is(err, backupstore.ErrNotFound):
		objs, err := st.List(cctx, "")
		if err != nil {
			return err
		}
		if len(objs) > 0 {
			return fmt.Errorf("%s is not empty (%s, ...) and has no petrel marker: %w", st, objs[0].Key, backupstore.ErrForeign)
		}
	case err != nil:
		return err
	}
	v, _ := json.Marshal(c)
	if _, err := cli.Put(cctx, store.KeysFor(cluster).Backup(), string(v)); err != nil {
		return fmt.Errorf("storing the backup configuration: %w", err)
	}
	return nil
}
