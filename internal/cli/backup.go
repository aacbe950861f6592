package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/petrel-db/petrel/internal/adminclient"
	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/statusview"
	"github.com/spf13/cobra"
)

func newBackupCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "The cluster's backup store and WAL archive: configure, create, list, verify, prune",
	}
	cmd.AddCommand(newBackupConfigureCmd(), newBackupCreateCmd(), newBackupListCmd(), newBackupVerifyCmd(), newBackupPruneCmd())
	return cmd
}

func newBackupConfigureCmd() *cobra.Command {
	var (
		cf     clusterFlags
		c      model.BackupConfig
		sec    int
		window time.Duration
		every  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "configure",
		Short: "Set where the cluster archives WAL and keeps backups (a directory, or S3-compatible storage)",
		Long: `Has a member (through its admin API: PUT /api/v1/backup/config) check the
store with the member's own credentials and store the backup configuration;
the agents start archiving to it within a second. --path for a directory every
archiving member can write (a shared mount), or --bucket (with --endpoint for
an S3-compatible service, --prefix, --region) for S3. Credentials are never
flags, and this machine needs none of the store's: AWS_ACCESS_KEY_ID and
AWS_SECRET_ACCESS_KEY come from each node's environment or secrets file.
A store holding another cluster's archive is refused. With --schedule, the
archiving member (the leader) takes a base backup that often from the freshest
streaming replica, then prunes with the retention settings.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c.Kind = "file"
			if c.Bucket != "" {
				c.Kind = "s3"
			}
			c.ArchiveTimeoutSec = sec
			c.RetentionWindowSec = int64(window / time.Second)
			c.ScheduleSec = int64(every / time.Second)
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			a, err := openAdmin(ctx, cf)
			if err != nil {
				return err
			}
			defer a.Close()
			if err := a.ConfigureBackups(ctx, c); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backup store configured: %s store (checked by %s)\n", c.Kind, a.Member())
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
	f.DurationVar(&window, "retention-window", backup.DefaultRetentionWindow, "backup prune's default recovery window")
	f.IntVar(&c.RetentionMin, "retention-min", backup.DefaultRetentionMin, "backup prune's default minimum number of backups kept")
	f.DurationVar(&every, "schedule", 0, "take a base backup this often (e.g. 24h; at least 1m), each followed by a prune (0: none)")
	return cmd
}

func newBackupPruneCmd() *cobra.Command {
	var (
		cf     clusterFlags
		dryRun bool
		asJSON bool
		window time.Duration
		keep   int
	)
	cmd := &cobra.Command{
		Use:   "prune",
		Short: "Delete the backups and WAL the retention policy no longer needs",
		Long: `Keeps every backup needed to restore any point of the recovery window (the
newest backup ending before the window's start and everything newer), and at
least --min complete backups; deletes older backups, failed backups older
than the newest complete one, and the WAL before the oldest kept backup's
start segment (history files are always kept). --window and --min default to
the backup configuration's retention (backup configure), else 168h and 2.
--dry-run lists without deleting. A member does it (POST
/api/v1/backups/prune), with its own store credentials, and records it in
the cluster's events.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), pruneTimeout)
			defer cancel()
			a, err := openAdminWith(ctx, cf, adminclient.Options{RequestTimeout: pruneTimeout})
			if err != nil {
				return err
			}
			defer a.Close()
			var w *time.Duration
			var m *int
			if cmd.Flags().Changed("window") {
				w = &window
			}
			if cmd.Flags().Changed("min") {
				m = &keep
			}
			res, err := a.PruneBackups(ctx, w, m, dryRun)
			if res.Store == "" {
				return err // nothing was planned
			}
			p := res.Plan
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if eerr := enc.Encode(p); eerr != nil && err == nil {
					err = eerr
				}
				return err
			}
			verb := "deleted"
			if dryRun {
				verb = "would delete"
			}
			fmt.Fprintf(out, "%s: window %s, minimum %d: keeping %d backups %v, WAL from %s on\n", res.Store, res.Window, res.Min, len(p.Keep), p.Keep, p.KeepFrom)
			for _, id := range p.DeleteBackups {
				fmt.Fprintf(out, "%s backup %s\n", verb, id)
			}
			for _, n := range p.DeleteWAL {
				fmt.Fprintf(out, "%s WAL %s\n", verb, n)
			}
			fmt.Fprintf(out, "%s %d backups and %d WAL files\n", verb, len(p.DeleteBackups), len(p.DeleteWAL))
			return err
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.BoolVar(&dryRun, "dry-run", false, "list what would be deleted, delete nothing")
	f.BoolVar(&asJSON, "json", false, "print the plan as JSON")
	f.DurationVar(&window, "window", backup.DefaultRetentionWindow, "recovery window (default: the backup configuration's, else 168h)")
	f.IntVar(&keep, "min", backup.DefaultRetentionMin, "minimum complete backups kept (default: the backup configuration's, else 2)")
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
		Long: `List the base backups in the cluster's backup store, as a member's admin API
reads its catalog (GET /api/v1/backups): the CLI needs no credentials of the
store.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			c, err := openAdmin(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			bs, err := c.Backups(ctx)
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

// How long prune and verify may take: they delete or read back every
// file of a large archive (on the member; the CLI waits for the answer).
const (
	pruneTimeout  = 30 * time.Minute
	verifyTimeout = 6 * time.Hour
)

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
is corrupt or missing. A member does the reading (GET /api/v1/backups/verify),
with its own store credentials; on a large archive it takes long.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), verifyTimeout)
			defer cancel()
			a, err := openAdminWith(ctx, cf, adminclient.Options{RequestTimeout: verifyTimeout})
			if err != nil {
				return err
			}
			defer a.Close()
			r, err := a.VerifyBackups(ctx)
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

// isTerminal says whether w is a character device (a terminal).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func newBackupCreateCmd() *cobra.Command {
	var cf clusterFlags
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Take a base backup into the cluster's backup store (from a streaming replica when there is one)",
		Long: `Asks the archiving member (the leader) through its admin API (POST
/api/v1/backups) to take a base backup now, and follows it until it is done
(GET /api/v1/backups/running). The leader runs pg_basebackup (tar, without
WAL: the archive holds it) against the most caught-up streaming replica (after
a checkpoint, which the standby's backup starts from), else itself, as the
replication role over TLS checked against the cluster CA, and stores it
zstd-compressed with its manifest: this machine needs neither the replication
password nor the store's credentials. The backup is recorded as an event.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			octx, cancel := context.WithTimeout(ctx, 2*time.Minute)
			a, err := openAdmin(octx, cf)
			cancel()
			if err != nil {
				return err
			}
			defer a.Close()
			rctx, cancel := context.WithTimeout(ctx, time.Minute)
			req, err := a.RequestBackup(rctx)
			cancel()
			if err != nil {
				return err
			}
			b, err := followBackup(ctx, cmd, a.Client, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "backup %s: timeline %d, %s..%s, %d MiB (%d MiB stored)\n", b.ID, b.Timeline, b.StartLSN, b.EndLSN, b.Size>>20, b.Stored>>20)
			return nil
		},
	}
	cf.bind(cmd.Flags())
	return cmd
}

// followBackup polls the member that took request req until the backup
// serving it ended, drawing its progress: a bar redrawn in place on a
// terminal; elsewhere (logs, CI) a line every 10 s, and one at the end.
func followBackup(ctx context.Context, cmd *cobra.Command, a *adminclient.Client, req adminclient.BackupRequest) (backup.Backup, error) {
	out, errOut := cmd.OutOrStdout(), cmd.ErrOrStderr()
	tty, every, end := isTerminal(errOut), 10*time.Second, "\n"
	if tty {
		every, end = 250*time.Millisecond, ""
	}
	var (
		announced, shown bool
		last, failing    time.Time
		start            = time.Now()
	)
	announce := func(src, role string) {
		if !announced && src != "" {
			announced = true
			if role == "" {
				fmt.Fprintf(out, "backing up from %s\n", src)
				return
			}
			fmt.Fprintf(out, "backing up from %s (%s)\n", src, role)
		}
	}
	draw := func(read, total int64) {
		line := statusview.ProgressBar(read, total, time.Since(start), 30)
		if tty {
			line = "\r" + line + "\x1b[K"
		}
		fmt.Fprint(errOut, line+end)
		last, shown = time.Now(), true
	}
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		st, err := a.RunningBackup(pctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return backup.Backup{}, ctx.Err()
		case err != nil:
			// The member may be busy for a moment; not for long.
			if failing.IsZero() {
				failing = time.Now()
			}
			if time.Since(failing) > time.Minute {
				return backup.Backup{}, fmt.Errorf("following the backup on %s: %w", req.Member, err)
			}
		case st.Last != nil && st.Last.Request >= req.Request:
			if st.Last.Error != "" || st.Last.Backup == nil {
				if shown && tty {
					fmt.Fprintln(errOut)
				}
				return backup.Backup{}, fmt.Errorf("the base backup on %s failed: %s", req.Member, st.Last.Error)
			}
			b := *st.Last.Backup
			announce(b.Source, "")
			draw(b.Size, b.Size)
			if tty {
				fmt.Fprintln(errOut)
			}
			return b, nil
		case st.Requested < req.Request:
			return backup.Backup{}, fmt.Errorf("%s restarted before taking the backup (request %d, it knows %d): run backup create again", req.Member, req.Request, st.Requested)
		case st.Running != nil && st.Running.Request >= req.Request:
			failing = time.Time{}
			announce(st.Running.Source, st.Running.Role)
			if st.Running.Read > 0 && time.Since(last) >= every {
				draw(st.Running.Read, st.Running.Total)
			}
		case !st.Archiving:
			return backup.Backup{}, fmt.Errorf("%s stopped archiving (it is no longer the leader?) before taking the backup: run backup create again", req.Member)
		default:
			failing = time.Time{} // requested, not started yet (one runs)
		}
		select {
		case <-ctx.Done():
			return backup.Backup{}, ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}
