package testcluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"

	"github.com/petrel-db/petrel/internal/netsim"
)

// EtcdHost is the id of the store in the cluster's netsim.World.
const EtcdHost = "etcd"

func (c *Cluster) startWorld(m netsim.Matrix) error {
	ctx, cancel := context.WithCancel(context.Background())
	c.world = netsim.NewWorld(ctx, m, slog.New(slog.DiscardHandler))
	c.worldStop = cancel
	u, err := url.Parse(c.etcdClientURL)
	if err != nil {
		cancel()
		return err
	}
	if err := c.world.AddService(EtcdHost, "scl", u.Host); err != nil {
		cancel()
		return fmt.Errorf("adding etcd to the world: %w", err)
	}
	return nil
}

func (c *Cluster) addToWorld(n *Node) error {
	if err := c.world.AddHost(n.ID, n.Region, n.pgAddr(), n.apiAddr()); err != nil {
		return fmt.Errorf("adding %s to the world: %w", n.ID, err)
	}
	if _, err := c.world.WriteDialMaps(c.Opts.Dir); err != nil {
		return fmt.Errorf("writing dial maps: %w", err)
	}
	return nil
}

func (n *Node) pgAddr() string  { return "127.0.0.1:" + strconv.Itoa(n.PGPort) }
func (n *Node) apiAddr() string { return "127.0.0.1:" + strconv.Itoa(n.APIPort) }

func (c *Cluster) dialMapPath(id string) string {
	return filepath.Join(c.Opts.Dir, id+".dialmap.json")
}

// nodeEtcd is the etcd endpoint list node id is given: through its own
// link when the cluster has a World.
func (c *Cluster) nodeEtcd(id string) []string {
	if c.world == nil {
		return c.EtcdEndpoints()
	}
	u, _ := url.Parse(c.etcdClientURL)
	return []string{"http://" + c.world.Via(id, u.Host)}
}

// World is the cluster's network (nil without Options.World). Hosts are
// node ids and EtcdHost.
func (c *Cluster) World() *netsim.World { return c.world }
