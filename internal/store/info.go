package store

import (
	"context"

	"github.com/petrel-db/petrel/internal/model"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// RecordBootstrap rewrites the info key with info (its SystemID set) if
// the key is unchanged since rev: a concurrent region move wins and the
// leader records it again on its next round.
func (s *Store) RecordBootstrap(ctx context.Context, info model.ClusterInfo, rev int64) error {
	k := s.key("info")
	return s.txn(ctx, "recording the bootstrap in the cluster info",
		[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", rev)},
		clientv3.OpPut(k, mustJSON(info)))
}
