package cli

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/petrel-db/petrel/internal/localworld"
)

func newUpCmd() *cobra.Command {
	var (
		dir, regions, primaryRegion, cluster string
		basePort                             int
	)
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a local multi-region cluster: embedded etcd and one `petrel node` per member",
		Long: `Run a whole petrel cluster on this machine, in the foreground, until Ctrl-C
(or ` + "`petrel down`" + `). It starts an embedded etcd and one ` + "`petrel node`" + ` child
process per member, restarts members that die, waits for a primary, then
prints the members and how to connect.

Everything lives in --dir: secrets.env (generated passwords), cluster.json
(endpoints and the superuser connection string, for scripts), etcd/ and
nodes/<id>/ (each member's data and agent.log). Running again on the same
--dir resumes the same members on the same ports; --regions, --cluster,
--primary-region and --base-port only apply to a new directory.

Ports from --base-port B, for member i: Postgres B+10+i, API B+30+i,
proxy B+50+i; etcd B+90 (clients) and B+91 (peers).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := localworld.Options{
				Dir:    dir,
				Stdout: cmd.OutOrStdout(),
				Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
			}
			f := cmd.Flags()
			if f.Changed("regions") {
				rs, err := localworld.ParseRegions(regions)
				if err != nil {
					return err
				}
				opts.Regions = rs
			}
			if f.Changed("primary-region") {
				opts.PrimaryRegion = primaryRegion
			}
			if f.Changed("cluster") {
				opts.Cluster = cluster
			}
			if f.Changed("base-port") {
				opts.BasePort = basePort
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return localworld.Run(ctx, opts)
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", localworld.DefaultDir, "directory holding the cluster's data, secrets and cluster.json")
	f.StringVar(&regions, "regions", localworld.DefaultRegions, "members per region, e.g. scl=2,ord=1 (new directory only)")
	f.StringVar(&primaryRegion, "primary-region", "", "region the leader lives in (default: the first of --regions; new directory only)")
	f.StringVar(&cluster, "cluster", localworld.DefaultCluster, "cluster name (new directory only)")
	f.IntVar(&basePort, "base-port", localworld.DefaultBasePort, "first port of the port range (new directory only)")
	return cmd
}
