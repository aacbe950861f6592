package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/localworld"
	"github.com/spf13/cobra"
)

func newRestoreCmd() *cobra.Command {
	var (
		cf                clusterFlags
		from, into, name  string
		backupID, at, lsn string
		latest, dryRun    bool
		basePort          int
		timeout           time.Duration
	)
	cmd := &cobra.Command{
		Use:   "restore (--backup ID | --time T | --lsn L | --latest) --into NEWDIR",
		Short: "Restore a cluster's backups into a new cluster (a fork): a base backup, a point in time, an LSN or the latest",
		Long: `Restores from the backup store of the cluster in --dir (or --config / --etcd),
or from the store given by --from (a directory, or s3://BUCKET/PREFIX?endpoint=URL
when the cluster and its etcd are gone), into a new ` + "`petrel up`" + ` directory --into:
its own cluster name (--name, default <cluster>-restored), etcd and ports
(--base-port, default the source's + 100), the restored data in its first
primary-region member, which bootstraps the new cluster while the others clone it.
Start it with ` + "`petrel up --dir NEWDIR`" + `. A running cluster is never overwritten:
--into must be new or empty.

The point is one of --backup ID (the backup's consistent end), --time T (RFC 3339:
the last commit at or before T), --lsn L, or --latest (every archived WAL file).
Every file read is checked against its checksum. A point the archive does not
cover (before the oldest backup, past the newest archived WAL, or behind a
missing or corrupt file) is refused with the reason, and nothing is created.
--dry-run prints the plan only. On a host, ` + "`petrel node --restore-from`" + ` seeds a
new cluster instead.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			target, err := backup.ParseTarget(backupID, at, lsn, latest)
			if err != nil {
				return err
			}
			if into == "" && !dryRun {
				return fmt.Errorf("--into NEWDIR is required: the new cluster's directory")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			st, err := restoreSource(ctx, &cf, from)
			if err != nil {
				return err
			}
			defer st.Close()
			plan, err := backup.PlanRestore(ctx, st, target)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprintln(out, plan.Describe())
			if dryRun {
				return nil
			}
			lg := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			rd, res, err := localworld.RestoreInto(ctx, st, plan, cf.dir, into, name, basePort, lg)
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "restored into %s: cluster %s, seeded by %s, timeline %d at %s\nstart it: petrel up --dir %s\n", rd.Dir, rd.Cluster, rd.Seed, res.Timeline, res.LSN, rd.Dir)
			return nil
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.StringVar(&from, "from", "", "the backup store itself (a directory, or s3://BUCKET/PREFIX?endpoint=URL&region=R), instead of the cluster's configured one")
	f.StringVar(&into, "into", "", "new `petrel up` directory for the restored cluster (absent or empty)")
	f.StringVar(&name, "name", "", "the new cluster's name (default: the source's + \"-restored\")")
	f.IntVar(&basePort, "base-port", 0, "the new cluster's first port (default: the source's + 100)")
	f.StringVar(&backupID, "backup", "", "restore this base backup (petrel backup list)")
	f.StringVar(&at, "time", "", "restore to this time (RFC 3339)")
	f.StringVar(&lsn, "lsn", "", "restore up to this WAL position")
	f.BoolVar(&latest, "latest", false, "restore every archived WAL file")
	f.BoolVar(&dryRun, "dry-run", false, "print the plan and stop")
	f.DurationVar(&timeout, "timeout", 2*time.Hour, "give up after this long")
	return cmd
}

// restoreSource opens the store a restore reads: --from, else the
// cluster's configured store (from its etcd), else, with --dir and its
// etcd down, the directory `petrel up` archives to.
func restoreSource(ctx context.Context, cf *clusterFlags, from string) (backupstore.Store, error) {
	if from != "" {
		c, err := backup.ParseLocation(from)
		if err != nil {
			return nil, err
		}
		return backup.OpenLocation(ctx, c, cf.secretsFile)
	}
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cli, t, err := cf.etcdClient(ectx)
	if err == nil {
		defer cli.Close()
		st, _, err := backup.OpenCluster(ctx, cli, t.cluster, t.secrets)
		return st, err
	}
	if cf.etcd != "" || cf.configFile != "" {
		return nil, fmt.Errorf("reading the cluster's backup configuration: %w (or give the store with --from)", err)
	}
	c, lerr := localworld.SourceBackupConfig(cf.dir)
	if lerr != nil {
		return nil, fmt.Errorf("%w; and %w (give the store with --from)", err, lerr)
	}
	return backup.OpenLocation(ctx, c, cf.secretsFile)
}
