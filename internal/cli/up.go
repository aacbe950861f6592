package cli

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/petrel-db/petrel/internal/localworld"
)

func newUpCmd() *cobra.Command {
	var (
		dir, regions, primaryRegion, cluster string
		latency, latencyFile                 string
		noLinks, noEdges                     bool
		app                                  string
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
proxy B+50+i; etcd B+90 (clients) and B+91 (peers); for the i-th region, its
edge B+70+i, its app instance B+80+i, the edge's admin API B+92+i.

Apps: every region gets an edge router (petrel edge) with one app instance
behind it, --app 'CMD' (any language; run with /bin/sh -c) or, without it,
petrel's demo app. The app's environment: PORT, FLY_REGION and PETREL_REGION,
PRIMARY_REGION, DATABASE_URL (the leader proxy in the primary region, the
region's own replica elsewhere, so a write there fails read-only and the app
answers fly-replay), PETREL_LEADER_URL (the leader, across the link),
PETREL_INSTANCE, PETREL_REGIONS. The edges are listed in cluster.json
("edges") and printed when the cluster is up.

Regions are far apart: every member's traffic to members of other regions
(replication, API probes) and to etcd (in the primary region) crosses a
user-space link with the one-way delay of the latency matrix (defaults close
to real round trips between the cities: scl-ord 75ms, scl-ams 115ms,
scl-syd 150ms, ...). --latency 'scl-ord=40ms,jitter=2ms' or --latency-file
change it, --no-links turns links off. Status, clients and attach use the
direct addresses. While it runs, ` + "`petrel scale --region atl`" + ` adds members and
` + "`petrel remove ID`" + ` takes one out.`,
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
			if latencyFile != "" {
				b, err := os.ReadFile(latencyFile)
				if err != nil {
					return fmt.Errorf("reading --latency-file: %w", err)
				}
				opts.Latency = string(b)
			}
			if latency != "" {
				opts.Latency = strings.TrimSpace(opts.Latency + "\n" + latency)
			}
			opts.NoLinks = noLinks
			opts.App, opts.NoEdges = app, noEdges
			if noLinks && opts.Latency != "" {
				return fmt.Errorf("--no-links and --latency/--latency-file contradict each other")
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
	f.StringVar(&latency, "latency", "", "one-way delays over the default matrix, e.g. 'scl-ord=75ms,scl-syd=150ms,jitter=2ms,loss=0.001' (kept for later runs)")
	f.StringVar(&latencyFile, "latency-file", "", "file of latency settings, one 'a-b=75ms' (or local=, jitter=, loss=) per line, '#' comments")
	f.BoolVar(&noLinks, "no-links", false, "no simulated links: members dial each other directly")
	f.StringVar(&app, "app", "", "command run as the app instance of every region behind its edge (default: the demo app)")
	f.BoolVar(&noEdges, "no-edges", false, "no edges and no apps")
	f.IntVar(&basePort, "base-port", localworld.DefaultBasePort, "first port of the port range (new directory only)")
	return cmd
}
