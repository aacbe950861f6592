// Package config holds a node's settings and loads them from a TOML file,
// environment variables (PETREL_*) and flags, in increasing precedence, and
// the cluster secrets from the environment or a 0600 secrets file.
//
// Secrets are never part of Node: they are loaded separately so that no
// code path that prints or publishes a Node can leak a password.
package config

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/petrel-db/petrel/internal/pki"
)

// Node is one member's configuration. Field comments double as user docs;
// the toml tag is the key in the config file and, upper-cased with a
// PETREL_ prefix, the environment variable.
type Node struct {
	// Cluster is the cluster's name; all of its keys in etcd live under
	// /petrel/<cluster>/.
	Cluster string `toml:"cluster"`
	// ID names this member; unique in the cluster, stable across restarts.
	ID string `toml:"id"`
	// Region is where this member runs (e.g. "scl").
	Region string `toml:"region"`
	// PrimaryRegion is used when this member creates the cluster; after
	// that the cluster's recorded primary region wins.
	PrimaryRegion string `toml:"primary_region"`
	// DataDir holds the PostgreSQL data directory (DataDir/pgdata) and the
	// agent's own files.
	DataDir string `toml:"data_dir"`
	// ListenHost is the address Postgres and the API listen on.
	ListenHost string `toml:"listen_host"`
	// AdvertiseHost is the address other members and clients use to reach
	// this one; defaults to ListenHost.
	AdvertiseHost string `toml:"advertise_host"`
	// PGPort is this member's own PostgreSQL port (the direct port).
	PGPort int `toml:"pg_port"`
	// APIPort serves /health, /role, /status, /metrics and the members'
	// requests over TLS, with a certificate from the cluster CA that names
	// this member.
	APIPort int `toml:"api_port"`
	// APIPlainPort, when not 0, also serves /health, /role and /metrics
	// over plain HTTP (load balancers, Prometheus); nothing else.
	APIPlainPort int `toml:"api_plain_port"`
	// CAFingerprint pins the cluster CA: the SHA-256 of its certificate
	// (hex; colons and a "sha256:" prefix are fine), as `petrel up`'s
	// cluster.json and the first node's log show it. A CA in etcd with
	// another fingerprint is refused. Empty: the first CA this member
	// sees is pinned (its data directory keeps it).
	CAFingerprint string `toml:"ca_fingerprint"`
	// ProxyPort is the leader proxy's port (0 disables it).
	ProxyPort int `toml:"proxy_port"`
	// ProxyROPort is the read-only proxy's port (0 disables it): it spreads
	// connections over this region's healthy, caught-up replicas and falls
	// back to the leader.
	ProxyROPort int `toml:"proxy_ro_port"`
	// ProxyPipe is how the proxies move bytes: "auto" (= "copy", through
	// a buffer in user space), "kernel" (opt-in: a BPF sockmap, root
	// only; it has been seen to deliver a segment twice under bulk
	// traffic both ways, see internal/proxy's Config.Pipe) or "splice".
	ProxyPipe string `toml:"proxy_pipe"`
	// ProxyMaxConns bounds the proxy's client connections at once (both
	// listeners); further ones get SQLSTATE 53300. 0: 2000.
	ProxyMaxConns int `toml:"proxy_max_conns"`
	// ProxyMaxConnsPerSource bounds the connections from one source (an
	// IPv4 address or an IPv6 /64), authenticated ones included. 0: no
	// bound besides proxy_max_conns, since one app host may rightly hold
	// most connections; set it when many hosts share the proxy.
	ProxyMaxConnsPerSource int `toml:"proxy_max_conns_per_source"`
	// ProxyMaxPendingPerSource bounds the connections from one source not
	// authenticated yet; further ones are refused (53300). 0: 256, above
	// any pool's burst of new connections, so silent connections from one
	// host never keep another out. Negative: no bound.
	ProxyMaxPendingPerSource int `toml:"proxy_max_pending_per_source"`
	// ProxyMaxAuthPerSource bounds the connections from one source that
	// hold a Postgres backend (a max_connections slot) while they
	// authenticate; further ones wait their turn for up to
	// proxy_auth_timeout. 0: 16. Negative: no bound.
	ProxyMaxAuthPerSource int `toml:"proxy_max_auth_per_source"`
	// ProxyAuthTimeout bounds how long a client may take to send its
	// startup packet, and then to authenticate (until Postgres' answer); a
	// client silent longer is disconnected and its backend freed. TLS
	// sessions are opaque to the proxy once TLS starts: Postgres'
	// authentication_timeout bounds them, and they keep their source's
	// authentication slot until the member's agent lists them as
	// authenticated. 0: 5s.
	ProxyAuthTimeout time.Duration `toml:"proxy_auth_timeout"`
	// ProxyIdleTimeout closes authenticated proxy connections idle this
	// long. 0 (default): never; pools keep idle connections on purpose.
	ProxyIdleTimeout time.Duration `toml:"proxy_idle_timeout"`
	// APIMaxConns bounds the HTTP API's connections at once; further ones
	// wait in the kernel's backlog. 0: 512.
	APIMaxConns int `toml:"api_max_conns"`
	// APIMaxConnsPerSource bounds the API connections from one source;
	// further ones are closed at once, so one host's flood leaves room for
	// the others (members, proxies, edges, the CLI). 0: 128 (every process
	// of `petrel up` shares loopback). Negative: no bound.
	APIMaxConnsPerSource int `toml:"api_max_conns_per_source"`
	// Etcd lists the store's client endpoints (https:// for TLS).
	Etcd []string `toml:"etcd"`
	// EtcdCAFile verifies the etcd members' certificates (PEM); empty:
	// the system's roots, for https endpoints.
	EtcdCAFile string `toml:"etcd_ca_file"`
	// EtcdCertFile and EtcdKeyFile are this host's client certificate and
	// key for etcd's --client-cert-auth (PEM; both or neither).
	EtcdCertFile string `toml:"etcd_cert_file"`
	EtcdKeyFile  string `toml:"etcd_key_file"`
	// EtcdUsername logs in to etcd's authentication; its password is
	// ETCD_PASSWORD in the environment or the secrets file, never here.
	EtcdUsername string `toml:"etcd_username"`
	// SecretsFile is a 0600 file of KEY=VALUE lines (SU_PASSWORD,
	// REPL_PASSWORD, OPERATOR_PASSWORD); the environment wins over it.
	SecretsFile string `toml:"secrets_file"`
	// PGBin is the directory with initdb, pg_ctl, ...; empty means
	// `pg_config --bindir`.
	PGBin string `toml:"pg_bin"`
	// RunAs is the OS user Postgres runs as when the agent is root.
	RunAs string `toml:"run_as"`
	// LeaseTTL is the leader lease. A leader that cannot renew fences
	// itself before it can expire; a crashed leader is replaced at most
	// this long after its last renewal (sooner when its death is certain).
	LeaseTTL time.Duration `toml:"lease_ttl"`
	// SyncMode is "on" (commits wait for a primary-region standby while one
	// is in sync; writes go on without one), "strict" (writes block without
	// one) or "off" (asynchronous; no automatic failover can then prove it
	// loses nothing, so none happens without a synchronous standby).
	SyncMode string `toml:"sync_mode"`
	// DialMap is a JSON file mapping other members' host:port to the
	// address to dial instead (the local world's inter-region links).
	// Leave empty on real hosts.
	DialMap string `toml:"dial_map"`
	// LoopbackPlaintext lets clients on this host connect without TLS over
	// 127.0.0.0/8 and ::1 (`petrel up` and the tests turn it on). Off by
	// default: TCP connections need TLS.
	LoopbackPlaintext bool `toml:"loopback_plaintext"`
	// PlaintextNetworks (CIDRs) may connect without TLS: a trusted private
	// network only (a WireGuard mesh). None by default; replication needs
	// TLS anyway.
	PlaintextNetworks []string `toml:"plaintext_networks"`
	// AdminNetworks (CIDRs) may log in as the superuser over TCP; default
	// loopback only. Members always may (pg_rewind).
	AdminNetworks []string `toml:"admin_networks"`
	// ReplicationNetworks (CIDRs) may replicate (as the replication role,
	// over TLS) besides the members' advertised addresses; for members
	// whose connections come from another address than they advertise.
	ReplicationNetworks []string `toml:"replication_networks"`
	// RestoreFrom seeds a new cluster from a backup store (a directory, or
	// s3://BUCKET/PREFIX?endpoint=URL&region=R; S3 credentials from the
	// secrets file or environment): when the cluster is not initialized
	// in etcd yet, this member claims it, restores RestoreTarget into its
	// empty data directory and bootstraps the cluster from it; the other
	// members clone it as usual. Start this member first. Ignored once
	// the cluster is bootstrapped.
	RestoreFrom string `toml:"restore_from"`
	// RestoreTarget is "latest" (default), "backup:ID", "time:RFC3339"
	// or "lsn:X/Y".
	RestoreTarget string `toml:"restore_target"`
}

// Defaults returns the settings used when nothing else is given.
func Defaults() Node {
	return Node{
		Cluster:       "petrel",
		Region:        "scl",
		PrimaryRegion: "scl",
		ListenHost:    "127.0.0.1",
		PGPort:        5433,
		APIPort:       8433,
		Etcd:          []string{"http://127.0.0.1:2379"},
		RunAs:         "postgres",
		LeaseTTL:      3 * time.Second,
		SyncMode:      "on",
	}
}

// LoadFile overlays the TOML file at path onto n.
func LoadFile(path string, n *Node) error {
	md, err := toml.DecodeFile(path, n)
	if err != nil {
		return fmt.Errorf("reading config file %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fmt.Errorf("config file %s: unknown keys %v", path, und)
	}
	return nil
}

// Validate checks n and fills derived defaults.
func (n *Node) Validate() error {
	var errs []error
	if n.ID == "" {
		errs = append(errs, errors.New("id is required (--id or PETREL_ID)"))
	}
	if n.DataDir == "" {
		errs = append(errs, errors.New("data_dir is required (--data-dir or PETREL_DATA_DIR)"))
	}
	for _, nets := range []struct {
		what string
		v    []string
	}{{"plaintext_networks", n.PlaintextNetworks}, {"admin_networks", n.AdminNetworks}, {"replication_networks", n.ReplicationNetworks}} {
		for _, c := range nets.v {
			if _, _, err := net.ParseCIDR(c); err != nil {
				errs = append(errs, fmt.Errorf("%s: %q is not a network like 10.0.0.0/8: %w", nets.what, c, err))
			}
		}
	}
	if n.Region == "" || n.PrimaryRegion == "" {
		errs = append(errs, errors.New("region and primary_region must not be empty"))
	}
	if len(n.Etcd) == 0 {
		errs = append(errs, errors.New("at least one etcd endpoint is required"))
	}
	if (n.EtcdCertFile == "") != (n.EtcdKeyFile == "") {
		errs = append(errs, errors.New("etcd_cert_file and etcd_key_file go together"))
	}
	if n.LeaseTTL < 2*time.Second {
		errs = append(errs, fmt.Errorf("lease_ttl %v is below the 2s minimum", n.LeaseTTL))
	}
	for _, v := range []struct {
		what string
		n    int
	}{{"proxy_max_conns", n.ProxyMaxConns}, {"proxy_max_conns_per_source", n.ProxyMaxConnsPerSource}, {"api_max_conns", n.APIMaxConns}} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("%s %d: want 0 (the default) or more", v.what, v.n))
		}
	}
	if n.ProxyAuthTimeout < 0 || n.ProxyIdleTimeout < 0 {
		errs = append(errs, errors.New("proxy_auth_timeout and proxy_idle_timeout must not be negative"))
	}
	switch n.ProxyPipe {
	case "", "auto", "relay", "kernel", "copy", "splice":
	default:
		errs = append(errs, fmt.Errorf("proxy_pipe %q: want auto, relay, kernel, copy or splice", n.ProxyPipe))
	}
	switch n.SyncMode {
	case "on", "off", "strict":
	default:
		errs = append(errs, fmt.Errorf("sync_mode %q: want on, off or strict", n.SyncMode))
	}
	if n.CAFingerprint != "" {
		if _, err := pki.NormalizeFingerprint(n.CAFingerprint); err != nil {
			errs = append(errs, fmt.Errorf("ca_fingerprint: %w", err))
		}
	}
	if n.AdvertiseHost == "" {
		n.AdvertiseHost = n.ListenHost
	}
	return errors.Join(errs...)
}

// readSecretsFile reads KEY=value lines from a 0600 file ("" reads
// nothing).
func readSecretsFile(file string) (map[string]string, error) {
	vals := map[string]string{}
	if file != "" {
		st, err := os.Stat(file)
		if err != nil {
			return nil, fmt.Errorf("reading secrets file: %w", err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("secrets file %s has mode %v: make it 0600 (chmod 600 %s)", file, st.Mode().Perm(), file)
		}
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("reading secrets file: %w", err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				return nil, fmt.Errorf("secrets file %s: line without '='", file)
			}
			v = strings.TrimSpace(v)
			if uq, err := strconv.Unquote(v); err == nil {
				v = uq
			}
			vals[strings.TrimSpace(k)] = v
		}
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("reading secrets file: %w", err)
		}
	}
	return vals, nil
}

// Secrets are the passwords of the roles petrel creates. They never go to
// logs, process arguments or etcd.
type Secrets struct {
	Superuser   string // role "postgres"
	Replication string // role "replicator"
	Operator    string // role "operator"
}

// String keeps passwords out of any accidental %v.
func (Secrets) String() string { return "Secrets{redacted}" }

// LoadSecrets reads SU_PASSWORD, REPL_PASSWORD and OPERATOR_PASSWORD from
// the environment, falling back to the secrets file (which must not be
// readable by group or others).
func LoadSecrets(file string) (Secrets, error) {
	get, err := envThenFile(file, "SU_PASSWORD", "REPL_PASSWORD", "OPERATOR_PASSWORD")
	if err != nil {
		return Secrets{}, err
	}
	s := Secrets{Superuser: get("SU_PASSWORD"), Replication: get("REPL_PASSWORD"), Operator: get("OPERATOR_PASSWORD")}
	if s.Superuser == "" || s.Replication == "" || s.Operator == "" {
		return Secrets{}, errors.New("SU_PASSWORD, REPL_PASSWORD and OPERATOR_PASSWORD must be set in the environment or the secrets file")
	}
	return s, nil
}

// envThenFile returns a lookup of keys: the environment, else the secrets
// file. The file is read only when the environment lacks one of keys, so
// a service given its secrets in the environment (systemd's
// EnvironmentFile, read as root) runs as a user that cannot read the file.
func envThenFile(file string, keys ...string) (func(string) string, error) {
	vals := map[string]string{}
	for _, k := range keys {
		if os.Getenv(k) == "" {
			var err error
			if vals, err = readSecretsFile(file); err != nil {
				return nil, err
			}
			break
		}
	}
	return func(k string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return vals[k]
	}, nil
}

// EtcdPassword is ETCD_PASSWORD from the environment, else from the
// secrets file ("" when neither has it, or there is no file).
func EtcdPassword(file string) (string, error) {
	get, err := envThenFile(file, "ETCD_PASSWORD")
	if err != nil {
		return "", err
	}
	return get("ETCD_PASSWORD"), nil
}

// EdgeSecrets are what `petrel edge` keeps out of its arguments.
type EdgeSecrets struct {
	Secret      string // EDGE_SECRET: shared by a cluster's edges (request signing, tokens)
	DatabaseURL string // EDGE_DATABASE_URL: the region's database, for read-your-writes (optional)
}

// String keeps secrets out of any accidental %v.
func (EdgeSecrets) String() string { return "EdgeSecrets{redacted}" }

// LoadEdgeSecrets reads EDGE_SECRET and EDGE_DATABASE_URL from the
// environment, falling back to the secrets file.
func LoadEdgeSecrets(file string) (EdgeSecrets, error) {
	get, err := envThenFile(file, "EDGE_SECRET")
	if err != nil {
		return EdgeSecrets{}, err
	}
	s := EdgeSecrets{Secret: get("EDGE_SECRET"), DatabaseURL: get("EDGE_DATABASE_URL")}
	if s.Secret == "" {
		return EdgeSecrets{}, errors.New("EDGE_SECRET must be set in the environment or the secrets file (the same on every edge of the cluster)")
	}
	return s, nil
}

// BackupSecrets are the S3 credentials of the backup store (none for a
// local directory). Like the passwords, they never go to etcd, flags or
// Postgres' environment.
type BackupSecrets struct {
	AccessKeyID     string // AWS_ACCESS_KEY_ID
	SecretAccessKey string // AWS_SECRET_ACCESS_KEY
	SessionToken    string // AWS_SESSION_TOKEN (optional)
}

// String keeps secrets out of any accidental %v.
func (BackupSecrets) String() string { return "BackupSecrets{redacted}" }

// LoadBackupSecrets reads AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
// AWS_SESSION_TOKEN from the environment, falling back to the secrets
// file; all may be empty (a file store needs none).
func LoadBackupSecrets(file string) (BackupSecrets, error) {
	get, err := envThenFile(file, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
	if err != nil {
		return BackupSecrets{}, err
	}
	return BackupSecrets{AccessKeyID: get("AWS_ACCESS_KEY_ID"), SecretAccessKey: get("AWS_SECRET_ACCESS_KEY"), SessionToken: get("AWS_SESSION_TOKEN")}, nil
}
