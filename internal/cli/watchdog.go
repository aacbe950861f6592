package cli

import (
	"context"

	"github.com/petrel-db/petrel/internal/watchdog"
	"github.com/spf13/cobra"
)

// newWatchdogCmd is the node agent's fencing child (package watchdog);
// the agent starts it, people do not.
func newWatchdogCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "watchdog",
		Short:  "Fence a leader's Postgres when its agent stops renewing (started by petrel node)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			log := newLogger("info").With("component", "watchdog")
			return watchdog.Run(context.Background(), cmd.InOrStdin(), watchdog.Config{}, log)
		},
	}
}
