package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/petrel-db/petrel/internal/statusview"
	"github.com/petrel-db/petrel/internal/store"
)

func newStatusCmd() *cobra.Command {
	var (
		cf     clusterFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every member's region, role, state, lag and timeline, and each region's worst lag",
		Long: `Ask every member for its GET /status and print a table (or --json).

Members come from the cluster.json of a ` + "`petrel up`" + ` directory (--dir), which
lists every member so dead ones show as offline; or, with --config (a
node's TOML, e.g. /etc/petrel.toml) or --etcd, from the members registered
in etcd under /petrel/<cluster>/members/ (only live agents are registered
there).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			var targets []statusview.Target
			t, err := cf.target()
			if err != nil {
				return err
			}
			cli, err := store.Connect(ctx, t.conn, t.cluster)
			if err != nil {
				return err
			}
			defer cli.Close()
			client, _, err := t.apiClient(ctx, cli)
			if err != nil {
				return err
			}
			if t.cf == nil {
				ms, err := statusview.MembersFromEtcd(ctx, cli, t.cluster)
				if err != nil {
					return err
				}
				if len(ms) == 0 {
					return fmt.Errorf("no members registered under %s in etcd %s: is --cluster right, and is any `petrel node` running?", store.KeysFor(t.cluster).Members(), strings.Join(t.conn.Endpoints, ","))
				}
				targets = statusview.TargetsFromMembers(ms)
			} else {
				if len(t.cf.Nodes) == 0 {
					return fmt.Errorf("%s/cluster.json lists no members", t.dir)
				}
				targets = statusview.TargetsFromMembers(t.cf.Nodes)
			}
			sts := statusview.Collect(ctx, client, targets)
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(sts)
			}
			statusview.Table(out, sts)
			fmt.Fprintln(out)
			statusview.RegionTable(out, sts)
			statusview.Archive(out, sts, time.Now())
			return nil
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.BoolVar(&asJSON, "json", false, "print the members' /status documents as one JSON array")
	return cmd
}
