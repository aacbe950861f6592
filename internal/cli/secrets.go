package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/localworld"
	"github.com/petrel-db/petrel/internal/ops"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/spf13/cobra"
)

// secretKeys are the secrets file's names of the rotatable passwords.
var secretKeys = map[string]string{
	store.SecretSuperuser:   "SU_PASSWORD",
	store.SecretReplication: "REPL_PASSWORD",
	store.SecretOperator:    "OPERATOR_PASSWORD",
}

func newSecretsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "secrets", Short: "The cluster's own passwords"}
	cmd.AddCommand(newSecretsRotateCmd())
	return cmd
}

func newSecretsRotateCmd() *cobra.Command {
	var (
		cf           clusterFlags
		passwordFile string
		timeout      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "rotate superuser|replication|operator",
		Short: "Change the superuser, replication or operator password on a running cluster, without a failover",
		Long: `Change one of the cluster's own passwords while it runs: no failover, no
restart, and the members' replication and superuser connections keep being
accepted. The new password is read from --password-file (a 0600 file; never
an argument), or generated.

The members learn it through etcd, sealed under a key derived from the
cluster secret; once every live member holds it the leader's role is
changed (ALTER ROLE), then every member switches. For the superuser, the
cluster CA and the cluster secret in etcd are re-sealed under the new
password. For the operator, the admin API and the dashboard accept the new
password (and tokens from it) and refuse the old one.

The secrets file this command read its credentials from is rewritten
(atomically, 0600): in a ` + "`petrel up`" + ` directory secrets.env and
cluster.json, so ` + "`petrel up`" + ` keeps working after a restart. On hosts, put
the new password in every host's secrets file: a node restarted with the
old one still works (it finds the rotation in etcd and warns that its file
is stale), except a node with no DATA_DIR/api (new, or wiped) and a stale
SU_PASSWORD, which stops with a message saying so. A generated password
always goes to that file (without one, pass --password-file).

Needs SU_PASSWORD (environment or secrets file): it opens the cluster
secret. Apps' own passwords: ` + "`petrel users password`" + `.`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: store.SecretKinds,
		RunE: func(cmd *cobra.Command, args []string) error {
			kind := args[0]
			key, ok := secretKeys[kind]
			if !ok {
				return fmt.Errorf("unknown password %q: one of %s", kind, strings.Join(store.SecretKinds, ", "))
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			t, err := cf.target()
			if err != nil {
				return err
			}
			// The secrets file that receives the new password ("" none).
			file := t.secrets
			if _, err := os.Stat(file); file == "" || err != nil {
				file = ""
			}
			newPW := ""
			if passwordFile != "" {
				if newPW, err = readPasswordFile(passwordFile); err != nil {
					return err
				}
			} else {
				if file == "" {
					// A generated password is never printed: it goes to a
					// file or nowhere.
					return errors.New("no secrets file to write a generated password to (--dir, --config with secrets_file, or --secrets-file): pass the new password with --password-file")
				}
				if newPW, err = ops.GeneratePassword(); err != nil {
					return err
				}
			}
			c, err := openCluster(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			if c.user != "postgres" {
				return errors.New("rotating a password needs SU_PASSWORD (environment or secrets file): it opens the cluster secret")
			}
			out := cmd.OutOrStdout()
			persist := func(kind, pw string) error {
				switch {
				case t.cf != nil && file == t.dirSecrets():
					if err := localworld.RotateSecret(t.dir, key, pw); err != nil {
						return err
					}
				case file != "":
					if err := config.SetSecret(file, key, pw); err != nil {
						return err
					}
				default:
					return nil
				}
				fmt.Fprintf(out, "wrote the new %s to %s\n", key, file)
				return nil
			}
			return c.ops(out).RotateSecret(ctx, ops.RotateSecret{Kind: kind, New: newPW, Superuser: c.pass, CAPEM: c.caPEM, Persist: persist})
		},
	}
	cf.bind(cmd.Flags())
	cmd.Flags().StringVar(&passwordFile, "password-file", "", "read the new password from this 0600 file (default: generate one)")
	cmd.Flags().DurationVar(&timeout, "timeout", 2*time.Minute, "give up after this long")
	return cmd
}

// readPasswordFile reads a password from a file that only its owner can
// read; one trailing newline is dropped.
func readPasswordFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("reading the password file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("password file %s has mode %v: make it 0600 (chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reading the password file: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if err := ops.CheckNewPassword(pw); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return pw, nil
}

// dirSecrets is a `petrel up` directory's secrets.env ("" without --dir).
func (t clusterTarget) dirSecrets() string {
	if t.cf == nil {
		return ""
	}
	return filepath.Join(t.dir, localworld.SecretsFileName)
}
