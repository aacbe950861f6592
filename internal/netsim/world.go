package netsim

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/dialmap"
)

// Matrix holds one-way delays between regions; lookups are symmetric and
// a region to itself is Local.
type Matrix struct {
	Local  time.Duration            // within one region
	Delays map[string]time.Duration // "a-b" with a < b
	Jitter time.Duration            // added to every cross-region link
	Loss   float64                  // for every cross-region link
}

// DefaultMatrix has one-way delays close to half the real round trips
// between the cities Fly's regions are named after.
func DefaultMatrix() Matrix {
	ms := time.Millisecond
	return Matrix{
		Local: 0,
		Delays: map[string]time.Duration{
			"ord-scl": 75 * ms, "ams-scl": 115 * ms, "scl-syd": 150 * ms, "atl-scl": 65 * ms,
			"ams-ord": 50 * ms, "ord-syd": 95 * ms, "atl-ord": 10 * ms,
			"ams-syd": 140 * ms, "ams-atl": 55 * ms, "atl-syd": 105 * ms,
			"iad-scl": 70 * ms, "iad-ord": 10 * ms, "ams-iad": 45 * ms, "iad-syd": 100 * ms, "atl-iad": 8 * ms,
			"lhr-scl": 110 * ms, "lhr-ord": 50 * ms, "ams-lhr": 4 * ms, "lhr-syd": 140 * ms, "atl-lhr": 50 * ms, "iad-lhr": 40 * ms,
		},
	}
}

// Default is the delay for region pairs the matrix does not list.
const Default = 60 * time.Millisecond

// Between returns the one-way delay between regions a and b.
func (m Matrix) Between(a, b string) time.Duration {
	if a == b {
		return m.Local
	}
	if a > b {
		a, b = b, a
	}
	if d, ok := m.Delays[a+"-"+b]; ok {
		return d
	}
	return Default
}

// ParseMatrix reads "a-b=75ms,c-d=10ms" overrides onto m.
func ParseMatrix(m Matrix, spec string) (Matrix, error) {
	out := Matrix{Local: m.Local, Jitter: m.Jitter, Loss: m.Loss, Delays: map[string]time.Duration{}}
	for k, v := range m.Delays {
		out.Delays[k] = v
	}
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		a, b, ok2 := strings.Cut(k, "-")
		if !ok || !ok2 {
			return m, fmt.Errorf("latency %q: want region-region=duration", part)
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return m, fmt.Errorf("latency %q: bad duration", part)
		}
		if a > b {
			a, b = b, a
		}
		out.Delays[a+"-"+b] = d
	}
	return out, nil
}

// World connects hosts in regions pairwise through Links: a host reaches
// every address of every other host (and of services such as etcd)
// through a link of its own, whose delay is the matrix's delay between
// their regions. Partitions cut the links between two hosts both ways.
type World struct {
	log *slog.Logger
	ctx context.Context

	mu     sync.Mutex // guards the following fields
	direct bool       // no links where they would cost nothing (SetDirectWhenFree)
	matrix Matrix
	hosts  map[string]*host
	links  map[string]map[string]*Link // from host id → target addr → link
}

type host struct {
	id, region string
	addrs      []string
	service    bool // services (etcd) are dialled but do not dial
}

// NewWorld makes an empty world; links live until ctx ends or Close.
func NewWorld(ctx context.Context, m Matrix, log *slog.Logger) *World {
	if log == nil {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	}
	return &World{ctx: ctx, log: log, matrix: m, hosts: map[string]*host{}, links: map[string]map[string]*Link{}}
}

// SetDirectWhenFree makes hosts added from now on dial each other
// directly, with no link, where the link would add nothing: same region,
// no local delay, jitter or loss. Such pairs cost no hop (the local
// world's leader proxy then reaches its region's leader at full speed,
// and a dead member's port refuses as on a real network), but they
// cannot be partitioned: worlds that inject in-region faults keep links.
func (w *World) SetDirectWhenFree(on bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.direct = on
}

// AddHost adds a host that dials others and is dialled at addrs.
func (w *World) AddHost(id, region string, addrs ...string) error {
	return w.add(&host{id: id, region: region, addrs: addrs})
}

// AddService adds something hosts dial but that dials nobody (etcd).
func (w *World) AddService(id, region string, addrs ...string) error {
	return w.add(&host{id: id, region: region, addrs: addrs, service: true})
}

func (w *World) add(h *host) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if _, ok := w.hosts[h.id]; ok {
		return fmt.Errorf("host %s already in the world", h.id)
	}
	w.hosts[h.id] = h
	for _, o := range w.hosts {
		if o == h {
			continue
		}
		if !h.service {
			if err := w.linkLocked(h, o); err != nil {
				return err
			}
		}
		if !o.service {
			if err := w.linkLocked(o, h); err != nil {
				return err
			}
		}
	}
	return nil
}

// linkLocked creates links from host a to every address of host b.
func (w *World) linkLocked(a, b *host) error {
	if w.links[a.id] == nil {
		w.links[a.id] = map[string]*Link{}
	}
	c := Conditions{Delay: w.matrix.Between(a.region, b.region)}
	if a.region != b.region {
		c.Jitter, c.Loss = w.matrix.Jitter, w.matrix.Loss
	}
	if w.direct && a.region == b.region && c == (Conditions{}) {
		return nil
	}
	for _, addr := range b.addrs {
		l, err := Listen("127.0.0.1:0", addr, c, w.log)
		if err != nil {
			return fmt.Errorf("creating link %s -> %s (%s): %w", a.id, b.id, addr, err)
		}
		go func() { _ = l.Serve(w.ctx) }()
		w.links[a.id][addr] = l
	}
	return nil
}

// Remove drops a host and its links.
func (w *World) Remove(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	h, ok := w.hosts[id]
	if !ok {
		return
	}
	for _, l := range w.links[id] {
		l.Close()
	}
	delete(w.links, id)
	for _, m := range w.links {
		for _, addr := range h.addrs {
			if l, ok := m[addr]; ok {
				l.Close()
				delete(m, addr)
			}
		}
	}
	delete(w.hosts, id)
}

// Via returns the address host from dials to reach addr.
func (w *World) Via(from, addr string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	if l, ok := w.links[from][addr]; ok {
		return l.Addr()
	}
	return addr
}

// DialMap is host id's rewrite table for reaching every other host.
func (w *World) DialMap(id string) dialmap.Map {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := dialmap.Map{}
	for addr, l := range w.links[id] {
		m[addr] = l.Addr()
	}
	return m
}

// WriteDialMaps writes <dir>/<id>.dialmap.json for every host (atomically)
// and returns the paths; agents reload them when they change.
func (w *World) WriteDialMaps(dir string) (map[string]string, error) {
	w.mu.Lock()
	ids := make([]string, 0, len(w.hosts))
	for id, h := range w.hosts {
		if !h.service {
			ids = append(ids, id)
		}
	}
	w.mu.Unlock()
	out := map[string]string{}
	for _, id := range ids {
		b, err := json.MarshalIndent(w.DialMap(id), "", "  ")
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, id+".dialmap.json")
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, p); err != nil {
			return nil, err
		}
		out[id] = p
	}
	return out, nil
}

// linksBetween returns the links carrying traffic between a and b.
func (w *World) linksBetween(a, b string) []*Link {
	w.mu.Lock()
	defer w.mu.Unlock()
	var ls []*Link
	if hb, ok := w.hosts[b]; ok {
		for _, addr := range hb.addrs {
			if l, ok := w.links[a][addr]; ok {
				ls = append(ls, l)
			}
		}
	}
	if ha, ok := w.hosts[a]; ok {
		for _, addr := range ha.addrs {
			if l, ok := w.links[b][addr]; ok {
				ls = append(ls, l)
			}
		}
	}
	return ls
}

// Partition cuts all traffic between hosts a and b, both ways.
func (w *World) Partition(a, b string) {
	for _, l := range w.linksBetween(a, b) {
		l.Partition()
	}
}

// Heal restores traffic between a and b.
func (w *World) Heal(a, b string) {
	for _, l := range w.linksBetween(a, b) {
		l.Heal()
	}
}

// Isolate cuts host a from every other host and service.
func (w *World) Isolate(a string) {
	for _, b := range w.Hosts() {
		if b != a {
			w.Partition(a, b)
		}
	}
}

// HealAll heals every link.
func (w *World) HealAll() {
	w.mu.Lock()
	var ls []*Link
	for _, m := range w.links {
		for _, l := range m {
			ls = append(ls, l)
		}
	}
	w.mu.Unlock()
	for _, l := range ls {
		l.Heal()
	}
}

// SetDelay changes the delay of every link between regions a and b.
func (w *World) SetDelay(a, b string, c Conditions) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for from, m := range w.links {
		fr := w.hosts[from].region
		for addr, l := range m {
			to := ""
			for _, h := range w.hosts {
				for _, x := range h.addrs {
					if x == addr {
						to = h.region
					}
				}
			}
			if (fr == a && to == b) || (fr == b && to == a) {
				l.Set(c)
			}
		}
	}
}

// Hosts lists host and service ids.
func (w *World) Hosts() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	ids := make([]string, 0, len(w.hosts))
	for id := range w.hosts {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Close closes every link.
func (w *World) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.links {
		for _, l := range m {
			l.Close()
		}
	}
	w.links = map[string]map[string]*Link{}
}
