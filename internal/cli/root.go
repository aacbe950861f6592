// Package cli is petrel's command line: one cobra command per file, each
// a thin layer over the packages that do the work.
package cli

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/petrel-db/petrel/internal/proxy"

	"github.com/spf13/cobra"
)

// Execute runs the CLI and returns the process exit code.
func Execute() int {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(proxy.DefaultProcs())
	}
	root := &cobra.Command{
		Use:           "petrel",
		Short:         "Self-hostable, automated, multi-region, highly available PostgreSQL",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newBackupCmd(), newVersionCmd(), newNodeCmd(), newWatchdogCmd(), newProxyCmd(), newEdgeCmd(), newUpCmd(), newStatusCmd(), newDownCmd(), newFailoverCmd(), newEventsCmd(), newRestartCmd(), newSecretsCmd(), newRestoreCmd())
	root.AddCommand(newRegionCmds()...)
	root.AddCommand(newDemoAppCmd())                          // hidden: the multi-region demo web app
	root.AddCommand(append(appCommands(), newConfigCmd())...) // attach, detach, connect, db, users, config (issue 3)
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "petrel:", err)
		var xe exitError
		if errors.As(err, &xe) {
			return xe.code
		}
		return 1
	}
	return 0
}
