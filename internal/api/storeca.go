package api

// The cluster CA as tools see it in the store: never trusted without a
// pinned fingerprint.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/petrel-db/petrel/internal/pki"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// ErrNoPin means a tool was given no CA fingerprint to check the store's
// CA against.
var ErrNoPin = errors.New("no CA fingerprint pinned: pass --ca-fingerprint (the cluster CA's SHA-256, which `petrel up` keeps in cluster.json and the first node logs as ca_fingerprint), or ca_fingerprint in the node's config")

// PinnedCA reads cluster's CA certificate from etcd and checks it against
// pin (see pki.CheckPinned): the store is not trusted with the CA.
func PinnedCA(ctx context.Context, etcd *clientv3.Client, cluster, pin string) ([]byte, error) {
	if pin == "" {
		return nil, ErrNoPin
	}
	if _, err := pki.NormalizeFingerprint(pin); err != nil {
		return nil, err
	}
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := etcd.Get(gctx, store.ClusterKey(cluster, store.KeyCA))
	if err != nil {
		return nil, fmt.Errorf("reading the cluster CA from etcd: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("cluster %q has no CA in etcd yet (no node has started, or --cluster is wrong)", cluster)
	}
	st, err := pki.Decode(resp.Kvs[0].Value)
	if err != nil {
		return nil, err
	}
	if err := pki.CheckPinned([]byte(st.CertPEM), pin); err != nil {
		return nil, err
	}
	return []byte(st.CertPEM), nil
}

// EnsureCA creates cluster's CA in etcd unless one exists (create-only),
// sealed with the superuser password, and returns its fingerprint. For
// the harnesses that own their etcd (`petrel up`, internal/testcluster):
// they create the CA before any node starts and pin it on every node.
func EnsureCA(ctx context.Context, etcd *clientv3.Client, cluster, suPassword string) (string, error) {
	key := store.ClusterKey(cluster, store.KeyCA)
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := etcd.Get(gctx, key)
	if err != nil {
		return "", fmt.Errorf("reading the cluster CA from etcd: %w", err)
	}
	if len(resp.Kvs) == 0 {
		_, stored, err := pki.NewCA(cluster, suPassword)
		if err != nil {
			return "", err
		}
		if _, err := etcd.Txn(gctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(stored.Encode()))).Commit(); err != nil {
			return "", fmt.Errorf("creating the cluster CA: %w", err)
		}
		if resp, err = etcd.Get(gctx, key); err != nil || len(resp.Kvs) == 0 {
			return "", fmt.Errorf("reading the cluster CA back: %w", errors.Join(err, errors.New("not found")))
		}
	}
	st, err := pki.Decode(resp.Kvs[0].Value)
	if err != nil {
		return "", err
	}
	return pki.Fingerprint([]byte(st.CertPEM))
}
