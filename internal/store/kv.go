package store

// Single keys read and written by name, outside the watch-decoded
// Snapshot: the cached value (Raw), a create-only put, a direct read from
// etcd, and a delete conditioned on a revision. The cluster CA lives here:
//
//	/petrel/<c>/ca    pki.StoredCA; created once (create-only) by the first node that needs it;
//	                  replaced only by a superuser password rotation (PutRotation, CAS)

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// KeyCA names the cluster CA's key under /petrel/<c>/.
const KeyCA = "ca"

// ClusterKey is the full etcd key of parts under cluster.
func ClusterKey(cluster string, parts ...string) string {
	return "/petrel/" + cluster + "/" + strings.Join(parts, "/")
}

// Raw returns the cached value and mod revision of the key made of parts.
func (s *Store) Raw(parts ...string) (value []byte, modRev int64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	kv, ok := s.kvs[s.key(parts...)]
	if !ok {
		return nil, 0, false
	}
	return kv.Value, kv.ModRevision, true
}

// CreateIfAbsent puts value at the key made of parts unless it exists; it
// reports whether this call created it.
func (s *Store) CreateIfAbsent(ctx context.Context, value []byte, parts ...string) (bool, error) {
	k := s.key(parts...)
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := s.cli.Txn(cctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(value))).Commit()
	if err != nil {
		return false, fmt.Errorf("creating %s: %w", k, err)
	}
	return resp.Succeeded, nil
}

// Get reads the key made of parts from etcd (not the cache).
func (s *Store) Get(ctx context.Context, parts ...string) ([]byte, bool, error) {
	k := s.key(parts...)
	cctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	resp, err := s.cli.Get(cctx, k)
	if err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", k, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, false, nil
	}
	return resp.Kvs[0].Value, true, nil
}

// DeleteIfRev deletes the key made of parts if its mod revision is rev.
func (s *Store) DeleteIfRev(ctx context.Context, rev int64, parts ...string) error {
	k := s.key(parts...)
	return s.txn(ctx, "deleting "+k, []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(k), "=", rev)}, clientv3.OpDelete(k))
}
