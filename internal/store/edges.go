package store

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Edge is an edge router's record, under /petrel/<c>/edges/<id>, on the
// edge's own lease: written only by that edge. It lists the edge's app
// instances so that other edges can replay to a named instance; the
// instances themselves have no key and no lease (they register with
// their edge over HTTP), so a thousand instances cost the store nothing.
type Edge struct {
	ID        string   `json:"id"`
	Region    string   `json:"region"`
	URL       string   `json:"url"`       // where other edges send replays
	Instances []string `json:"instances"` // healthy instance ids, sorted
	// AdminURL serves the edge's /metrics and /health (the dashboard
	// reads its request and replay rates there); "" when it has none.
	AdminURL string `json:"admin_url,omitempty"`
}

// EdgeView is what an edge learns from the store: the other edges and the
// cluster's primary region.
type EdgeView struct {
	Edges         []Edge
	PrimaryRegion string
}

// EdgeTTL is an edge record's lease. Liveness between edges is judged by
// their own pings (seconds); the lease only removes records of edges that
// are gone for good, so it can be long and its keepalives rare (one
// message every TTL/3 on one stream).
const EdgeTTL = 30 * time.Second

// EdgeSession keeps an edge's record in the store and reports the view.
type EdgeSession struct {
	cli    *clientv3.Client
	prefix string
	log    *slog.Logger

	mu  sync.Mutex // guards rec
	rec Edge
	set chan struct{}
}

// NewEdgeSession prepares a session for cluster on cli.
func NewEdgeSession(cli *clientv3.Client, cluster string, rec Edge, log *slog.Logger) *EdgeSession {
	return &EdgeSession{cli: cli, prefix: "/petrel/" + cluster + "/", log: log, rec: rec, set: make(chan struct{}, 1)}
}

// Publish replaces the record (written at once if it changed).
func (s *EdgeSession) Publish(rec Edge) {
	s.mu.Lock()
	s.rec = rec
	s.mu.Unlock()
	select {
	case s.set <- struct{}{}:
	default:
	}
}

func (s *EdgeSession) record() Edge {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rec
}

// Run keeps the record on a lease and calls view with every change of
// the other edges or the primary region, until ctx ends. It retries on
// its own after store errors.
func (s *EdgeSession) Run(ctx context.Context, view func(EdgeView)) {
	go s.watch(ctx, view)
	for ctx.Err() == nil {
		if err := s.session(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("edge registration lost; retrying", "err", err)
			sleepCtx(ctx, time.Second)
		}
	}
}

func (s *EdgeSession) session(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	lease, err := s.cli.Grant(gctx, int64(EdgeTTL/time.Second))
	cancel()
	if err != nil {
		return fmt.Errorf("granting the edge lease: %w", err)
	}
	kctx, stop := context.WithCancel(ctx)
	defer stop()
	ka, err := s.cli.KeepAlive(kctx, lease.ID)
	if err != nil {
		return fmt.Errorf("keeping the edge lease alive: %w", err)
	}
	var last string
	put := func() error {
		rec := s.record()
		b, _ := json.Marshal(rec)
		if string(b) == last {
			return nil
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if _, err := s.cli.Put(pctx, s.prefix+"edges/"+rec.ID, string(b), clientv3.WithLease(lease.ID)); err != nil {
			return fmt.Errorf("writing the edge record: %w", err)
		}
		last = string(b)
		return nil
	}
	if err := put(); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, _ = s.cli.Revoke(rctx, lease.ID) // leave at once on a clean stop
			cancel()
			return nil
		case _, ok := <-ka:
			if !ok {
				return fmt.Errorf("edge lease %x expired or its stream ended", lease.ID)
			}
		case <-s.set:
			if err := put(); err != nil {
				return err
			}
		}
	}
}

// watch follows edges/ and info, resyncing after any watch error.
func (s *EdgeSession) watch(ctx context.Context, view func(EdgeView)) {
	for ctx.Err() == nil {
		gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		edges, err := s.cli.Get(gctx, s.prefix+"edges/", clientv3.WithPrefix())
		var info *clientv3.GetResponse
		if err == nil {
			info, err = s.cli.Get(gctx, s.prefix+"info")
		}
		cancel()
		if err != nil {
			s.log.Warn("reading edges from the store", "err", err)
			sleepCtx(ctx, time.Second)
			continue
		}
		state := map[string]Edge{}
		primary := ""
		for _, kv := range edges.Kvs {
			var e Edge
			if json.Unmarshal(kv.Value, &e) == nil && e.ID != "" {
				state[string(kv.Key)] = e
			}
		}
		if len(info.Kvs) == 1 {
			var ci model.ClusterInfo
			if json.Unmarshal(info.Kvs[0].Value, &ci) == nil {
				primary = ci.PrimaryRegion
			}
		}
		emit := func() {
			v := EdgeView{PrimaryRegion: primary}
			for _, e := range state {
				v.Edges = append(v.Edges, e)
			}
			sort.Slice(v.Edges, func(i, j int) bool { return v.Edges[i].ID < v.Edges[j].ID })
			view(v)
		}
		emit()
		wctx, wcancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wc := s.cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(max(edges.Header.Revision, info.Header.Revision)+1))
		for resp := range wc {
			if resp.Err() != nil {
				break
			}
			changed := false
			for _, ev := range resp.Events {
				k := string(ev.Kv.Key)
				switch {
				case strings.HasPrefix(k, s.prefix+"edges/"):
					if ev.Type == clientv3.EventTypeDelete {
						delete(state, k)
					} else {
						var e Edge
						if json.Unmarshal(ev.Kv.Value, &e) == nil && e.ID != "" {
							state[k] = e
						}
					}
					changed = true
				case k == s.prefix+"info" && ev.Type != clientv3.EventTypeDelete:
					var ci model.ClusterInfo
					if json.Unmarshal(ev.Kv.Value, &ci) == nil && ci.PrimaryRegion != primary {
						primary, changed = ci.PrimaryRegion, true
					}
				}
			}
			if changed {
				emit()
			}
		}
		wcancel()
		sleepCtx(ctx, 200*time.Millisecond)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Edges decodes the edges' records from this node's cache, sorted by id
// (the dashboard's view; undecodable records are skipped).
func (s *Store) Edges() []Edge {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Edge
	for k, kv := range s.kvs {
		if !strings.HasPrefix(k, s.prefix+"edges/") {
			continue
		}
		var e Edge
		if json.Unmarshal(kv.Value, &e) == nil && e.ID != "" {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}
