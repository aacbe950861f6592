package cli

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/petrel-db/petrel/internal/demoapp"
	"github.com/spf13/cobra"
)

// newDemoAppCmd runs the demo web app (package demoapp); it is configured
// by the environment, like an app deployed in a region.
func newDemoAppCmd() *cobra.Command {
	var logLevel string
	cmd := &cobra.Command{
		Use:   "demo-app",
		Short: "Run the multi-region demo web app (env: PORT, FLY_REGION, PRIMARY_REGION, DATABASE_URL, ...)",
		Long: `Runs a small notes web app that reads from its region's database and has
its writes replayed to the primary region (fly-replay) by petrel's edge.

Environment: PORT (listens on 127.0.0.1:$PORT) or PETREL_LISTEN; FLY_REGION
or PETREL_REGION; PRIMARY_REGION; DATABASE_URL (the leader in the primary
region, the region's replica elsewhere); PETREL_INSTANCE; PETREL_REGIONS
(comma-separated, for tabs); PETREL_DEMO_EAGER=1 replays write methods
before they run.`,
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := demoapp.ConfigFromEnv()
			if err != nil {
				return err
			}
			log := newLogger(logLevel).With("component", "demo-app")
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return demoapp.Run(ctx, cfg, log)
		},
	}
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
