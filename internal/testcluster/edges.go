package testcluster

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/edge"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// EdgeOptions configure an edge started by StartEdge.
type EdgeOptions struct {
	Region    string
	Instances []edge.Instance
	// DatabaseURL and NodeAPI (https, a node's APIURL): see edge.Config
	// (read-your-writes).
	DatabaseURL, NodeAPI string
	RYWWait              time.Duration
	HealthPath           string
	ReplayTimeout        time.Duration
	Logger               *slog.Logger
}

// Edge is a running edge router (in this process, on real sockets, its
// store session on the cluster's real etcd).
type Edge struct {
	URL   string
	Edge  *edge.Edge
	Admin string // admin API URL
	stop  func()
}

// Close stops the edge.
func (e *Edge) Close() { e.stop() }

var edgeSecretOnce sync.Once
var edgeSecret string

// StartEdge runs an edge for o.Region. With a World, the edge is a host in
// it ("edge-<region>"): other edges, and etcd, are reached across the
// links of its region.
func (c *Cluster) StartEdge(ctx context.Context, o EdgeOptions) (*Edge, error) {
	edgeSecretOnce.Do(func() { edgeSecret = randomSecret() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		return nil, err
	}
	host := "edge-" + o.Region
	dial := func(a string) string { return a }
	etcd := c.EtcdEndpoints()
	if c.world != nil {
		if err := c.world.AddHost(host, o.Region, ln.Addr().String()); err != nil {
			ln.Close()
			admin.Close()
			return nil, fmt.Errorf("adding %s to the world: %w", host, err)
		}
		dial = func(a string) string { return c.world.Via(host, a) }
		u, _ := url.Parse(c.etcdClientURL)
		etcd = []string{"http://" + c.world.Via(host, u.Host)}
	}
	lg := o.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	nodeAPI, err := api.NewClient(c.CAPEM, c.Opts.Name, api.ClientOptions{Timeout: time.Second, Dial: dial})
	if err != nil {
		ln.Close()
		admin.Close()
		return nil, err
	}
	cfg := edge.Config{
		Region: o.Region, PrimaryRegion: "scl", AdvertiseURL: "http://" + ln.Addr().String(),
		Instances: o.Instances, HealthPath: o.HealthPath, DatabaseURL: o.DatabaseURL, NodeAPI: o.NodeAPI, NodeAPIClient: nodeAPI,
		RYWWait: o.RYWWait, ReplayTimeout: o.ReplayTimeout, Secret: edgeSecret, Dial: dial,
	}
	e, err := edge.New(cfg, lg)
	if err != nil {
		ln.Close()
		admin.Close()
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: etcd, DialTimeout: 3 * time.Second})
	if err != nil {
		ln.Close()
		admin.Close()
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer cli.Close()
		session := store.NewEdgeSession(cli, c.Opts.Name, store.Edge{ID: "edge-" + o.Region, Region: o.Region, URL: cfg.AdvertiseURL}, lg)
		_ = e.Run(rctx, ln, admin, session)
	}()
	return &Edge{URL: cfg.AdvertiseURL, Edge: e, Admin: "http://" + admin.Addr().String(), stop: func() {
		cancel()
		<-done
		if c.world != nil {
			c.world.Remove(host)
		}
	}}, nil
}

// AppHost adds a host for an app in region (it dials; nobody dials it) and
// returns a function giving the address it uses to reach addr: across the
// link of its region.
func (c *Cluster) AppHost(region string) (via func(addr string) string, err error) {
	if c.world == nil {
		return func(a string) string { return a }, nil
	}
	host := "app-" + region
	if err := c.world.AddHost(host, region); err != nil {
		return nil, err
	}
	return func(a string) string { return c.world.Via(host, a) }, nil
}
