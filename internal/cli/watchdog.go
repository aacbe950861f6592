package cli

import (
	"errors"

	"github.com/petrel-db/petrel/internal/watchdog"
	"github.com/spf13/cobra"
)

// newWatchdogCmd is the node agent's fencing child (package watchdog) for
// installs without the petrel-watchdog binary next to petrel; the agent
// starts it, people do not.
func newWatchdogCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "watchdog",
		Short:  "Fence a leader's Postgres when its agent stops renewing (started by petrel node)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if watchdog.Main() != 0 {
				return errors.New("watchdog failed")
			}
			return nil
		},
	}
}
