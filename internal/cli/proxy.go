package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/dialmap"
	"github.com/petrel-db/petrel/internal/nodecmd"
	"github.com/petrel-db/petrel/internal/proxy"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
)

func newProxyCmd() *cobra.Command {
	var (
		etcd                           []string
		cluster, listen, roListen      string
		region, dialMap, metricsListen string
		logLevel                       string
		pcfg                           proxy.Config
		access                         etcdAccess
	)
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "Run a standalone leader proxy (for hosts that run apps): always reaches the writable leader",
		Long: `Run a standalone leader proxy. It follows the cluster's leader in etcd, confirms it
against the member's own GET /role, and pipes PostgreSQL connections to it. Connections to
an old leader are closed as soon as it stops being the leader; while there is none, new
connections wait up to --no-leader-wait and then get an error (SQLSTATE 57P03).
With --ro-listen, a second port spreads connections over --region's caught-up replicas.
Members are confirmed over TLS: the cluster CA is read from etcd and must match
--ca-fingerprint, and a member's API must present that CA's certificate naming it.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := access.node(cmd.Flags(), etcd, cluster, "")
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("etcd") && access.configFile == "" {
				return errors.New("--etcd or --config is required")
			}
			conn, err := nodecmd.EtcdConn(n)
			if err != nil {
				return err
			}
			cluster = n.Cluster
			if access.configFile != "" && !cmd.Flags().Changed("region") {
				region = n.Region // the host's own region, from its node file
			}
			log := newLogger(logLevel).With("component", "proxy")
			dm, err := dialmap.NewSource(dialMap)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			cli, err := store.OpenClient(ctx, conn, cluster, log)
			if err != nil {
				return err
			}
			defer cli.Close()
			caPEM, err := api.PinnedCA(ctx, cli, cluster, access.caPin(&n, nil))
			if err != nil {
				return fmt.Errorf("cluster %q: %w", cluster, err)
			}
			apiClient, err := api.NewClient(caPEM, cluster, api.ClientOptions{Timeout: time.Second, MaxIdlePerHost: 4})
			if err != nil {
				return err
			}
			rw, err := net.Listen("tcp", listen)
			if err != nil {
				return fmt.Errorf("leader proxy: %w", err)
			}
			var ro net.Listener
			if roListen != "" {
				if ro, err = net.Listen("tcp", roListen); err != nil {
					_ = rw.Close()
					return fmt.Errorf("read-only proxy: %w", err)
				}
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
			if err := proxy.CheckPipe(pcfg.Pipe); err != nil {
				return err
			}
			pcfg.Cluster, pcfg.Region, pcfg.DialMap = cluster, region, dm
			p := proxy.New(pcfg, proxy.Options{Etcd: cli, Logger: log, Registerer: reg, API: apiClient})
			if metricsListen != "" {
				stopMetrics, err := serveMetrics(metricsListen, reg, log)
				if err != nil {
					_ = rw.Close()
					if ro != nil {
						_ = ro.Close()
					}
					return err
				}
				defer stopMetrics()
			}
			log.Info("petrel proxy listening", "addr", rw.Addr().String(), "readonly", roListen, "cluster", cluster, "etcd", etcd, "pipe", p.PipeMode())
			return p.Run(ctx, rw, ro)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&etcd, "etcd", []string{"http://127.0.0.1:2379"}, "etcd endpoints")
	f.StringVar(&cluster, "cluster", config.Defaults().Cluster, "cluster name")
	access.bind(f)
	f.StringVar(&listen, "listen", "127.0.0.1:5432", "leader proxy address")
	f.StringVar(&roListen, "ro-listen", "", "read-only proxy address (empty: off)")
	f.StringVar(&region, "region", config.Defaults().Region, "this host's region (read-only proxy: replicas there)")
	f.StringVar(&dialMap, "dial-map", "", "JSON file of host:port rewrites for reaching members")
	f.StringVar(&metricsListen, "metrics-listen", "", "serve GET /metrics on this address (empty: off)")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	f.IntVar(&pcfg.MaxConns, "max-conns", 2000, "maximum client connections")
	f.DurationVar(&pcfg.NoLeaderWait, "no-leader-wait", 5*time.Second, "how long a new connection waits for a leader before an error")
	f.IntVar(&pcfg.MaxConnsPerSource, "max-conns-per-source", 0, "maximum connections from one IPv4 address or IPv6 /64 (0: no bound besides --max-conns)")
	f.IntVar(&pcfg.MaxPendingPerSource, "max-pending-per-source", 256, "maximum unauthenticated connections from one source; more are refused (negative: no bound)")
	f.IntVar(&pcfg.MaxAuthPerSource, "max-auth-per-source", 16, "maximum connections from one source holding a backend while they authenticate; more wait their turn (negative: no bound)")
	f.DurationVar(&pcfg.AuthTimeout, "auth-timeout", 5*time.Second, "time a client has to send its startup packet, and then to authenticate")
	f.DurationVar(&pcfg.DialTimeout, "dial-timeout", 3*time.Second, "timeout connecting to a member's Postgres")
	f.DurationVar(&pcfg.IdleTimeout, "idle-timeout", 0, "close authenticated connections idle this long (0: never)")
	f.StringVar(&pcfg.Pipe, "pipe", "auto", "how bytes move: auto (= relay on Linux), relay (epoll loops), copy (goroutines), splice, or kernel (opt-in: a BPF sockmap, needs root or CAP_BPF+CAP_NET_ADMIN)")
	f.Int64Var(&pcfg.MaxReplicaLag, "max-replica-lag", 16<<20, "read-only proxy: skip replicas further behind than this many bytes")
	return cmd
}

// serveMetrics serves /metrics on addr until the returned stop is called.
func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	}, nil
}
