package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

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
}

func (a *etcdAccess) bind(fs *pflag.FlagSet) {
	fs.StringVar(&a.configFile, "config", "", "a node's TOML config (e.g. /etc/petrel.toml): its cluster, etcd endpoints, etcd TLS files, etcd username and secrets file")
	fs.StringVar(&a.caFile, "etcd-ca-file", "", "CA certificate (PEM) that signed the etcd members' certificates")
	fs.StringVar(&a.certFile, "etcd-cert-file", "", "client certificate (PEM) for etcd")
	fs.StringVar(&a.keyFile, "etcd-key-file", "", "client certificate's key (PEM) for etcd")
	fs.StringVar(&a.username, "etcd-username", "", "etcd user (password: ETCD_PASSWORD in the environment or the secrets file)")
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
		return clusterTarget{conn: conn, cluster: n.Cluster, secrets: n.SecretsFile}, nil
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
	return clusterTarget{conn: store.Conn{Endpoints: cf.Etcd}, cluster: cf.Cluster, secrets: secrets, cf: cf, dir: f.dir}, nil
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
