package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/localworld"
	"github.com/petrel-db/petrel/internal/nodecmd"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/spf13/pflag"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// etcdAccess is --config (a node's TOML) and the etcd TLS and login
// flags, bound by every command that reaches etcd, so that on a host
// `petrel status --config /etc/petrel.toml` finds the same cluster, with
// the same certificates and etcd user, as the node. The etcd password is
// ETCD_PASSWORD in the environment or the secrets file, never a flag.
type etcdAccess struct {
	configFile, caFile, certFile, keyFile, username string
	caFingerprint                                   string
}

func (a *etcdAccess) bind(fs *pflag.FlagSet) {
	fs.StringVar(&a.configFile, "config", "", "a node's TOML config (e.g. /etc/petrel.toml): its cluster, etcd endpoints, etcd TLS files, etcd username and secrets file")
	fs.StringVar(&a.caFile, "etcd-ca-file", "", "CA certificate (PEM) that signed the etcd members' certificates")
	fs.StringVar(&a.certFile, "etcd-cert-file", "", "client certificate (PEM) for etcd")
	fs.StringVar(&a.keyFile, "etcd-key-file", "", "client certificate's key (PEM) for etcd")
	fs.StringVar(&a.username, "etcd-username", "", "etcd user (password: ETCD_PASSWORD in the environment or the secrets file)")
	fs.StringVar(&a.caFingerprint, "ca-fingerprint", "", "SHA-256 of the cluster CA certificate: the CA in etcd must match it (default: PETREL_CA_FINGERPRINT, --config's ca_fingerprint, --dir's cluster.json)")
}

// caPin is the fingerprint the store's CA is checked against: the flag,
// PETREL_CA_FINGERPRINT, the node config's ca_fingerprint (n), then a
// `petrel up` directory's cluster.json (cf); "" when none.
func (a *etcdAccess) caPin(n *config.Node, cf *localworld.ClusterFile) string {
	switch {
	case a.caFingerprint != "":
		return a.caFingerprint
	case os.Getenv("PETREL_CA_FINGERPRINT") != "":
		return os.Getenv("PETREL_CA_FINGERPRINT")
	case n != nil && n.CAFingerprint != "":
		return n.CAFingerprint
	case cf != nil:
		return cf.CAFingerprint
	}
	return ""
}

// node is config.Defaults, overlaid with --config, then with the flags
// the user set: the etcd ones here, and the command's own --etcd,
// --cluster and --secrets-file (named so in every command).
func (a *etcdAccess) node(fs *pflag.FlagSet, etcd []string, cluster, secretsFile string) (config.Node, error) {
	n := config.Defaults()
	if a.configFile != "" {
		if err := config.LoadFile(a.configFile, &n); err != nil {
			return n, err
		}
	}
	changed := func(name string) bool { return fs.Lookup(name) != nil && fs.Changed(name) }
	if changed("etcd") {
		n.Etcd = etcd
	}
	if changed("cluster") {
		n.Cluster = cluster
	}
	if changed("secrets-file") {
		n.SecretsFile = secretsFile
	}
	for _, f := range []struct {
		name string
		from string
		to   *string
	}{{"etcd-ca-file", a.caFile, &n.EtcdCAFile}, {"etcd-cert-file", a.certFile, &n.EtcdCertFile}, {"etcd-key-file", a.keyFile, &n.EtcdKeyFile}, {"etcd-username", a.username, &n.EtcdUsername}} {
		if changed(f.name) {
			*f.to = f.from
		}
	}
	return n, nil
}

// target is where a command finds a cluster.
type clusterTarget struct {
	conn    store.Conn
	cluster string
	secrets string                  // the file with the admin (and etcd) passwords, if any
	cf      *localworld.ClusterFile // with --dir (a `petrel up` directory), else nil
	dir     string
	caPin   string // the CA fingerprint to check the store's CA against (see caPin)
}

// target resolves --etcd or --config (real hosts), else --dir's
// cluster.json (a `petrel up` directory).
func (f *clusterFlags) target() (clusterTarget, error) {
	var etcd []string
	if f.etcd != "" {
		etcd = strings.Split(f.etcd, ",")
	}
	if f.etcd != "" || f.configFile != "" {
		n, err := f.node(f.fs, etcd, f.cluster, f.secretsFile)
		if err != nil {
			return clusterTarget{}, err
		}
		conn, err := nodecmd.EtcdConn(n)
		if err != nil {
			return clusterTarget{}, err
		}
		return clusterTarget{conn: conn, cluster: n.Cluster, secrets: n.SecretsFile, caPin: f.caPin(&n, nil)}, nil
	}
	cf, err := localworld.LoadClusterFile(f.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return clusterTarget{}, fmt.Errorf("no cluster.json in %s: start a cluster with `petrel up`, pass --dir of one, or on a host --config /etc/petrel.toml (or --etcd and --cluster)", f.dir)
	}
	if err != nil {
		return clusterTarget{}, err
	}
	if len(cf.Etcd) == 0 {
		return clusterTarget{}, fmt.Errorf("%s lists no etcd endpoints", filepath.Join(f.dir, localworld.ClusterFileName))
	}
	secrets := f.secretsFile
	if secrets == "" {
		secrets = filepath.Join(f.dir, localworld.SecretsFileName)
	}
	return clusterTarget{conn: store.Conn{Endpoints: cf.Etcd}, cluster: cf.Cluster, secrets: secrets, cf: cf, dir: f.dir, caPin: f.caPin(nil, cf)}, nil
}

// etcdClient connects to the cluster's etcd (checked with one read:
// a wrong certificate, password or address fails within seconds, saying
// which).
func (f *clusterFlags) etcdClient(ctx context.Context) (*clientv3.Client, clusterTarget, error) {
	t, err := f.target()
	if err != nil {
		return nil, t, err
	}
	cli, err := store.Connect(ctx, t.conn, t.cluster)
	if err != nil {
		return nil, t, err
	}
	return cli, t, nil
}

// apiClient reads the store's CA, checks it against the pinned
// fingerprint, and returns a client of the members' APIs trusting it.
func (t clusterTarget) apiClient(ctx context.Context, cli *clientv3.Client) (*api.Client, []byte, error) {
	caPEM, err := api.PinnedCA(ctx, cli, t.cluster, t.caPin)
	if err != nil {
		return nil, nil, fmt.Errorf("cluster %q in etcd %s: %w", t.cluster, strings.Join(t.conn.Endpoints, ","), err)
	}
	c, err := api.NewClient(caPEM, t.cluster, api.ClientOptions{})
	return c, caPEM, err
}
