package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-db/petrel/internal/localworld"
	"github.com/petrel-db/petrel/internal/store"
)

// newRegionCmds are the commands for growing, shrinking and shaping the
// regions of a cluster: scale, remove, region.
func newRegionCmds() []*cobra.Command {
	return []*cobra.Command{newScaleCmd(), newRemoveCmd(), newRegionCmd()}
}

func newScaleCmd() *cobra.Command {
	var (
		dir, region string
		count       int
	)
	cmd := &cobra.Command{
		Use:   "scale --region REGION [--count N]",
		Short: "Add members in a region to the running `petrel up` on --dir",
		Long: `Add --count members in --region to the ` + "`petrel up`" + ` running on --dir. They are
linked to every other member with the latency matrix's delays, start with an
empty data directory, clone the leader and stream from it (or from their
region's hub when the region cascades) by themselves.

On real hosts there is nothing to scale: start ` + "`petrel node`" + ` on the new host
with the cluster's name and etcd endpoints and it joins.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if region == "" {
				return errors.New("--region is required, e.g. petrel scale --region atl")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), localworld.ControlTimeout)
			defer cancel()
			ids, err := localworld.Scale(ctx, dir, region, count)
			if err != nil {
				return fmt.Errorf("scaling %s: %w", region, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added %v in %s; they clone the leader and join by themselves (watch: petrel status --dir %s)\n", ids, region, dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", localworld.DefaultDir, "directory of the running `petrel up`")
	f.StringVar(&region, "region", "", "region to add members in (e.g. atl)")
	f.IntVar(&count, "count", 1, "how many members to add")
	return cmd
}

func newRemoveCmd() *cobra.Command {
	var cf clusterFlags
	cmd := &cobra.Command{
		Use:   "remove ID",
		Short: "Take a member out: stop it, delete its data, remove its membership and slot",
		Long: `Take member ID out of the ` + "`petrel up`" + ` running on --dir: it is stopped
(a leader hands over first), its data directory deleted, its
/petrel/<cluster>/members/<id> and nodes/<id> keys removed from etcd (so the
leader drops its replication slot) and it is dropped from world.json.

With --config or --etcd (real hosts), only the keys are removed: stop the
member's agent first, or it registers again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			out := cmd.OutOrStdout()
			ctx, cancel := context.WithTimeout(cmd.Context(), localworld.ControlTimeout)
			defer cancel()
			if cf.etcd != "" || cf.configFile != "" {
				cli, t, err := cf.etcdClient(ctx)
				if err != nil {
					return err
				}
				defer cli.Close()
				if err := store.RemoveNode(ctx, cli, t.cluster, id); err != nil {
					return err
				}
				fmt.Fprintf(out, "removed %s's member and node keys; the leader drops its slot\n", id)
				return nil
			}
			if err := localworld.Remove(ctx, cf.dir, id); err != nil {
				return fmt.Errorf("removing %s: %w", id, err)
			}
			fmt.Fprintf(out, "removed %s (stopped, data deleted, keys and slot removed)\n", id)
			return nil
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	return cmd
}

func newRegionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "region",
		Short: "Per-region settings (cascading replication)",
	}
	var cf clusterFlags
	cascade := &cobra.Command{
		Use:   "cascade [REGION on|off]",
		Short: "Let a region's replicas stream from a replica of their own region (its hub)",
		Long: `With cascading on for a region outside the primary region, one member of the
region (the hub: the lowest id) streams from the leader and the others
stream from the hub, so WAL crosses the ocean once per region. Members
re-point by themselves after failovers and when the hub goes away. Without
arguments, lists the regions that cascade.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 && len(args) != 2 {
				return errors.New("want REGION on|off, or no arguments to list")
			}
			if len(args) == 2 && args[1] != "on" && args[1] != "off" {
				return fmt.Errorf("%q: want on or off", args[1])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			cli, t, err := cf.etcdClient(ctx)
			if err != nil {
				return err
			}
			defer cli.Close()
			regions, err := cascadeRegions(ctx, cli, t.cluster)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(args) == 0 {
				if len(regions) == 0 {
					fmt.Fprintln(out, "no region cascades")
				}
				for _, r := range regions {
					fmt.Fprintln(out, r)
				}
				return nil
			}
			region, on := args[0], args[1] == "on"
			regions = slices.DeleteFunc(regions, func(r string) bool { return r == region })
			if on {
				regions = append(regions, region)
			}
			sort.Strings(regions)
			if err := store.SetCascade(ctx, cli, t.cluster, regions); err != nil {
				return err
			}
			fmt.Fprintf(out, "cascading in %s: %s (cascading regions: %v)\n", region, args[1], regions)
			return nil
		},
	}
	cf.bind(cascade.Flags())
	cmd.AddCommand(cascade)
	return cmd
}

// cascadeRegions reads the cascade key (a JSON array of regions).
func cascadeRegions(ctx context.Context, c *clientv3.Client, cluster string) ([]string, error) {
	resp, err := c.Get(ctx, store.KeysFor(cluster).Cascade())
	if err != nil {
		return nil, fmt.Errorf("reading the cascade regions from etcd: %w", err)
	}
	var regions []string
	if len(resp.Kvs) > 0 {
		if err := json.Unmarshal(resp.Kvs[0].Value, &regions); err != nil {
			return nil, fmt.Errorf("decoding the cascade key: %w", err)
		}
	}
	return regions, nil
}
