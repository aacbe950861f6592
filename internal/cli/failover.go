package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

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
		Long: `Ask a member's admin API for a planned switchover (POST /api/v1/switchover)
and wait for the new leader. Needs OPERATOR_PASSWORD (or SU_PASSWORD) from the
environment, the secrets file, --config's secrets_file or --dir's secrets.env.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, err := openAdmin(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			res, err := c.Switchover(ctx, to, allowSecondary)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), res.Log)
			if res.Log != "" && !strings.HasSuffix(res.Log, "\n") {
				fmt.Fprintln(cmd.OutOrStdout())
			}
			return nil
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.StringVar(&to, "to", "", "member to hand leadership to (default: the most caught-up synchronous standby)")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "how long to wait for the new leader")
	f.BoolVar(&allowSecondary, "allow-secondary-region", false, "allow --to outside the primary region; the primary region moves to the target's region")
	return cmd
}
