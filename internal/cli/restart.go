package cli

import (
	"context"
	"time"

	"github.com/petrel-db/petrel/internal/ops"
	"github.com/spf13/cobra"
)

func newRestartCmd() *cobra.Command {
	var (
		cf      clusterFlags
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "restart",
		Short: "Rolling restart of every member's Postgres, keeping writes available",
		Long: `Restart every member's Postgres one at a time: each replica (back streaming
before the next), then a planned switchover, after which the old leader
restarts as a replica. Writes pause only for the switchover. Re-running
after an interruption restarts the members again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			cli, t, err := cf.etcdClient(ctx)
			if err != nil {
				return err
			}
			defer cli.Close()
			o := &ops.Cluster{Etcd: cli, Name: t.cluster, Out: cmd.OutOrStdout()}
			return o.RollingRestart(ctx)
		},
	}
	cf.bind(cmd.Flags())
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Minute, "give up after this long")
	return cmd
}
