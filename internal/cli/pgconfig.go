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
switchover, then the old leader.

A member's admin API does it (GET and PUT /api/v1/config; the rolling
restart runs there in the background and this command follows it).`,
	}
	show := &cobra.Command{
		Use: "show", Short: "Show the stored settings and each member's pending restarts", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			c, err := openAdmin(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			settings, rev, err := c.Config(ctx)
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
			sts, err := c.Status(ctx)
			if err != nil {
				return err
			}
			for _, st := range sts {
				switch {
				case st.State == "unreachable":
					fmt.Fprintf(out, "%s: unreachable (%s)\n", st.ID, strings.Join(st.Problems, "; "))
				case st.PendingRestart:
					fmt.Fprintf(out, "%s: pending restart (run `petrel config set` to finish the rolling restart)\n", st.ID)
				case rev > 0 && st.ConfigRev < rev:
					fmt.Fprintf(out, "%s: not applied yet\n", st.ID)
				}
			}
			return nil
		},
	}
	set := &cobra.Command{
		Use:   "set [name=value...]",
		Short: "Validate, store and apply settings (no arguments: finish an interrupted rolling restart)",
		RunE: func(cmd *cobra.Command, args []string) error {
			settings := map[string]string{}
			var bad []string
			for _, a := range args {
				k, v, ok := strings.Cut(a, "=")
				k = strings.ToLower(strings.TrimSpace(k))
				if !ok || k == "" {
					bad = append(bad, fmt.Sprintf("%q: write name=value", a))
					continue
				}
				settings[k] = strings.TrimSpace(v)
			}
			if len(bad) > 0 {
				return fmt.Errorf("nothing changed:\n  %s", strings.Join(bad, "\n  "))
			}
			return changeConfig(cmd, cf, timeout, settings, nil)
		},
	}
	unset := &cobra.Command{
		Use: "unset name...", Short: "Remove settings (back to petrel's defaults), then apply", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return changeConfig(cmd, cf, timeout, nil, args)
		},
	}
	cf.bind(cmd.PersistentFlags())
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 15*time.Minute, "give up after this long (re-running resumes)")
	cmd.AddCommand(show, set, unset)
	return cmd
}

// changeConfig stores settings (or removes unset) through the admin API
// and follows the operation applying them, printing its progress.
func changeConfig(cmd *cobra.Command, cf clusterFlags, timeout time.Duration, settings map[string]string, unset []string) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	c, err := openAdmin(ctx, cf)
	if err != nil {
		return err
	}
	defer c.Close()
	ch, err := c.SetConfig(ctx, settings, unset)
	if err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	_, err = c.Wait(ctx, ch.Operation.ID, func(l string) { fmt.Fprintln(out, l) })
	return err
}
