package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-db/petrel/internal/localworld"
	"github.com/petrel-db/petrel/internal/statusview"
)

func newStatusCmd() *cobra.Command {
	var (
		dir, etcd, cluster string
		asJSON             bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every member's region, role, state, lag and timeline, and each region's worst lag",
		Long: `Ask every member for its GET /status and print a table (or --json).

Members come from the cluster.json of a ` + "`petrel up`" + ` directory (--dir), which
lists every member so dead ones show as offline; or, with --etcd, from the
members registered in etcd under /petrel/<cluster>/members/ (only live
agents are registered there).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			var targets []statusview.Target
			if etcd != "" {
				endpoints := strings.Split(etcd, ",")
				ms, err := statusview.MembersFromEtcd(ctx, endpoints, cluster)
				if err != nil {
					return fmt.Errorf("%w: check --etcd, and that etcd is running", err)
				}
				if len(ms) == 0 {
					return fmt.Errorf("no members registered under /petrel/%s/members/ in etcd %s: is --cluster right, and is any `petrel node` running?", cluster, etcd)
				}
				targets = statusview.TargetsFromMembers(ms)
			} else {
				cf, err := localworld.LoadClusterFile(dir)
				if errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("no cluster.json in %s: start a cluster with `petrel up`, pass --dir of one, or pass --etcd (and --cluster)", dir)
				}
				if err != nil {
					return err
				}
				if len(cf.Nodes) == 0 {
					return fmt.Errorf("%s/cluster.json lists no members", dir)
				}
				targets = statusview.TargetsFromMembers(cf.Nodes)
			}
			sts := statusview.Collect(ctx, targets)
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(sts)
			}
			statusview.Table(out, sts)
			fmt.Fprintln(out)
			statusview.RegionTable(out, sts)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", localworld.DefaultDir, "directory of a `petrel up` cluster (reads its cluster.json)")
	f.StringVar(&etcd, "etcd", "", "etcd endpoints (comma-separated), instead of --dir")
	f.StringVar(&cluster, "cluster", localworld.DefaultCluster, "cluster name (with --etcd)")
	f.BoolVar(&asJSON, "json", false, "print the members' /status documents as one JSON array")
	return cmd
}
