package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"text/tabwriter"

	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/spf13/cobra"
)

func newBackupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "The cluster's backup store and WAL archive: configure, list, verify",
	}
	cmd.AddCommand(newBackupConfigureCmd(), newBackupListCmd(), newBackupVerifyCmd())
	return cmd
}

func newBackupConfigureCmd() *cobra.Command {
	var (
		cf  clusterFlags
		c   model.BackupConfig
		sec int
	)
	cmd := &cobra.Command{
		Use:   "configure",
		Short: "Set where the cluster archives WAL and keeps backups (a directory, or S3-compatible storage)",
		Long: `Stores the backup configuration in etcd; the agents start archiving to it within
a second. --path for a directory every archiving member can write (a shared
mount), or --bucket (with --endpoint for an S3-compatible service, --prefix,
--region) for S3. Credentials are never flags: AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY come from each node's environment or secrets file.
A store holding another cluster's archive is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c.Kind = "file"
			if c.Bucket != "" {
				c.Kind = "s3"
			}
			c.ArchiveTimeoutSec = sec
			cli, t, err := cf.etcdClient(cmd.Context())
			if err != nil {
				return err
			}
			defer cli.Close()
			if err := backup.Configure(cmd.Context(), cli, t.cluster, t.secrets, c); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backup store of %s: %s store configured\n", t.cluster, c.Kind)
			return nil
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.StringVar(&c.Path, "path", "", "directory of a file store (absolute)")
	f.StringVar(&c.Bucket, "bucket", "", "S3 bucket")
	f.StringVar(&c.Endpoint, "endpoint", "", "URL of an S3-compatible service (default AWS)")
	f.StringVar(&c.Prefix, "prefix", "", "key prefix inside the store")
	f.StringVar(&c.Region, "region", "", "S3 region")
	f.IntVar(&sec, "archive-timeout", 60, "seconds after which a partly filled WAL segment is archived")
	return cmd
}

func newBackupListCmd() *cobra.Command {
	var (
		cf     clusterFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the base backups in the cluster's backup store",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cli, t, err := cf.etcdClient(cmd.Context())
			if err != nil {
				return err
			}
			defer cli.Close()
			st, _, err := backup.OpenCluster(cmd.Context(), cli, t.cluster, t.secrets)
			if err != nil {
				return err
			}
			defer st.Close()
			bs, err := backup.ListBackups(cmd.Context(), st)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if bs == nil {
					bs = []backup.Backup{}
				}
				return enc.Encode(bs)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tTL\tSTART LSN\tEND LSN\tSTART\tEND\tSIZE\tSTATUS")
			for _, b := range bs {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%d MiB\t%s\n", b.ID, b.Timeline, b.StartLSN, b.EndLSN,
					b.StartTime.Format("2006-01-02 15:04:05"), b.EndTime.Format("15:04:05"), b.Size>>20, b.Status)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newBackupVerifyCmd() *cobra.Command {
	var (
		cf     clusterFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Read back every archived WAL file (checksums) and check the chain from every backup to now",
		Long: `Reads every archived WAL file back and checks its SHA-256, then checks that the
archive holds every segment a restore replays, from each backup's start (or
the oldest archived segment) along the newest timeline's history to the newest
segment. Gaps are listed as ranges per timeline. Exits non-zero when anything
is corrupt or missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cli, t, err := cf.etcdClient(cmd.Context())
			if err != nil {
				return err
			}
			defer cli.Close()
			st, _, err := backup.OpenCluster(cmd.Context(), cli, t.cluster, t.secrets)
			if err != nil {
				return err
			}
			defer st.Close()
			r, err := backup.Verify(cmd.Context(), st)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(out, "%s: %d WAL files read back, %d corrupt\n", r.Store, r.Files, len(r.Corrupt))
				for _, c := range r.Corrupt {
					fmt.Fprintf(out, "  CORRUPT %s\n", c)
				}
				for _, c := range r.Chains {
					fmt.Fprintf(out, "chain %s\n", c.Summary())
				}
			}
			if !r.OK() {
				return errors.New("the archive is not complete: see above")
			}
			return nil
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}
