package cli

import (
	"context"
	"fmt"
	"time"

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
after an interruption restarts the members again.

A member's admin API runs it (POST /api/v1/restart); the command follows
its progress and returns when it ends. Interrupting the command does not
stop it: GET /api/v1/operation on that member shows it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, err := openAdmin(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			op, err := c.RollingRestart(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			_, err = c.Wait(ctx, op.ID, func(l string) { fmt.Fprintln(out, l) })
			return err
		},
	}
	cf.bind(cmd.Flags())
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Minute, "give up after this long")
	return cmd
}
