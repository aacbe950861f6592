package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/petrel-db/petrel/internal/localworld"
)

func newDownCmd() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop the `petrel up` running on --dir (its members and etcd); data is kept",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			out := cmd.OutOrStdout()
			err := localworld.Down(dir)
			if errors.Is(err, localworld.ErrNotRunning) {
				fmt.Fprintf(out, "nothing to stop: no petrel up is running on %s\n", dir)
				return nil
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "stopped the cluster in %s (data kept; `petrel up --dir %s` resumes it)\n", dir, dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", localworld.DefaultDir, "directory of the `petrel up` to stop")
	return cmd
}
