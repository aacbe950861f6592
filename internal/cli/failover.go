package cli

import (
	"context"
	"time"

	"github.com/petrel-db/petrel/internal/ops"
	"github.com/spf13/cobra"
)

func newFailoverCmd() *cobra.Command {
	var cf clusterFlags
	var to string
	var timeout time.Duration
	var allowSecondary bool
	cmd := &cobra.Command{
		Use:   "failover",
		Short: "Planned switchover: stop writes on the leader, let the target catch up, promote it",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			cli, t, err := cf.etcdClient(ctx)
			if err != nil {
				return err
			}
			defer cli.Close()
			o := &ops.Cluster{Etcd: cli, Name: t.cluster, Out: cmd.OutOrStdout()}
			_, _, err = o.Switchover(ctx, ops.SwitchoverRequest{To: to, AllowSecondaryRegion: allowSecondary})
			return err
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.StringVar(&to, "to", "", "member to hand leadership to (default: the most caught-up synchronous standby)")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the new leader")
	f.BoolVar(&allowSecondary, "allow-secondary-region", false, "allow --to outside the primary region; the primary region moves to the target's region")
	return cmd
}
