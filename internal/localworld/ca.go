package localworld

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/petrel-db/petrel/internal/api"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// clusterCA creates the cluster CA in up's own etcd before any node
// starts (or finds the one an earlier run created), so that its
// fingerprint can be pinned on every node (--ca-fingerprint) and in
// cluster.json for the CLI. up trusts this etcd: it runs it.
func clusterCA(ctx context.Context, endpoints []string, cluster, suPW, dir string) (fp string, client *api.Client, err error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return "", nil, fmt.Errorf("connecting to etcd: %w", err)
	}
	defer cli.Close()
	if fp, err = api.EnsureCA(ctx, cli, cluster, suPW); err != nil {
		return "", nil, err
	}
	caPEM, err := api.PinnedCA(ctx, cli, cluster, fp)
	if err != nil {
		return "", nil, err
	}
	// For browsers and curl (the dashboard is served over TLS).
	if err := os.WriteFile(filepath.Join(dir, CAFileName), caPEM, 0o644); err != nil {
		return "", nil, fmt.Errorf("writing the CA certificate: %w", err)
	}
	client, err = api.NewClient(caPEM, cluster, api.ClientOptions{Timeout: time.Second})
	return fp, client, err
}
