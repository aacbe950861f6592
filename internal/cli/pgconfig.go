package cli

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newConfigCmd() *cobra.Command {
	var (
		cf      clusterFlags
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show or change cluster-wide PostgreSQL settings",
		Long: `Cluster-wide PostgreSQL settings, stored in etcd (/petrel/<cluster>/config) and
applied by every member (petrel-user.conf, then a reload). Settings that need
a restart are applied with a rolling restart that keeps writes available:
replicas one at a time (each back streaming before the next), then a planned
switchover, then the old leader.`,
	}
	show := &cobra.Command{
		Use: "show", Short: "Show the stored settings and each member's pending restarts", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			c, err := openCluster(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			settings, rev, err := c.ops(nil).LoadSettings(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(settings) == 0 {
				fmt.Fprintln(out, "no cluster-wide settings (set some with `petrel config set name=value`)")
			} else {
				tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVALUE")
				for _, k := range slices.Sorted(maps.Keys(settings)) {
					fmt.Fprintf(tw, "%s\t%s\n", k, settings[k])
				}
				tw.Flush()
			}
			t, err := c.topology(ctx)
			if err != nil {
				return err
			}
			for _, id := range t.IDs() {
				st, err := c.ops(nil).MemberStatus(ctx, t.Members[id])
				switch {
				case err != nil:
					fmt.Fprintf(out, "%s: unreachable (%v)\n", id, err)
				case st.PendingRestart:
					fmt.Fprintf(out, "%s: pending restart (run `petrel config set` to finish the rolling restart)\n", id)
				case rev > 0 && st.ConfigRev < rev:
					fmt.Fprintf(out, "%s: not applied yet\n", id)
				}
			}
			return nil
		},
	}
	set := &cobra.Command{
		Use:   "set [name=value...]",
		Short: "Validate, store and apply settings (no arguments: finish an interrupted rolling restart)",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, err := openCluster(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			o := c.ops(out)
			rev, err := o.SetSettings(ctx, args)
			if err != nil {
				return err
			}
			return o.RollOut(ctx, rev)
		},
	}
	unset := &cobra.Command{
		Use: "unset name...", Short: "Remove settings (back to petrel's defaults), then apply", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, err := openCluster(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			settings, rev, err := c.ops(nil).LoadSettings(ctx)
			if err != nil {
				return err
			}
			for _, k := range args {
				if _, ok := settings[strings.ToLower(k)]; !ok {
					return fmt.Errorf("%s is not set (see `petrel config show`)", k)
				}
				delete(settings, strings.ToLower(k))
			}
			o := c.ops(cmd.OutOrStdout())
			newRev, err := o.StoreSettings(ctx, settings, rev)
			if err != nil {
				return err
			}
			return o.RollOut(ctx, newRev)
		},
	}
	cf.bind(cmd.PersistentFlags())
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 15*time.Minute, "give up after this long (re-running resumes)")
	cmd.AddCommand(show, set, unset)
	return cmd
}
