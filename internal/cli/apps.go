package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/petrel-db/petrel/internal/adminclient"
	"github.com/petrel-db/petrel/internal/apps"
	"github.com/petrel-db/petrel/internal/ops"
	"github.com/petrel-db/petrel/internal/statusview"
	"github.com/spf13/cobra"
)

// appCommands are attach, detach, connect, db and users.
func appCommands() []*cobra.Command {
	return []*cobra.Command{newAttachCmd(), newDetachCmd(), newConnectCmd(), newDBCmd(), newUsersCmd()}
}

func defaultName(app string) string { return ops.DefaultName(app) }

func newAttachCmd() *cobra.Command {
	var (
		cf                             clusterFlags
		app, db, user, varName, caFile string
		timeout                        time.Duration
	)
	cmd := &cobra.Command{
		Use:   "attach --app NAME",
		Short: "Create an app's database and least-privilege user, and print its DATABASE_URL",
		Long: `Create database --database (default: the app name) owned by a new LOGIN user
--user (default: the app name) with a random password. The user is not a
superuser and cannot create databases or roles; CONNECT on the database is
revoked from PUBLIC and granted to the user only.

Prints VAR=postgres://... through the leader proxy (always reaches the
writable leader), then VAR_<REGION>=... for each region's nearest member
(direct, read-only on replicas). The password is shown only here.

--ca-file PATH writes the cluster CA certificate there and adds
sslmode=verify-full (direct URLs) or verify-ca (proxy URL: the certificate
names the leader, not the proxy host) with sslrootcert=PATH to the URLs.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if app == "" {
				return fmt.Errorf("--app is required")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, err := openAdmin(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			if caFile != "" {
				if caFile, err = filepath.Abs(caFile); err != nil {
					return err
				}
				if err := os.WriteFile(caFile, c.caPEM, 0o644); err != nil {
					return fmt.Errorf("writing the CA certificate: %w", err)
				}
			}
			var fallback string
			if u, err := url.Parse(c.dbURL); err == nil {
				fallback = u.Host
			}
			res, err := c.Attach(ctx, adminclient.AttachRequest{App: app, Database: db, User: user, RootCert: caFile, FallbackProxy: fallback})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if res.ProxyURL == "" {
				fmt.Fprintln(os.Stderr, "petrel: no member publishes a leader proxy address (start nodes with --proxy-port); printing direct URLs only")
			} else {
				fmt.Fprintf(out, "%s=%s\n", varName, res.ProxyURL)
			}
			for _, r := range res.Regions {
				fmt.Fprintf(out, "%s_%s=%s\n", varName, strings.ToUpper(r), res.RegionURLs[r])
			}
			return nil
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.StringVar(&app, "app", "", "application name")
	f.StringVar(&db, "database", "", "database to create (default: the app name, - as _)")
	f.StringVar(&user, "user", "", "user to create (default: the app name, - as _)")
	f.StringVar(&varName, "variable-name", "DATABASE_URL", "name of the printed variable")
	f.StringVar(&caFile, "ca-file", "", "write the cluster CA certificate here and ask clients to verify the server")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return cmd
}

func newDetachCmd() *cobra.Command {
	var (
		cf            clusterFlags
		app, user, db string
		dropDB        bool
		timeout       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "detach --app NAME",
		Short: "Remove an app's user (its objects are reassigned to the admin; the database is kept unless --drop-database)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			if app == "" && user == "" {
				return fmt.Errorf("an app (or a user) is required: --app NAME")
			}
			if app == "" && dropDB && db == "" {
				return fmt.Errorf("dropping the database needs the app or the database (--app or --database)")
			}
			c, err := openAdmin(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			var res adminclient.DetachResult
			if app == "" && db == "" {
				// A user alone: no database is named.
				res.User = user
				err = c.DeleteUser(ctx, user)
			} else {
				if app == "" {
					app = user // the path names something; user and database are explicit
				}
				res, err = c.Detach(ctx, app, user, db, dropDB)
			}
			if err != nil {
				return err
			}
			msg := fmt.Sprintf("removed user %s", res.User)
			if dropDB {
				msg += " and database " + res.Database
			} else if res.Database != "" {
				msg += fmt.Sprintf(" (database %s kept, now owned by %s)", res.Database, res.Owner)
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.StringVar(&app, "app", "", "application name")
	f.StringVar(&user, "user", "", "user to remove (default: the app name)")
	f.StringVar(&db, "database", "", "the app's database (default: the app name)")
	f.BoolVar(&dropDB, "drop-database", false, "drop the app's database too (its data is lost)")
	f.DurationVar(&timeout, "timeout", 30*time.Second, "give up after this long")
	return cmd
}

func newConnectCmd() *cobra.Command {
	var (
		cf         clusterFlags
		region, db string
	)
	cmd := &cobra.Command{
		Use:   "connect",
		Short: "Open psql on the leader, or on --region's nearest replica",
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			c, err := openCluster(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			t, err := c.topology(ctx)
			if err != nil {
				return err
			}
			m, ok := t.Members[t.Leader]
			if region != "" {
				if m, ok = t.RegionMember(region); !ok {
					return fmt.Errorf("no live member in region %q (regions: %s)", region, strings.Join(t.Regions(), ", "))
				}
			} else if !ok {
				return apps.ErrNoLeader
			}
			return runPsql(cmd, c, m.PostgresAddr, db, args)
		},
	}
	f := cmd.Flags()
	cf.bind(f)
	f.StringVar(&region, "region", "", "connect to this region's nearest member instead of the leader")
	f.StringVarP(&db, "database", "d", "postgres", "database")
	return cmd
}

// runPsql runs psql against addr. The password goes through a 0600
// PGPASSFILE removed afterwards, never the arguments.
func runPsql(cmd *cobra.Command, c *clusterConn, addr, db string, extra []string) error {
	psql, err := exec.LookPath("psql")
	if err != nil {
		out, perr := exec.Command("pg_config", "--bindir").Output()
		if perr != nil {
			return fmt.Errorf("psql not found in PATH: install the PostgreSQL client")
		}
		psql = filepath.Join(strings.TrimSpace(string(out)), "psql")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("member address %q: %w", addr, err)
	}
	tmp, err := os.MkdirTemp("", "petrel-connect")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	esc := strings.NewReplacer(`\`, `\\`, ":", `\:`)
	pass := filepath.Join(tmp, "pgpass")
	if err := os.WriteFile(pass, []byte(fmt.Sprintf("*:*:*:%s:%s\n", esc.Replace(c.user), esc.Replace(c.pass))), 0o600); err != nil {
		return err
	}
	env := append(os.Environ(), "PGPASSFILE="+pass, "PGCONNECT_TIMEOUT=5", "PGAPPNAME=petrel_connect")
	if c.caPEM != nil {
		ca := filepath.Join(tmp, "ca.crt")
		if err := os.WriteFile(ca, c.caPEM, 0o600); err != nil {
			return err
		}
		env = append(env, "PGSSLMODE=verify-full", "PGSSLROOTCERT="+ca)
	}
	p := exec.Command(psql, append([]string{"-h", host, "-p", port, "-U", c.user, "-d", db}, extra...)...)
	p.Env, p.Stdin, p.Stdout, p.Stderr = env, os.Stdin, cmd.OutOrStdout(), cmd.ErrOrStderr()
	// psql handles Ctrl-C itself (cancels the query); do not die of it.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	defer signal.Stop(sig)
	if err := p.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			// Scripts tell psql's failures apart by status (2: connection
			// lost, 3: script error with ON_ERROR_STOP): pass it on.
			return exitError{code: ee.ExitCode(), err: fmt.Errorf("psql exited with status %d", ee.ExitCode())}
		}
		return fmt.Errorf("psql: %w", err)
	}
	return nil
}

// exitError makes petrel exit with code instead of 1.
type exitError struct {
	code int
	err  error
}

func (e exitError) Error() string { return e.err.Error() }
func (e exitError) Unwrap() error { return e.err }

func newDBCmd() *cobra.Command {
	var cf clusterFlags
	var owner string
	cmd := &cobra.Command{Use: "db", Short: "List or create databases"}
	list := &cobra.Command{
		Use: "list", Short: "List databases", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, cf, func(ctx context.Context, c *adminConn) error {
				dbs, err := c.Databases(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
				fmt.Fprintln(tw, "NAME\tOWNER\tSIZE")
				for _, d := range dbs {
					size := "-" // no CONNECT on it (the operator on another admin's app database)
					if d.Size >= 0 {
						size = statusview.HumanBytes(d.Size)
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", d.Name, d.Owner, size)
				}
				return tw.Flush()
			})
		},
	}
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a database (owned by --owner, default the admin; CONNECT revoked from PUBLIC when --owner is set)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, cf, func(ctx context.Context, c *adminConn) error {
				if err := c.CreateDatabase(ctx, args[0], owner); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "created database %s\n", args[0])
				return nil
			})
		},
	}
	create.Flags().StringVar(&owner, "owner", "", "owner of the new database (an existing user)")
	cf.bind(cmd.PersistentFlags())
	cmd.AddCommand(list, create)
	return cmd
}

func newUsersCmd() *cobra.Command {
	var cf clusterFlags
	cmd := &cobra.Command{Use: "users", Short: "List, create or delete users"}
	list := &cobra.Command{
		Use: "list", Short: "List login users", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, cf, func(ctx context.Context, c *adminConn) error {
				us, err := c.Users(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
				fmt.Fprintln(tw, "NAME\tATTRIBUTES")
				for _, u := range us {
					fmt.Fprintf(tw, "%s\t%s\n", u.Name, strings.Join(u.Attributes, ","))
				}
				return tw.Flush()
			})
		},
	}
	create := &cobra.Command{
		Use: "create NAME", Short: "Create a least-privilege login user with a random password (printed once)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, cf, func(ctx context.Context, c *adminConn) error {
				pw, err := c.CreateUser(ctx, args[0])
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "created user %s\npassword: %s\n", args[0], pw)
				return nil
			})
		},
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a user (its objects are reassigned to the admin)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, cf, func(ctx context.Context, c *adminConn) error {
				if err := c.DeleteUser(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted user %s\n", args[0])
				return nil
			})
		},
	}
	var passwordFile string
	password := &cobra.Command{
		Use:   "password NAME",
		Short: "Give a user a new password: random (printed once) or from --password-file",
		Long: `Give an app user a new password (its open sessions stay up; new ones need
the new password). The password is random and printed once, or read from
--password-file (a 0600 file; never an argument). petrel's own roles
(postgres, replicator, operator) are rotated with petrel secrets rotate.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, cf, func(ctx context.Context, c *adminConn) error {
				pw, shown := "", true
				if passwordFile != "" {
					var err error
					if pw, err = readPasswordFile(passwordFile); err != nil {
						return err
					}
					shown = false
				}
				pw, err := c.SetUserPassword(ctx, args[0], pw)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "new password set for user %s\n", args[0])
				if shown {
					fmt.Fprintf(cmd.OutOrStdout(), "password: %s\n", pw)
				}
				return nil
			})
		},
	}
	password.Flags().StringVar(&passwordFile, "password-file", "", "read the new password from this 0600 file (default: a random one, printed once)")
	cf.bind(cmd.PersistentFlags())
	cmd.AddCommand(list, create, del, password)
	return cmd
}

// withAdmin runs fn with the cluster's admin API (30 s in all).
func withAdmin(cmd *cobra.Command, cf clusterFlags, fn func(context.Context, *adminConn) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
	defer cancel()
	c, err := openAdmin(ctx, cf)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(ctx, c)
}
