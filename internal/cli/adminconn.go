package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/petrel-db/petrel/internal/adminclient"
	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/localworld"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pki"
	"github.com/petrel-db/petrel/internal/statusview"
	"github.com/petrel-db/petrel/internal/store"
)

// adminConn is the CLI's handle on the cluster's admin API: the commands
// that change the cluster (failover, restart, config, attach, users, ...)
// ask a member to do it instead of writing etcd and logging in to
// Postgres themselves.
type adminConn struct {
	*adminclient.Client
	caPEM []byte // the cluster CA (pinned)
	dbURL string // cluster.json's database_url, if any
	// user is the role the members act as for us: postgres when
	// SU_PASSWORD is known (and accepted), else operator.
	user string
}

// adminLogins are the admin API credentials the CLI has, strongest
// first: the superuser (SU_PASSWORD; members take it only from their
// admin networks) and the operator (OPERATOR_PASSWORD), from the
// environment or the secrets file. Never a flag.
func adminLogins(file string) ([]adminclient.Credential, error) {
	su, op := os.Getenv("SU_PASSWORD"), os.Getenv("OPERATOR_PASSWORD")
	if (su == "" || op == "") && file != "" {
		if _, statErr := os.Stat(file); statErr == nil {
			vals, err := readSecretsFile(file)
			if err != nil {
				return nil, err
			}
			if su == "" {
				su = vals["SU_PASSWORD"]
			}
			if op == "" {
				op = vals["OPERATOR_PASSWORD"]
			}
		}
	}
	var creds []adminclient.Credential
	if su != "" {
		creds = append(creds, adminclient.Credential{User: "postgres", Password: su})
	}
	if op != "" {
		creds = append(creds, adminclient.Credential{User: "operator", Password: op})
	}
	if len(creds) == 0 {
		return nil, errors.New("no admin password: set OPERATOR_PASSWORD (or SU_PASSWORD) in the environment, pass --dir of a `petrel up` cluster, --config of a node whose secrets_file has it, or --secrets-file")
	}
	return creds, nil
}

// openAdmin finds the members' admin APIs and the cluster CA: --api
// (URLs) with --api-ca-file, a `petrel up` directory's cluster.json and
// ca.crt, else the members registered in etcd and the CA stored there;
// the CA always checked against the pinned fingerprint when one is known
// (and required when it comes from etcd).
func openAdmin(ctx context.Context, f clusterFlags) (*adminConn, error) {
	return openAdminWith(ctx, f, adminclient.Options{})
}

// openAdminWith is openAdmin with the client's options (a long
// RequestTimeout for a request that reads the whole archive).
func openAdminWith(ctx context.Context, f clusterFlags, o adminclient.Options) (*adminConn, error) {
	t, err := f.target()
	if err != nil {
		if len(f.apiURLs) == 0 {
			return nil, err
		}
		// --api alone: no cluster.json, no etcd.
		t = clusterTarget{cluster: f.cluster, secrets: f.secretsFile, caPin: f.caPin(nil, nil)}
	}
	creds, err := adminLogins(t.secrets)
	if err != nil {
		return nil, err
	}
	c := &adminConn{user: creds[0].User}
	var members []adminclient.Member
	var caPEM []byte
	switch {
	case len(f.apiURLs) > 0:
		for _, u := range f.apiURLs {
			if !strings.HasPrefix(u, "https://") {
				return nil, fmt.Errorf("--api %s: a member's API URL is https://host:port", u)
			}
			members = append(members, adminclient.Member{URL: u})
		}
	case t.cf != nil:
		members = membersOf(t.cf.Nodes)
		c.dbURL = t.cf.DatabaseURL
	}
	caFile := f.apiCAFile
	if caFile == "" && t.cf != nil && len(f.apiURLs) == 0 {
		if _, err := os.Stat(filepath.Join(t.dir, localworld.CAFileName)); err == nil {
			caFile = filepath.Join(t.dir, localworld.CAFileName)
		}
	}
	if caFile != "" {
		if caPEM, err = os.ReadFile(caFile); err != nil {
			return nil, fmt.Errorf("reading the cluster CA: %w", err)
		}
		if t.caPin != "" {
			if err := pki.CheckPinned(caPEM, t.caPin); err != nil {
				return nil, fmt.Errorf("%s: %w", caFile, err)
			}
		}
	}
	if caPEM == nil || len(members) == 0 {
		// What is missing comes from etcd (discovery only: the
		// operations themselves go through the API).
		if len(t.conn.Endpoints) == 0 {
			return nil, errors.New("--api needs --api-ca-file (the cluster CA) or etcd to read it from")
		}
		cli, err := store.Connect(ctx, t.conn, t.cluster)
		if err != nil {
			return nil, err
		}
		defer cli.Close()
		if caPEM == nil {
			if caPEM, err = api.PinnedCA(ctx, cli, t.cluster, t.caPin); err != nil {
				return nil, fmt.Errorf("cluster %q in etcd %s: %w", t.cluster, strings.Join(t.conn.Endpoints, ","), err)
			}
		}
		if len(members) == 0 {
			ms, err := statusview.MembersFromEtcd(ctx, cli, t.cluster)
			if err != nil {
				return nil, err
			}
			if len(ms) == 0 {
				return nil, fmt.Errorf("no members registered under %s in etcd %s: is --cluster right, and is any `petrel node` running?", store.KeysFor(t.cluster).Members(), strings.Join(t.conn.Endpoints, ","))
			}
			members = membersOf(ms)
		}
	}
	if c.Client, err = adminclient.New(caPEM, t.cluster, members, creds, o); err != nil {
		return nil, err
	}
	c.caPEM = caPEM
	return c, nil
}

func membersOf(ms []model.Member) []adminclient.Member {
	out := make([]adminclient.Member, 0, len(ms))
	for _, m := range ms {
		if m.APIURL != "" {
			out = append(out, adminclient.Member{ID: m.ID, URL: m.APIURL})
		}
	}
	return out
}
