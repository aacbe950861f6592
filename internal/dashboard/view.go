package dashboard

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/statusview"
	"github.com/petrel-db/petrel/internal/store"
)

// View is the whole cluster as one node sees it: what the page draws.
type View struct {
	Cluster       string         `json:"cluster"`
	ServedBy      string         `json:"served_by"`
	Time          time.Time      `json:"time"`
	Leader        string         `json:"leader"`
	PrimaryRegion string         `json:"primary_region"`
	StoreOK       bool           `json:"store_ok"`
	Regions       []string       `json:"regions"` // primary first
	Members       []model.Status `json:"members"` // every registered member; unreachable ones as offline
	Proxies       []ProxyView    `json:"proxies"`
	Edges         []EdgeView     `json:"edges"`
	Switchover    bool           `json:"switchover_in_progress"`
}

// ProxyView is a member's leader proxy, from its /metrics.
type ProxyView struct {
	Member string  `json:"member"`
	Addr   string  `json:"addr"`
	Active float64 `json:"active"`  // client connections open
	PerSec float64 `json:"per_sec"` // connections accepted per second since the last sample
	Known  bool    `json:"known"`   // the metrics were read
}

// EdgeView is an edge router's record and, from its /metrics, its rates.
type EdgeView struct {
	ID           string  `json:"id"`
	Region       string  `json:"region"`
	URL          string  `json:"url"`
	Instances    int     `json:"instances"`
	Known        bool    `json:"known"` // the metrics were read
	ReqPerSec    float64 `json:"requests_per_sec"`
	ReplayPerSec float64 `json:"replays_per_sec"`
}

// collector builds Views from the node's store cache and the members'
// /status and /metrics.
type collector struct {
	cluster  string
	self     string
	st       Store
	api      *api.Client  // nil: no member answers
	edgeHTTP *http.Client // edges' admin URLs (nil: a 1 s client)

	mu        sync.Mutex
	samples   map[string]proxySample // counter ("proxy/<id>", "edge/<id>/<what>") -> last sample
	lastProxy []ProxyView            // the last proxies' view
	lastEdges []EdgeView             // the last edges' view
	proxiesAt time.Time              // when they were gathered
}

// proxiesEvery spaces the /metrics scrapes (the heavier request) out more
// than the views.
const proxiesEvery = 2 * time.Second

type proxySample struct {
	at       time.Time
	accepted float64
}

func (c *collector) view(ctx context.Context) View {
	snap := c.st.Snapshot()
	v := View{Cluster: c.cluster, ServedBy: c.self, Time: time.Now().UTC(), Leader: snap.Leader, StoreOK: c.st.OK(), Switchover: snap.Switchover != nil}
	if snap.Info != nil {
		v.PrimaryRegion = snap.Info.PrimaryRegion
	}
	// Every registered member, so a dead one shows as offline.
	var targets []statusview.Target
	seen := map[string]bool{}
	for _, id := range snap.Registered {
		m, ok := snap.Members[id]
		t := statusview.Target{ID: id, Region: snap.RegisteredRegions[id]}
		if ok {
			t.Region, t.APIURL = m.Region, m.APIURL
		}
		targets = append(targets, t)
		seen[id] = true
	}
	for id, m := range snap.Members {
		if !seen[id] {
			targets = append(targets, statusview.Target{ID: id, Region: m.Region, APIURL: m.APIURL})
		}
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].ID < targets[j].ID })
	v.Members = statusview.Collect(ctx, c.api, targets)
	regions := map[string]bool{}
	for _, m := range v.Members {
		if m.Region != "" && !regions[m.Region] {
			regions[m.Region] = true
			v.Regions = append(v.Regions, m.Region)
		}
	}
	sort.Slice(v.Regions, func(i, j int) bool {
		if (v.Regions[i] == v.PrimaryRegion) != (v.Regions[j] == v.PrimaryRegion) {
			return v.Regions[i] == v.PrimaryRegion
		}
		return v.Regions[i] < v.Regions[j]
	})
	c.mu.Lock()
	stale := time.Since(c.proxiesAt) >= proxiesEvery
	v.Proxies, v.Edges = c.lastProxy, c.lastEdges
	c.mu.Unlock()
	if stale {
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); v.Edges = c.edges(ctx) }()
		v.Proxies = c.proxies(ctx, snap)
		wg.Wait()
		c.mu.Lock()
		c.lastProxy, c.lastEdges, c.proxiesAt = v.Proxies, v.Edges, time.Now()
		c.mu.Unlock()
	}
	return v
}

// rate turns a counter sample into a per-second rate since the last one
// of the same key (0 for the first, or after a reset).
func (c *collector) rate(key string, now time.Time, value float64) float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := 0.0
	if prev, ok := c.samples[key]; ok && now.After(prev.at) && value >= prev.accepted {
		r = (value - prev.accepted) / now.Sub(prev.at).Seconds()
	}
	c.samples[key] = proxySample{at: now, accepted: value}
	return r
}

// edges lists the edges' records and samples their request and replay
// counters.
func (c *collector) edges(ctx context.Context) []EdgeView {
	recs := c.st.Edges()
	out := make([]EdgeView, len(recs))
	var wg sync.WaitGroup
	for i, e := range recs {
		out[i] = EdgeView{ID: e.ID, Region: e.Region, URL: e.URL, Instances: len(e.Instances)}
		if e.AdminURL == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			vals, err := c.scrapeEdge(ctx, e.AdminURL, "petrel_edge_requests_total", "petrel_edge_replays_total")
			if err != nil {
				return
			}
			now := time.Now()
			out[i].Known = true
			out[i].ReqPerSec = c.rate("edge/"+e.ID+"/requests", now, vals["petrel_edge_requests_total"])
			out[i].ReplayPerSec = c.rate("edge/"+e.ID+"/replays", now, vals["petrel_edge_replays_total"])
		}()
	}
	wg.Wait()
	return out
}

// proxies samples the leader proxies' connection counters.
func (c *collector) proxies(ctx context.Context, snap store.Snapshot) []ProxyView {
	var ids []string
	for id, m := range snap.Members {
		if m.ProxyAddr != "" {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	out := make([]ProxyView, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		m := snap.Members[id]
		out[i] = ProxyView{Member: id, Addr: m.ProxyAddr}
		wg.Add(1)
		go func() {
			defer wg.Done()
			vals, err := c.scrape(ctx, m, "petrel_proxy_connections_accepted_total", "petrel_proxy_connections_active")
			if err != nil {
				return
			}
			p := &out[i]
			p.Known, p.Active = true, vals["petrel_proxy_connections_active"]
			p.PerSec = c.rate("proxy/"+id, time.Now(), vals["petrel_proxy_connections_accepted_total"])
		}()
	}
	wg.Wait()
	return out
}

// scrape sums the samples of the named metrics (all label sets) in a
// member's /metrics text exposition.
func (c *collector) scrape(ctx context.Context, m model.Member, names ...string) (map[string]float64, error) {
	if c.api == nil {
		return nil, errors.New("no API client")
	}
	return scrapeWith(ctx, m.APIURL, func(req *http.Request) (*http.Response, error) { return c.api.Do(req, m.ID) }, names...)
}

// scrapeEdge is scrape for an edge's admin URL (plain HTTP: an edge has
// no node certificate).
func (c *collector) scrapeEdge(ctx context.Context, adminURL string, names ...string) (map[string]float64, error) {
	hc := c.edgeHTTP
	if hc == nil {
		hc = &http.Client{Timeout: time.Second}
	}
	return scrapeWith(ctx, adminURL, hc.Do, names...)
}

func scrapeWith(ctx context.Context, base string, do func(*http.Request) (*http.Response, error), names ...string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		if !want[name] {
			continue
		}
		rest := line[len(name):]
		if i := strings.LastIndexByte(rest, '}'); i >= 0 {
			rest = rest[i+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if x, err := strconv.ParseFloat(f[0], 64); err == nil {
			out[name] += x
		}
	}
	return out, sc.Err()
}
