package store

// Keys added for TLS, cluster-wide settings and rolling restarts (issue 3):
//
//	/petrel/<c>/ca              pki.StoredCA; created once (create-only) by the first node that needs it
//	/petrel/<c>/config          JSON map of Postgres settings; written by `petrel config set` (CAS)
//	/petrel/<c>/restart/<id>    RestartRequest; written by `petrel config set`, deleted by member <id> once restarted

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key names under /petrel/<c>/.
const (
	KeyCA      = "ca"
	KeyConfig  = "config"
	KeyRestart = "restart"
)

// ClusterKey is the full etcd key of parts under cluster.
func ClusterKey(cluster string, parts ...string) string {
	return "/petrel/" + cluster + "/" + strings.Join(parts, "/")
}

// RestartRequest asks a replica to restart its Postgres (to apply settings
// that need a restart).
type RestartRequest struct {
	RequestedAt time.Time `json:"requested_at"`
	ConfigRev   int64     `json:"config_rev"` // the /config revision being applied
	// InPlace lets the leader restart where it is (writes pause for the
	// restart): the CLI asks for it only when a setting that standbys must
	// match or exceed is lowered, which no switchover order can roll.
	InPlace bool `json:"in_place,omitempty"`
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

// ClusterSettings decodes the cached /config map (nil when absent) and its
// revision.
func (s *Store) ClusterSettings() (map[string]string, int64, error) {
	v, rev, ok := s.Raw(KeyConfig)
	if !ok {
		return nil, 0, nil
	}
	m := map[string]string{}
	if err := json.Unmarshal(v, &m); err != nil {
		return nil, rev, fmt.Errorf("decoding %s: %w", s.key(KeyConfig), err)
	}
	return m, rev, nil
}
