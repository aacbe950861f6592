// Package nodecmd is `petrel node`: the node agent's command line and its
// wiring (store, Postgres, API, proxy). It is its own package so that
// cmd/petrel-node can hold the agent alone, without the rest of the CLI
// (the embedded etcd of `petrel up`, the operator commands): the node is
// the process that runs for good on every host, and what it links and
// initializes it keeps resident.
package nodecmd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/agent"
	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/dashboard"
	"github.com/petrel-db/petrel/internal/dialmap"
	"github.com/petrel-db/petrel/internal/exetrim"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/proxy"
	"github.com/petrel-db/petrel/internal/statusview"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

var validID = regexp.MustCompile(`^[a-z0-9_]{1,48}$`)

// Main runs the node command as a program's root (cmd/petrel-node) and
// returns the exit status.
func Main() int {
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(proxy.DefaultProcs())
	}
	cmd := Command()
	cmd.Use = "petrel-node"
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "petrel-node:", err)
		return 1
	}
	return 0
}

// memoryLimit is the agent's soft memory limit (Go runtime memory, not
// the executable's pages) unless GOMEMLIMIT says otherwise: idle it uses
// about a third of it; the limit makes the runtime collect and hand
// memory back to the OS before a burst stays resident.
const memoryLimit = 32 << 20

// gcPercent (unless GOGC says otherwise): the agent's live heap is a few
// MiB and it allocates little, so collecting at +50% instead of +100%
// costs next to no CPU and keeps about a MiB less resident.
const gcPercent = 50

// trimAfter: when the agent drops its executable's pages that only its
// startup touched (internal/exetrim); by then it has joined the cluster
// and runs its loop, whose pages come back on their first use.
const trimAfter = 30 * time.Second

func trimExecutable(log *slog.Logger) {
	n, err := exetrim.Trim()
	if err != nil {
		log.Warn("dropping the executable's startup pages", "err", err)
		return
	}
	log.Debug("dropped the executable's startup pages", "mapped_bytes", n)
}

// Command is the node command (`petrel node`, and cmd/petrel-node's root).
func Command() *cobra.Command {
	cfg := config.Defaults()
	var file, logLevel string
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run the node agent: supervise this member's PostgreSQL and take part in elections",
		Long: `Run the node agent. Settings come from --config (TOML), then PETREL_* environment
variables (e.g. PETREL_ID, PETREL_ETCD=http://a:2379,http://b:2379), then flags.
Passwords come from SU_PASSWORD, REPL_PASSWORD and OPERATOR_PASSWORD (and ETCD_PASSWORD
with --etcd-username) or --secrets-file.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			merged := config.Defaults()
			if file != "" {
				if err := config.LoadFile(file, &merged); err != nil {
					return err
				}
			}
			if err := applyEnv(cmd.Flags(), &merged); err != nil {
				return err
			}
			applyFlags(cmd.Flags(), &cfg, &merged)
			if err := merged.Validate(); err != nil {
				return err
			}
			if !validID.MatchString(merged.ID) {
				return fmt.Errorf("id %q: use 1-48 of a-z, 0-9 and _", merged.ID)
			}
			return runNode(cmd.Context(), merged, logLevel)
		},
	}
	f := cmd.Flags()
	f.StringVar(&file, "config", "", "TOML config file")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	bindNodeFlags(f, &cfg)
	return cmd
}

// applyFlags copies the flags the user set onto merged (flags win).
func applyFlags(fs *pflag.FlagSet, from, to *config.Node) {
	set := func(name string, fn func()) {
		if fs.Changed(name) {
			fn()
		}
	}
	set("cluster", func() { to.Cluster = from.Cluster })
	set("id", func() { to.ID = from.ID })
	set("region", func() { to.Region = from.Region })
	set("primary-region", func() { to.PrimaryRegion = from.PrimaryRegion })
	set("data-dir", func() { to.DataDir = from.DataDir })
	set("listen-host", func() { to.ListenHost = from.ListenHost })
	set("advertise-host", func() { to.AdvertiseHost = from.AdvertiseHost })
	set("pg-port", func() { to.PGPort = from.PGPort })
	set("api-port", func() { to.APIPort = from.APIPort })
	set("api-plain-port", func() { to.APIPlainPort = from.APIPlainPort })
	set("ca-fingerprint", func() { to.CAFingerprint = from.CAFingerprint })
	set("proxy-port", func() { to.ProxyPort = from.ProxyPort })
	set("proxy-ro-port", func() { to.ProxyROPort = from.ProxyROPort })
	set("proxy-pipe", func() { to.ProxyPipe = from.ProxyPipe })
	set("proxy-max-conns", func() { to.ProxyMaxConns = from.ProxyMaxConns })
	set("proxy-max-conns-per-source", func() { to.ProxyMaxConnsPerSource = from.ProxyMaxConnsPerSource })
	set("proxy-max-pending-per-source", func() { to.ProxyMaxPendingPerSource = from.ProxyMaxPendingPerSource })
	set("proxy-max-auth-per-source", func() { to.ProxyMaxAuthPerSource = from.ProxyMaxAuthPerSource })
	set("proxy-auth-timeout", func() { to.ProxyAuthTimeout = from.ProxyAuthTimeout })
	set("proxy-idle-timeout", func() { to.ProxyIdleTimeout = from.ProxyIdleTimeout })
	set("api-max-conns", func() { to.APIMaxConns = from.APIMaxConns })
	set("api-max-conns-per-source", func() { to.APIMaxConnsPerSource = from.APIMaxConnsPerSource })
	set("etcd", func() { to.Etcd = from.Etcd })
	set("etcd-ca-file", func() { to.EtcdCAFile = from.EtcdCAFile })
	set("etcd-cert-file", func() { to.EtcdCertFile = from.EtcdCertFile })
	set("etcd-key-file", func() { to.EtcdKeyFile = from.EtcdKeyFile })
	set("etcd-username", func() { to.EtcdUsername = from.EtcdUsername })
	set("secrets-file", func() { to.SecretsFile = from.SecretsFile })
	set("pg-bin", func() { to.PGBin = from.PGBin })
	set("run-as", func() { to.RunAs = from.RunAs })
	set("lease-ttl", func() { to.LeaseTTL = from.LeaseTTL })
	set("sync-mode", func() { to.SyncMode = from.SyncMode })
	set("dial-map", func() { to.DialMap = from.DialMap })
	set("loopback-plaintext", func() { to.LoopbackPlaintext = from.LoopbackPlaintext })
	set("plaintext-networks", func() { to.PlaintextNetworks = from.PlaintextNetworks })
	set("admin-networks", func() { to.AdminNetworks = from.AdminNetworks })
	set("replication-networks", func() { to.ReplicationNetworks = from.ReplicationNetworks })
	set("restore-from", func() { to.RestoreFrom = from.RestoreFrom })
	set("restore-target", func() { to.RestoreTarget = from.RestoreTarget })
}

// applyEnv reads PETREL_<FLAG> (dashes as underscores) for every flag.
func applyEnv(fs *pflag.FlagSet, to *config.Node) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		name := "PETREL_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		v, ok := os.LookupEnv(name)
		if !ok || f.Name == "config" || f.Name == "log-level" {
			return
		}
		// Parse through a scratch flag set so types are checked.
		tmp := config.Defaults()
		scratch := pflag.NewFlagSet("env", pflag.ContinueOnError)
		bindNodeFlags(scratch, &tmp)
		if e := scratch.Set(f.Name, v); e != nil {
			err = fmt.Errorf("%s: %w", name, e)
			return
		}
		applyFlags(scratch, &tmp, to)
	})
	return err
}

// bindNodeFlags binds the node's flags (all but --config and --log-level)
// to cfg: on the command itself, and on applyEnv's scratch set, which
// therefore knows every flag the command has.
func bindNodeFlags(f *pflag.FlagSet, cfg *config.Node) {
	f.StringVar(&cfg.Cluster, "cluster", cfg.Cluster, "cluster name")
	f.StringVar(&cfg.ID, "id", "", "this member's id (a-z, 0-9, _)")
	f.StringVar(&cfg.Region, "region", cfg.Region, "this member's region")
	f.StringVar(&cfg.PrimaryRegion, "primary-region", cfg.PrimaryRegion, "primary region, used when this member creates the cluster")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for this member's data")
	f.StringVar(&cfg.ListenHost, "listen-host", cfg.ListenHost, "address Postgres and the API listen on")
	f.StringVar(&cfg.AdvertiseHost, "advertise-host", "", "address others use to reach this member (default: --listen-host)")
	f.IntVar(&cfg.PGPort, "pg-port", cfg.PGPort, "this member's own PostgreSQL port")
	f.IntVar(&cfg.APIPort, "api-port", cfg.APIPort, "HTTPS API port (/health, /role, /status, /metrics, members' requests)")
	f.IntVar(&cfg.APIPlainPort, "api-plain-port", 0, "plain HTTP port for /health, /role and /metrics only (0: off)")
	f.StringVar(&cfg.CAFingerprint, "ca-fingerprint", "", "SHA-256 of the cluster CA certificate to pin (default: the first one seen)")
	f.IntVar(&cfg.ProxyPort, "proxy-port", 0, "leader proxy port (0: off)")
	f.IntVar(&cfg.ProxyROPort, "proxy-ro-port", 0, "read-only proxy port: this region's replicas, falling back to the leader (0: off)")
	f.StringVar(&cfg.ProxyPipe, "proxy-pipe", "auto", "how the proxies move bytes: auto (= relay on Linux), relay (epoll loops), copy (goroutines), splice, or kernel (opt-in: a BPF sockmap, needs root)")
	f.IntVar(&cfg.ProxyMaxConns, "proxy-max-conns", 0, "proxy: client connections at once (0: 2000)")
	f.IntVar(&cfg.ProxyMaxConnsPerSource, "proxy-max-conns-per-source", 0, "proxy: connections from one IPv4 address or IPv6 /64 (0: no bound)")
	f.IntVar(&cfg.ProxyMaxPendingPerSource, "proxy-max-pending-per-source", 0, "proxy: unauthenticated connections from one source (0: 256, negative: no bound)")
	f.IntVar(&cfg.ProxyMaxAuthPerSource, "proxy-max-auth-per-source", 0, "proxy: connections from one source holding a backend while authenticating; more wait (0: 16, negative: no bound)")
	f.DurationVar(&cfg.ProxyAuthTimeout, "proxy-auth-timeout", 0, "proxy: time to send the startup packet, then to authenticate (0: 5s)")
	f.DurationVar(&cfg.ProxyIdleTimeout, "proxy-idle-timeout", 0, "proxy: close authenticated connections idle this long (0: never)")
	f.IntVar(&cfg.APIMaxConns, "api-max-conns", 0, "HTTP API: connections at once (0: 512)")
	f.IntVar(&cfg.APIMaxConnsPerSource, "api-max-conns-per-source", 0, "HTTP API: connections from one source; more are closed (0: 128, negative: no bound)")
	f.StringSliceVar(&cfg.Etcd, "etcd", cfg.Etcd, "etcd endpoints")
	f.StringVar(&cfg.EtcdCAFile, "etcd-ca-file", "", "CA certificate (PEM) that signed the etcd members' certificates")
	f.StringVar(&cfg.EtcdCertFile, "etcd-cert-file", "", "client certificate (PEM) for etcd")
	f.StringVar(&cfg.EtcdKeyFile, "etcd-key-file", "", "client certificate's key (PEM) for etcd")
	f.StringVar(&cfg.EtcdUsername, "etcd-username", "", "etcd user (its password: ETCD_PASSWORD in the environment or the secrets file)")
	f.StringVar(&cfg.SecretsFile, "secrets-file", "", "0600 file with SU_PASSWORD, REPL_PASSWORD, OPERATOR_PASSWORD")
	f.StringVar(&cfg.PGBin, "pg-bin", "", "PostgreSQL bin directory (default: pg_config --bindir)")
	f.StringVar(&cfg.RunAs, "run-as", cfg.RunAs, "OS user Postgres runs as when petrel is root")
	f.DurationVar(&cfg.LeaseTTL, "lease-ttl", cfg.LeaseTTL, "leader lease TTL")
	f.StringVar(&cfg.SyncMode, "sync-mode", cfg.SyncMode, "on, strict or off")
	f.StringVar(&cfg.DialMap, "dial-map", "", "JSON file of host:port rewrites for reaching other members (local world links)")
	f.BoolVar(&cfg.LoopbackPlaintext, "loopback-plaintext", false, "accept connections without TLS from 127.0.0.0/8 and ::1 (petrel up, tests)")
	f.StringSliceVar(&cfg.PlaintextNetworks, "plaintext-networks", nil, "CIDRs that may connect without TLS (a trusted private network only)")
	f.StringSliceVar(&cfg.AdminNetworks, "admin-networks", nil, "CIDRs from which the superuser may log in over TCP (default: loopback)")
	f.StringSliceVar(&cfg.ReplicationNetworks, "replication-networks", nil, "CIDRs that may replicate besides the members' addresses")
	f.StringVar(&cfg.RestoreFrom, "restore-from", "", "seed a new cluster from this backup store (a directory or s3://BUCKET/PREFIX?endpoint=URL): start this member first")
	f.StringVar(&cfg.RestoreTarget, "restore-target", "", "with --restore-from: latest (default), backup:ID, time:RFC3339 or lsn:X/Y")
}

// EtcdConn is how cfg reaches etcd, with ETCD_PASSWORD from the
// environment or cfg's secrets file when it names an etcd user.
func EtcdConn(cfg config.Node) (store.Conn, error) {
	var pw string
	if cfg.EtcdUsername != "" {
		var err error
		if pw, err = config.EtcdPassword(cfg.SecretsFile); err != nil {
			return store.Conn{}, err
		}
	}
	return store.Conn{
		Endpoints: cfg.Etcd, CAFile: cfg.EtcdCAFile, CertFile: cfg.EtcdCertFile, KeyFile: cfg.EtcdKeyFile,
		Username: cfg.EtcdUsername, Password: pw,
	}, nil
}

// NewLogger is a text logger on stderr at level (info when unknown).
func NewLogger(level string) *slog.Logger {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		l = slog.LevelInfo
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

func runNode(parent context.Context, cfg config.Node, logLevel string) error {
	log := NewLogger(logLevel).With("node", cfg.ID)
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(memoryLimit)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	sec, err := config.LoadSecrets(cfg.SecretsFile)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	trim := time.AfterFunc(trimAfter, func() { trimExecutable(log) })
	defer trim.Stop()

	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return fmt.Errorf("creating data dir: %w", err)
	}
	srv, err := pg.New(pg.Options{
		BinDir:  cfg.PGBin,
		DataDir: filepath.Join(cfg.DataDir, "pgdata"),
		RunDir:  filepath.Join(cfg.DataDir, "run"),
		// The WAL archive spool, outside PGDATA (internal/backup).
		ArchiveDir: filepath.Join(cfg.DataDir, "wal-spool"),
		Host:       cfg.ListenHost,
		Port:       cfg.PGPort,
		RunAs:      cfg.RunAs,
		Logger:     log.With("component", "pg"),
		Access: pg.Access{
			LoopbackPlaintext: cfg.LoopbackPlaintext, PlaintextNetworks: cfg.PlaintextNetworks,
			AdminNetworks: cfg.AdminNetworks, ReplicationNetworks: cfg.ReplicationNetworks,
		},
	})
	if err != nil {
		return err
	}
	conn, err := EtcdConn(cfg)
	if err != nil {
		return err
	}
	st, err := store.Dial(ctx, conn, cfg.Cluster, cfg.LeaseTTL, log.With("component", "store"))
	if err != nil {
		return err
	}
	defer st.Close()

	if cfg.RestoreFrom != "" {
		if err := seedFromRestore(ctx, cfg, sec, srv, st, log); err != nil {
			return err
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	dm, err := dialmap.NewSource(cfg.DialMap)
	if err != nil {
		return err
	}
	a := agent.New(cfg, sec, srv, st, log, agent.NewMetrics(reg), dm)
	arch, err := newArchiver(cfg, srv, st, reg, log, a, dm)
	if err != nil {
		return err
	}
	a.SetArchiver(arch)

	apiAddr := net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.APIPort))
	apiErr := make(chan error, 2)
	apiCtx, stopAPI := context.WithCancel(context.Background())
	defer stopAPI()
	// The dashboard and the admin API share the API's port (and its TLS).
	dash := dashboard.New(dashboard.Options{Cluster: cfg.Cluster, Self: cfg.ID, Store: st, OperatorPassword: sec.Operator, Superuser: a.SuperuserPassword, AdminNetworks: cfg.AdminNetworks,
		Log: log.With("component", "dashboard"), API: a.Identity().Client(api.ClientOptions{Timeout: time.Second}),
		CA: a.Identity().CAPEM, Backups: arch})
	defer dash.Close()
	// A rotated operator password (`petrel secrets rotate operator`)
	// reaches the admin API when this member switches to it.
	a.OnOperatorPassword(dash.SetOperatorPassword)
	apiLn, err := net.Listen("tcp", apiAddr)
	if err != nil {
		return fmt.Errorf("serving the API on %s: %w", apiAddr, err)
	}
	apiLimits := api.Limits{MaxConns: cfg.APIMaxConns, MaxConnsPerSource: cfg.APIMaxConnsPerSource}
	go func() {
		apiErr <- api.Serve(apiCtx, apiLn, dash.Wrap(api.Handler(a, reg)), a.Identity().ServerTLS(), apiLimits, reg, log)
	}()
	if cfg.APIPlainPort > 0 {
		plainAddr := net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.APIPlainPort))
		plainLn, err := net.Listen("tcp", plainAddr)
		if err != nil {
			return fmt.Errorf("serving the plain API on %s: %w", plainAddr, err)
		}
		go func() { apiErr <- api.Serve(apiCtx, plainLn, api.PlainHandler(a, reg), nil, apiLimits, reg, log) }()
	}

	if cfg.ProxyPort > 0 {
		stopProxy, err := startNodeProxy(cfg, st, dm, reg, a.Identity(), log)
		if err != nil {
			return err
		}
		defer stopProxy()
	}

	log.Info("petrel node starting", "region", cfg.Region, "pg", a.Member().PostgresAddr, "api", apiAddr, "etcd", cfg.Etcd)
	runCtx, cancelRun := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	archDone := make(chan struct{})
	go func() { defer close(archDone); arch.Run(runCtx) }()
	defer func() { <-archDone }()
	select {
	case err := <-done:
		cancelRun()
		return err
	case err := <-apiErr:
		cancelRun()
		<-done
		return fmt.Errorf("serving the API on %s: %w", apiAddr, err)
	}
}

// startNodeProxy starts the node's leader proxy (and read-only proxy) on
// ListenHost. It runs on its own context so that it keeps serving while
// the agent hands leadership over on SIGTERM; stop ends it.
func startNodeProxy(cfg config.Node, st *store.Store, dm *dialmap.Source, reg prometheus.Registerer, ident *api.Identity, log *slog.Logger) (stop func(), err error) {
	rw, err := net.Listen("tcp", net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.ProxyPort)))
	if err != nil {
		return nil, fmt.Errorf("leader proxy: %w", err)
	}
	var ro net.Listener
	if cfg.ProxyROPort > 0 {
		if ro, err = net.Listen("tcp", net.JoinHostPort(cfg.ListenHost, strconv.Itoa(cfg.ProxyROPort))); err != nil {
			_ = rw.Close()
			return nil, fmt.Errorf("read-only proxy: %w", err)
		}
	}
	// Members are verified against this node's own pinned CA.
	p := proxy.New(proxy.Config{
		Cluster: cfg.Cluster, Region: cfg.Region, DialMap: dm, Pipe: cfg.ProxyPipe,
		MaxConns: cfg.ProxyMaxConns, MaxConnsPerSource: cfg.ProxyMaxConnsPerSource,
		MaxPendingPerSource: cfg.ProxyMaxPendingPerSource, MaxAuthPerSource: cfg.ProxyMaxAuthPerSource,
		AuthTimeout: cfg.ProxyAuthTimeout, IdleTimeout: cfg.ProxyIdleTimeout,
	},
		proxy.Options{Etcd: st.Client(), Logger: log.With("component", "proxy"), Registerer: reg,
			API: ident.Client(api.ClientOptions{Timeout: time.Second, MaxIdlePerHost: 4})})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := p.Run(ctx, rw, ro); err != nil {
			log.Error("proxy stopped", "err", err)
		}
	}()
	log.Info("leader proxy listening", "addr", rw.Addr().String(), "readonly", cfg.ProxyROPort, "pipe", p.PipeMode())
	return func() { cancel(); <-done }, nil
}

// newArchiver wires the node's WAL archiver: the cluster's backup
// configuration from the store (acted on only while the store's view is
// current), S3 credentials from the environment or the secrets file.
func newArchiver(cfg config.Node, srv *pg.Server, st *store.Store, reg prometheus.Registerer, log *slog.Logger, a *agent.Agent, dm *dialmap.Source) (*backup.Archiver, error) {
	bsec, err := config.LoadBackupSecrets(cfg.SecretsFile)
	if err != nil {
		// Only an S3 store needs them; opening one then says what is missing.
		log.Warn("no backup store credentials", "err", err)
	}
	m := backup.NewMetrics(reg)
	arch := backup.NewArchiver(backup.ArchiverConfig{
		Node: cfg.ID, Cluster: cfg.Cluster, Spool: srv.ArchiveDir(), PG: srv,
		WALDir: filepath.Join(srv.DataDir(), "pg_wal"),
		Source: func() (model.BackupConfig, bool, bool, error) {
			c, ok, err := st.BackupConfig()
			return c, ok, st.OK(), err
		},
		SystemID: func() string {
			if info := st.Snapshot().Info; info != nil {
				return info.SystemID
			}
			return ""
		},
		Creds:   backupstore.Credentials{AccessKeyID: bsec.AccessKeyID, SecretAccessKey: bsec.SecretAccessKey, SessionToken: bsec.SessionToken},
		Log:     log.With("component", "archive"),
		Metrics: m,
		TakeBackup: func(ctx context.Context, bst backupstore.Store, progress func(backup.Progress)) (backup.Backup, error) {
			return takeBackup(ctx, cfg, srv, st, a, dm, bst, progress)
		},
		RecordEvent: func(ctx context.Context, ev model.Event) error {
			ev.Region = cfg.Region
			_, err := st.RecordEvent(ctx, ev)
			return err
		},
		OnBackup: func(b backup.Backup, what string, err error) {
			ev := model.Event{Kind: model.EventBackup, Node: cfg.ID, Region: cfg.Region, Timeline: b.Timeline, LSN: b.EndLSN, To: b.Source,
				Reason: what + " " + b.Summary()}
			if err != nil {
				ev.Reason = what + " base backup failed: " + err.Error()
			}
			ectx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := st.RecordEvent(ectx, ev); err != nil {
				log.Warn("recording the backup event", "err", err)
			}
		},
	})
	m.Attach(arch)
	return arch, nil
}

// takeBackup is a scheduled or requested base backup: from the freshest
// streaming replica (else this leader), as the replication role with the
// password in use now, over TLS verified against the cluster CA;
// progress (if set) is told the source, then how far it got.
func takeBackup(ctx context.Context, cfg config.Node, srv *pg.Server, st *store.Store, a *agent.Agent, dm *dialmap.Source, bst backupstore.Store, progress func(backup.Progress)) (backup.Backup, error) {
	snap := st.Snapshot()
	ms := make([]model.Member, 0, len(snap.Members))
	for _, m := range snap.Members {
		ms = append(ms, m)
	}
	dial := func(addr string) string { return dm.Map().Addr(addr) }
	client := a.Identity().Client(api.ClientOptions{Timeout: 2 * time.Second, Dial: dial})
	var src model.Status
	// The engine starts a backup once pg_stat_replication shows a
	// standby streaming; that standby's own /status may say so a moment
	// later. A replica that does not is given 10 s before the leader is
	// used instead.
	for wait := 0; ; wait++ {
		sts := statusview.Collect(ctx, client, statusview.TargetsFromMembers(ms))
		var err error
		if src, err = backup.ChooseSource(sts); err != nil {
			return backup.Backup{}, err
		}
		replica := slices.ContainsFunc(sts, func(s model.Status) bool { return s.Role == model.RoleReplica })
		if src.ID != cfg.ID || !replica || wait >= 10 {
			break
		}
		select {
		case <-ctx.Done():
			return backup.Backup{}, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	var report func(backup.Progress)
	if progress != nil {
		report = func(p backup.Progress) { p.Source, p.Role = src.ID, string(src.Role); progress(p) }
		report(backup.Progress{})
	}
	if src.ID != cfg.ID {
		// A standby starts a backup at a restartpoint, which it can make
		// only at a checkpoint it replayed: on an idle cluster the next
		// one could be checkpoint_timeout away. This leader makes one.
		cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := srv.Exec(cctx, "CHECKPOINT")
		cancel()
		if err != nil {
			return backup.Backup{}, fmt.Errorf("a checkpoint for %s's backup to start from: %w", src.ID, err)
		}
	}
	host, port, err := net.SplitHostPort(dial(src.PostgresAddr))
	if err != nil {
		return backup.Backup{}, fmt.Errorf("member %s's address %q: %w", src.ID, src.PostgresAddr, err)
	}
	pn, err := strconv.Atoi(port)
	if err != nil {
		return backup.Backup{}, fmt.Errorf("member %s's port %q: %w", src.ID, port, err)
	}
	ca, err := os.CreateTemp(cfg.DataDir, ".backup-ca-*.crt")
	if err != nil {
		return backup.Backup{}, fmt.Errorf("writing the cluster CA for pg_basebackup: %w", err)
	}
	defer os.Remove(ca.Name())
	_, err = ca.Write(a.Identity().CAPEM())
	if cerr := ca.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return backup.Backup{}, fmt.Errorf("writing the cluster CA for pg_basebackup: %w", err)
	}
	s := backup.Source{Member: src.ID, Host: host, Port: pn, User: "replicator", Password: a.ReplicationPassword(),
		SSLRootCert: ca.Name(), PGBin: cfg.PGBin}
	if snap.Info != nil {
		s.SystemID = snap.Info.SystemID
	}
	if src.ID != cfg.ID {
		s.SwitchWAL = func(ctx context.Context) error { return srv.Exec(ctx, "SELECT pg_switch_wal()") }
	}
	return backup.Create(ctx, bst, s, report)
}
