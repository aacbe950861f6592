// Package etcdembed runs a single-member etcd server inside the current
// process. `petrel up` uses it as the store of a local cluster so that no
// separate etcd installation is needed.
//
// The member's data lives in Options.Dir: starting again on the same Dir
// resumes the same member with its keys (a restart, not a new cluster).
// etcd is very chatty: only its error-level messages are kept, and they go
// to Options.Logger at warn level (nothing is logged while closing, when
// etcd reports its own listeners shutting down as errors).
package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// ReadyTimeout bounds how long Start waits for the member to serve.
const ReadyTimeout = 60 * time.Second

// Options configure Start.
type Options struct {
	// Dir holds the member's data (created 0700 if missing).
	Dir string
	// Name is the member's name; default "petrel-etcd". Keep it stable for
	// a given Dir.
	Name string
	// ClientURL is where clients connect, e.g. http://127.0.0.1:2379.
	ClientURL string
	// PeerURL is the raft peer URL, e.g. http://127.0.0.1:2380.
	PeerURL string
	// Logger receives petrel's messages about the server; nil discards.
	Logger *slog.Logger
}

// Server is a running embedded etcd member.
type Server struct {
	e         *embed.Etcd
	endpoints []string
	log       *slog.Logger
	done      chan struct{}
	closing   *atomic.Bool
}

// Start starts the member and returns once it serves clients (or fails,
// or ctx ends, or ReadyTimeout passes).
func Start(ctx context.Context, opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("etcdembed: Dir is required")
	}
	if opts.Name == "" {
		opts.Name = "petrel-etcd"
	}
	if opts.ClientURL == "" || opts.PeerURL == "" {
		return nil, errors.New("etcdembed: ClientURL and PeerURL are required")
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	curl, err := url.Parse(opts.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: client URL %q: %w", opts.ClientURL, err)
	}
	purl, err := url.Parse(opts.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: peer URL %q: %w", opts.PeerURL, err)
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdembed: creating %s: %w", dir, err)
	}

	cfg := embed.NewConfig()
	cfg.Name = opts.Name
	cfg.Dir = dir
	cfg.ListenClientUrls = []url.URL{*curl}
	cfg.AdvertiseClientUrls = []url.URL{*curl}
	cfg.ListenPeerUrls = []url.URL{*purl}
	cfg.AdvertisePeerUrls = []url.URL{*purl}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.InitialClusterToken = "petrel-" + opts.Name
	cfg.ClusterState = embed.ClusterStateFlagNew // ignored when Dir already holds a member
	cfg.LogLevel = "error"
	closing := new(atomic.Bool)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(&slogCore{lg: lg, closing: closing}))
	// Keep the keyspace history small: petrel only needs recent revisions
	// for watches.
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "1h"

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: starting etcd in %s: %w", dir, err)
	}
	t := time.NewTimer(ReadyTimeout)
	defer t.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		closing.Store(true)
		e.Close()
		return nil, fmt.Errorf("etcdembed: etcd failed while starting: %w", err)
	case <-t.C:
		closing.Store(true)
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("etcdembed: etcd in %s not ready after %v", dir, ReadyTimeout)
	case <-ctx.Done():
		closing.Store(true)
		e.Server.Stop()
		e.Close()
		return nil, ctx.Err()
	}
	s := &Server{e: e, endpoints: []string{curl.String()}, log: lg, done: make(chan struct{}), closing: closing}
	go func() {
		select {
		case err, ok := <-e.Err():
			if ok && err != nil && !closing.Load() {
				lg.Warn("embedded etcd error", "err", err)
			}
		case <-s.done:
		}
	}()
	return s, nil
}

// Endpoints returns the client URLs.
func (s *Server) Endpoints() []string { return append([]string(nil), s.endpoints...) }

// Close stops the member; its data stays in Dir.
func (s *Server) Close() {
	select {
	case <-s.done:
		return
	default:
	}
	close(s.done)
	s.closing.Store(true)
	s.e.Close()
}

// Kill stops the member at once, as a crash would: raft and the lessor
// stop first (so no lease expires while it winds down, which a graceful
// Close with clients attached lets happen over seconds), then the rest
// is closed.
func (s *Server) Kill() {
	select {
	case <-s.done:
		return
	default:
	}
	s.closing.Store(true)
	s.e.Server.HardStop()
	s.Close()
}
