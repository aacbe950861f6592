package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/localworld"
	"github.com/petrel-db/petrel/internal/ops"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// clusterFlags find a cluster and the admin password, for the commands
// that talk to the cluster (status, failover, attach, config, ...).
// clusterConn (etcd, Postgres) is for the commands that still run on the
// CLI's host (secrets rotate, connect); the others go through a member's
// admin API (adminConn).
type clusterFlags struct {
	dir, etcd, cluster, secretsFile string
	// apiURLs and apiCAFile reach members' admin APIs without etcd.
	apiURLs   []string
	apiCAFile string
	etcdAccess
	fs *pflag.FlagSet // to tell the flags the user set (target)
}

func (f *clusterFlags) bind(fs *pflag.FlagSet) {
	f.fs = fs
	fs.StringVar(&f.dir, "dir", localworld.DefaultDir, "directory of a `petrel up` cluster (reads cluster.json and secrets.env)")
	fs.StringVar(&f.etcd, "etcd", "", "etcd endpoints (comma-separated), instead of --dir")
	fs.StringVar(&f.cluster, "cluster", localworld.DefaultCluster, "cluster name (with --etcd)")
	fs.StringVar(&f.secretsFile, "secrets-file", "", "0600 file with SU_PASSWORD or OPERATOR_PASSWORD, and ETCD_PASSWORD (default: --config's secrets_file or --dir's secrets.env; the environment wins)")
	fs.StringSliceVar(&f.apiURLs, "api", nil, "members' API URLs (https://host:port, comma-separated) for the commands that go through the admin API, instead of the members registered in etcd")
	fs.StringVar(&f.apiCAFile, "api-ca-file", "", "the cluster CA certificate (PEM) to verify the members' APIs with (default: --dir's ca.crt, else the CA in etcd; checked against the pinned fingerprint)")
	f.etcdAccess.bind(fs)
}

// clusterConn is an open handle on a cluster for the CLI.
type clusterConn struct {
	name  string
	etcd  *clientv3.Client
	cf    *localworld.ClusterFile // nil with --etcd or --config
	user  string                  // postgres, or operator when only its password is known
	pass  string
	caPEM []byte      // the cluster CA, checked against the pinned fingerprint
	api   *api.Client // members' APIs, verified against caPEM
}

func (c *clusterConn) Close() { c.etcd.Close() }

// openCluster connects to etcd and loads the admin credentials.
func openCluster(ctx context.Context, f clusterFlags) (*clusterConn, error) {
	t, err := f.target()
	if err != nil {
		return nil, err
	}
	c := &clusterConn{name: t.cluster, cf: t.cf}
	if c.user, c.pass, err = adminCredentials(t.secrets); err != nil {
		return nil, err
	}
	if c.etcd, err = store.Connect(ctx, t.conn, c.name); err != nil {
		return nil, err
	}
	if c.api, c.caPEM, err = t.apiClient(ctx, c.etcd); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// adminCredentials: SU_PASSWORD (as postgres) or OPERATOR_PASSWORD (as
// operator), from the environment or the secrets file. Never a flag.
func adminCredentials(file string) (user, pass string, err error) {
	su, op := os.Getenv("SU_PASSWORD"), os.Getenv("OPERATOR_PASSWORD")
	if su == "" && file != "" {
		if _, statErr := os.Stat(file); statErr == nil {
			vals, err := readSecretsFile(file)
			if err != nil {
				return "", "", err
			}
			su = vals["SU_PASSWORD"]
			if op == "" {
				op = vals["OPERATOR_PASSWORD"]
			}
		}
	}
	switch {
	case su != "":
		return "postgres", su, nil
	case op != "":
		return "operator", op, nil
	}
	return "", "", errors.New("no admin password: set SU_PASSWORD (or OPERATOR_PASSWORD) in the environment, pass --dir of a `petrel up` cluster, --config of a node whose secrets_file has it, or --secrets-file")
}

// readSecretsFile reads KEY=VALUE lines of a 0600 file.
func readSecretsFile(file string) (map[string]string, error) {
	st, err := os.Stat(file)
	if err != nil {
		return nil, fmt.Errorf("reading secrets file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets file %s has mode %v: make it 0600 (chmod 600 %s)", file, st.Mode().Perm(), file)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("reading secrets file: %w", err)
	}
	vals := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(line, "#") {
			continue
		}
		v = strings.TrimSpace(v)
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		vals[strings.TrimSpace(k)] = v
	}
	return vals, nil
}

// ops is the orchestration handle on this cluster, printing progress on out.
func (c *clusterConn) ops(out io.Writer) *ops.Cluster {
	return &ops.Cluster{Etcd: c.etcd, Name: c.name, Out: out, Actor: c.user, API: c.api,
		ConnectLeader:   func(ctx context.Context) (*pgx.Conn, error) { return c.connectLeader(ctx, "postgres") },
		ConnectLeaderDB: c.connectLeader}
}

// topology is the leader and the live members.
func (c *clusterConn) topology(ctx context.Context) (ops.Topology, error) {
	return c.ops(nil).Topology(ctx)
}

// admin is how the CLI logs in to Postgres.
func (c *clusterConn) admin() ops.Admin {
	return ops.Admin{User: c.user, Password: c.pass, CAPEM: c.caPEM}
}

// connectLeader opens an admin connection to db on the leader.
func (c *clusterConn) connectLeader(ctx context.Context, db string) (*pgx.Conn, error) {
	return c.ops(nil).ConnectLeaderAs(ctx, c.admin(), db)
}
