package cli

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"github.com/petrel-db/petrel/internal/nodecmd"
	"github.com/spf13/cobra"
)

// NodeBinary is the lean node agent (cmd/petrel-node), looked for next to
// petrel.
const NodeBinary = "petrel-node"

// newNodeCmd is `petrel node`. With petrel-node next to petrel it becomes
// that program (exec: the same pid, arguments and environment), so the
// process that runs for good on every host holds the agent alone, not
// the whole CLI with `petrel up`'s embedded etcd; without it the node
// runs here.
func newNodeCmd() *cobra.Command {
	cmd := nodecmd.Command()
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		exe, err := os.Executable()
		if err != nil {
			return run(c, args)
		}
		lean := filepath.Join(filepath.Dir(exe), NodeBinary)
		st, err := os.Stat(lean)
		i := slices.Index(os.Args, "node")
		if err != nil || !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 || i < 1 {
			return run(c, args)
		}
		argv := append([]string{lean}, os.Args[i+1:]...)
		if err := syscall.Exec(lean, argv, os.Environ()); err != nil {
			return fmt.Errorf("running %s: %w", lean, err)
		}
		return nil // not reached
	}
	return cmd
}

// newLogger is the CLI's logger (the node's own).
func newLogger(level string) *slog.Logger { return nodecmd.NewLogger(level) }
