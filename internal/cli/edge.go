package cli

import (
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/dialmap"
	"github.com/petrel-db/petrel/internal/edge"
	"github.com/petrel-db/petrel/internal/nodecmd"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/spf13/cobra"
)

func newEdgeCmd() *cobra.Command {
	var (
		etcd                                    []string
		cluster, listen, adminListen, advertise string
		secretsFile, dialMap, logLevel          string
		instances                               []string
		cfg                                     edge.Config
		access                                  etcdAccess
	)
	cmd := &cobra.Command{
		Use:   "edge",
		Short: "Run a region's edge router: replays fly-replay requests in their target region, read-your-writes",
		Long: `Run an HTTP edge router in front of a region's app instances (one per region, or per app host).

Each request goes to a healthy local instance. When an instance answers with a fly-replay
header (e.g. "fly-replay: region=scl" after a write failed on the region's read replica), the
edge discards that answer and sends the whole request, body included, to the target region's
edge over a persistent connection; that response goes to the client. After a request that may
have written is served in the primary region, the response carries a read-your-writes cookie;
a later request in a replica region waits (up to --ryw-wait) until the local replica has
replayed that write, or is served in the primary region.

Instances: --instance id=ID,addr=HOST:PORT[,capacity=N] (repeat), or registered over the
admin API: POST /instances {"id","addr","capacity"} every second.
Secrets (never flags): EDGE_SECRET (the same on every edge; signs requests between edges and
tokens) and EDGE_DATABASE_URL (the region's database: the leader proxy in the primary region,
the region's replica elsewhere; unset turns read-your-writes off), from the environment or
--secrets-file.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := access.node(cmd.Flags(), etcd, cluster, secretsFile)
			if err != nil {
				return err
			}
			cluster, secretsFile = n.Cluster, n.SecretsFile
			if access.configFile != "" && !cmd.Flags().Changed("region") {
				cfg.Region = n.Region // the host's own region, from its node file
			}
			for _, s := range instances {
				in, err := parseInstance(s)
				if err != nil {
					return err
				}
				cfg.Instances = append(cfg.Instances, in)
			}
			sec, err := config.LoadEdgeSecrets(secretsFile)
			if err != nil {
				return err
			}
			cfg.Secret, cfg.DatabaseURL = sec.Secret, sec.DatabaseURL
			log := newLogger(logLevel).With("component", "edge", "region", cfg.Region)
			dm, err := dialmap.NewSource(dialMap)
			if err != nil {
				return err
			}
			cfg.Dial = func(a string) string { return dm.Map().Addr(a) }
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("edge listener: %w", err)
			}
			var admin net.Listener
			if adminListen != "" {
				if admin, err = net.Listen("tcp", adminListen); err != nil {
					ln.Close()
					return fmt.Errorf("edge admin listener: %w", err)
				}
			}
			if advertise == "" {
				advertise = "http://" + ln.Addr().String()
			}
			cfg.AdvertiseURL = advertise
			conn, err := nodecmd.EtcdConn(n)
			if err != nil {
				return err
			}
			for i, ep := range conn.Endpoints {
				conn.Endpoints[i] = dm.Map().URL(ep)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cli, err := store.OpenClient(ctx, conn, cluster, log)
			if err != nil {
				return err
			}
			defer cli.Close()
			if cfg.NodeAPI != "" {
				caPEM, err := api.PinnedCA(ctx, cli, cluster, access.caPin(&n, nil))
				if err != nil {
					return fmt.Errorf("--node-api: cluster %q: %w", cluster, err)
				}
				if cfg.NodeAPIClient, err = api.NewClient(caPEM, cluster, api.ClientOptions{Timeout: time.Second, Dial: cfg.Dial}); err != nil {
					return err
				}
			}
			e, err := edge.New(cfg, log)
			if err != nil {
				return err
			}
			session := store.NewEdgeSession(cli, cluster, store.Edge{ID: cfg.ID, Region: cfg.Region, URL: advertise}, log)
			log.Info("petrel edge listening", "addr", ln.Addr().String(), "admin", adminListen, "advertise", advertise,
				"instances", len(cfg.Instances), "read_your_writes", cfg.DatabaseURL != "")
			return e.Run(ctx, ln, admin, session)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&etcd, "etcd", []string{"http://127.0.0.1:2379"}, "etcd endpoints")
	f.StringVar(&cluster, "cluster", config.Defaults().Cluster, "cluster name")
	access.bind(f)
	f.StringVar(&cfg.Region, "region", config.Defaults().Region, "this edge's region")
	f.StringVar(&cfg.PrimaryRegion, "primary-region", "", "the primary region until the store says (the store's value wins)")
	f.StringVar(&cfg.ID, "id", "", "edge id (default edge-<region>)")
	f.StringVar(&listen, "listen", "127.0.0.1:8080", "address for user traffic and other edges")
	f.StringVar(&adminListen, "admin-listen", "", "admin API: /metrics, /health, /instances (empty: off)")
	f.StringVar(&advertise, "advertise", "", "URL other edges use to reach this one (default http://<listen>)")
	f.StringArrayVar(&instances, "instance", nil, "app instance id=ID,addr=HOST:PORT[,capacity=N] (repeat)")
	f.StringVar(&cfg.HealthPath, "health-path", "", "GET this path on instances to check them (empty: TCP connect)")
	f.StringVar(&cfg.NodeAPI, "node-api", "", "API URL (https) of the member EDGE_DATABASE_URL points at (its timeline, for read-your-writes; its CA pinned with --ca-fingerprint)")
	f.Int64Var(&cfg.MemoryBody, "memory-body", 1<<20, "request bytes buffered in memory; more is spooled to a temporary file")
	f.Int64Var(&cfg.MaxReplayBody, "max-replay-body", 64<<20, "largest request body that can be replayed")
	f.DurationVar(&cfg.ReplayTimeout, "replay-timeout", 5*time.Second, "how long a replay looks for a target without timeout=")
	f.IntVar(&cfg.MaxHops, "max-hops", 3, "replays per request before 508 (a loop)")
	f.DurationVar(&cfg.RYWWait, "ryw-wait", 500*time.Millisecond, "longest wait for the local replica to catch up with a user's write")
	f.StringVar(&secretsFile, "secrets-file", "", "file with EDGE_SECRET and EDGE_DATABASE_URL, and ETCD_PASSWORD (0600; default: --config's secrets_file)")
	f.StringVar(&dialMap, "dial-map", "", "JSON file of host:port rewrites (the local world's links)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// parseInstance reads "id=ID,addr=HOST:PORT[,capacity=N]".
func parseInstance(s string) (edge.Instance, error) {
	var in edge.Instance
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		switch k {
		case "id":
			in.ID = v
		case "addr":
			in.Addr = v
		case "capacity":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return in, fmt.Errorf("--instance %q: capacity must be a number ≥ 0", s)
			}
			in.Capacity = n
		default:
			return in, fmt.Errorf("--instance %q: unknown key %q (want id, addr, capacity)", s, k)
		}
	}
	if in.ID == "" || in.Addr == "" {
		return in, fmt.Errorf("--instance %q: want id=ID,addr=HOST:PORT", s)
	}
	return in, nil
}
