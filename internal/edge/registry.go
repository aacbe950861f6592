package edge

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// Instance is one app instance behind an edge.
type Instance struct {
	// ID names the instance (fly-replay's instance=); unique in the cluster.
	ID string `json:"id"`
	// Addr is host:port of its HTTP listener.
	Addr string `json:"addr"`
	// Capacity is how many requests it serves at once before the edge sheds
	// load to another instance, then to the nearest region; 0 is no limit.
	Capacity int `json:"capacity,omitempty"`
}

// Health-check and expiry times: an instance that stops answering is out
// of rotation within about a second and a half (or at once when a request
// finds its port refusing), a registered one that stops heartbeating
// within RegistrationTTL.
const (
	HealthInterval  = 500 * time.Millisecond
	healthFails     = 2
	RegistrationTTL = 3 * time.Second
	pingInterval    = time.Second
	peerFails       = 2
)

type inst struct {
	Instance
	static   bool
	expires  time.Time // registered instances only
	healthy  bool
	fails    int
	inflight atomic.Int64
}

// spare says whether the instance can take one more request.
func (i *inst) spare() bool {
	return i.Capacity <= 0 || i.inflight.Load() < int64(i.Capacity)
}

// instances is the edge's set of local app instances.
type instances struct {
	mu sync.Mutex // guards m
	m  map[string]*inst

	changed func() // called (without mu) when the healthy set may have changed
}

func newInstances(static []Instance, changed func()) *instances {
	is := &instances{m: map[string]*inst{}, changed: changed}
	for _, s := range static {
		// Static instances start healthy: the first health check within
		// half a second corrects it, and a refusal takes one out at once.
		is.m[s.ID] = &inst{Instance: s, static: true, healthy: true}
	}
	return is
}

// register adds or refreshes a registered instance.
func (is *instances) register(in Instance, now time.Time) error {
	if !validToken(in.ID) {
		return fmt.Errorf("instance id %q: letters, digits, '-', '_', '.', at most 64", in.ID)
	}
	if _, _, err := net.SplitHostPort(in.Addr); err != nil {
		return fmt.Errorf("instance addr %q: want host:port", in.Addr)
	}
	if in.Capacity < 0 || in.Capacity > 1_000_000 {
		return fmt.Errorf("instance capacity %d: want 0 (no limit) to 1000000", in.Capacity)
	}
	is.mu.Lock()
	cur, ok := is.m[in.ID]
	if ok && cur.static {
		is.mu.Unlock()
		return fmt.Errorf("instance %s is configured statically", in.ID)
	}
	if !ok || cur.Addr != in.Addr {
		if len(is.m) >= 4096 && !ok {
			is.mu.Unlock()
			return fmt.Errorf("too many instances")
		}
		cur = &inst{Instance: in, healthy: true}
		is.m[in.ID] = cur
	}
	cur.Capacity = in.Capacity
	cur.expires = now.Add(RegistrationTTL)
	is.mu.Unlock()
	if !ok {
		is.changed()
	}
	return nil
}

// pick chooses a healthy instance with spare capacity, the least busy
// first; pinned "" means any, excluded is skipped. full reports that
// healthy instances exist but none has spare capacity.
func (is *instances) pick(pinned, excluded string) (in *inst, full bool) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if pinned != "" {
		i := is.m[pinned]
		if i == nil || !i.healthy {
			return nil, false
		}
		return i, !i.spare()
	}
	var best *inst
	for _, i := range is.m {
		if !i.healthy || i.ID == excluded {
			continue
		}
		if !i.spare() {
			full = true
			continue
		}
		if best == nil || i.inflight.Load() < best.inflight.Load() || (i.inflight.Load() == best.inflight.Load() && i.ID < best.ID) {
			best = i
		}
	}
	if best != nil {
		return best, false
	}
	return nil, full
}

func (is *instances) get(id string) *inst {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.m[id]
}

// markDown takes an instance out of rotation at once (its port refused a
// request); the health checks put it back when it answers.
func (is *instances) markDown(i *inst) {
	is.mu.Lock()
	was := i.healthy
	i.healthy, i.fails = false, healthFails
	is.mu.Unlock()
	if was {
		is.changed()
	}
}

// healthyIDs lists the healthy instances, sorted.
func (is *instances) healthyIDs() []string {
	is.mu.Lock()
	defer is.mu.Unlock()
	var ids []string
	for _, i := range is.m {
		if i.healthy {
			ids = append(ids, i.ID)
		}
	}
	sort.Strings(ids)
	return ids
}

// InstanceState is one instance in the admin API's /instances.
type InstanceState struct {
	Instance
	Healthy    bool `json:"healthy"`
	InFlight   int  `json:"in_flight"`
	Registered bool `json:"registered"`
}

func (is *instances) list() []InstanceState {
	is.mu.Lock()
	defer is.mu.Unlock()
	out := make([]InstanceState, 0, len(is.m))
	for _, i := range is.m {
		out = append(out, InstanceState{Instance: i.Instance, Healthy: i.healthy, InFlight: int(i.inflight.Load()), Registered: !i.static})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

// check health-checks every instance once: GET path when path is set,
// else a TCP connect; and drops registrations that expired.
func (is *instances) check(ctx context.Context, client *http.Client, path string, now time.Time) {
	is.mu.Lock()
	all := make([]*inst, 0, len(is.m))
	for id, i := range is.m {
		if !i.static && now.After(i.expires) {
			delete(is.m, id)
			defer is.changed()
			continue
		}
		all = append(all, i)
	}
	is.mu.Unlock()
	var wg sync.WaitGroup
	results := make([]bool, len(all))
	for k, i := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[k] = probe(ctx, client, i.Addr, path)
		}()
	}
	wg.Wait()
	flipped := false
	is.mu.Lock()
	for k, i := range all {
		if results[k] {
			if !i.healthy {
				flipped = true
			}
			i.healthy, i.fails = true, 0
			continue
		}
		i.fails++
		if i.fails >= healthFails && i.healthy {
			i.healthy, flipped = false, true
		}
	}
	is.mu.Unlock()
	if flipped {
		is.changed()
	}
}

func probe(ctx context.Context, client *http.Client, addr, path string) bool {
	ctx, cancel := context.WithTimeout(ctx, HealthInterval)
	defer cancel()
	if path == "" {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode < 500
}

// peer is another region's edge.
type peer struct {
	ID, Region, URL string
	Instances       []string
	alive           bool
	fails           int
	rtt             time.Duration // smoothed ping round trip
}

// peers is the other edges, from the store, with liveness from pings.
type peers struct {
	mu sync.Mutex // guards m
	m  map[string]*peer
}

func (ps *peers) set(recs []peerRecord) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	next := map[string]*peer{}
	for _, r := range recs {
		p := ps.m[r.ID]
		if p == nil || p.URL != r.URL {
			// A new edge is alive until pings say otherwise: the store
			// just told us it registered.
			p = &peer{ID: r.ID, URL: r.URL, alive: true}
		}
		p.Region, p.Instances = r.Region, r.Instances
		next[r.ID] = p
	}
	ps.m = next
}

type peerRecord struct {
	ID, Region, URL string
	Instances       []string
}

// candidate is a place a request can be sent: this edge's own instances
// (Peer == nil) or another edge.
type candidate struct {
	Region    string
	Peer      *peer
	RTT       time.Duration
	Instances []string
}

func (ps *peers) snapshot() []peer {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	out := make([]peer, 0, len(ps.m))
	for _, p := range ps.m {
		cp := *p
		cp.Instances = slices.Clone(p.Instances)
		out = append(out, cp)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return out
}

func (ps *peers) byID(id string) *peer {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.m[id]
}

func (ps *peers) result(id string, ok bool, rtt time.Duration) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p := ps.m[id]
	if p == nil {
		return
	}
	if ok {
		p.alive, p.fails = true, 0
		if p.rtt == 0 {
			p.rtt = rtt
		} else {
			p.rtt = (3*p.rtt + rtt) / 4
		}
		return
	}
	p.fails++
	if p.fails >= peerFails {
		p.alive = false
	}
}

// markDown takes a peer out at once (a dial failed).
func (ps *peers) markDown(id string) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if p := ps.m[id]; p != nil {
		p.alive, p.fails = false, peerFails
	}
}

// pingAll pings every peer once, in parallel.
func (ps *peers) pingAll(ctx context.Context, client *http.Client) {
	var wg sync.WaitGroup
	for _, p := range ps.snapshot() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			ok := pingPeer(ctx, client, p.URL)
			ps.result(p.ID, ok, time.Since(start))
		}()
	}
	wg.Wait()
}

func pingPeer(ctx context.Context, client *http.Client, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+pingPath, nil)
	if err != nil {
		return false
	}
	resp, err := client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var pr pingReply
	return resp.StatusCode == http.StatusOK && json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 4096)).Decode(&pr) == nil
}

const pingPath = "/.petrel-edge/ping"

type pingReply struct {
	ID     string `json:"id"`
	Region string `json:"region"`
}
