package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/model"
)

// maxLeaderFails is how many consecutive failed /role requests (no answer
// at all) drop a confirmed leader. Any answer other than "primary" drops
// it at once.
const maxLeaderFails = 2

// checkLoop confirms the store's leader against its GET /role every
// CheckInterval (and at once when the view changes), and polls the
// region's replicas when there is a read-only listener.
func (p *Proxy) checkLoop(ctx context.Context, readOnly bool) {
	for {
		p.checkLeader(ctx)
		if readOnly {
			p.checkReplicas(ctx)
		}
		every := p.cfg.CheckInterval
		p.mu.Lock()
		if p.leader == nil && p.viewLeader != "" {
			// A leader is named but not confirmed yet (e.g. promoting):
			// look again soon.
			every = max(p.cfg.CheckInterval/10, 20*time.Millisecond)
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-p.poke:
		case <-p.clock.After(every):
		}
	}
}

func (p *Proxy) checkLeader(ctx context.Context) {
	p.mu.Lock()
	id := p.viewLeader
	m, ok := p.members[id]
	p.mu.Unlock()
	if id == "" || !ok {
		p.mu.Lock()
		if p.viewLeader == id {
			p.setLeaderLocked(nil)
		}
		p.mu.Unlock()
		return
	}
	t := p.targetOf(m)
	role, err := p.getRole(ctx, t.api)
	if ctx.Err() != nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.members[id]; p.viewLeader != id || !ok || p.targetOf(cur) != t {
		return // the view moved on while we asked; the next round decides
	}
	switch {
	case err == nil && role == model.RolePrimary:
		p.setLeaderLocked(&t)
		p.leaderFails = 0
	case err == nil:
		if p.leader != nil {
			p.log.Info("proxy: leader no longer says primary", "leader", id, "role", role)
		}
		p.setLeaderLocked(nil)
	default:
		if p.leader == nil {
			return
		}
		p.leaderFails++
		p.log.Debug("proxy: leader role check failed", "leader", id, "err", err, "fails", p.leaderFails)
		if p.leaderFails >= maxLeaderFails {
			p.log.Warn("proxy: leader does not answer; dropping it", "leader", id, "err", err)
			p.setLeaderLocked(nil)
		}
	}
}

func (p *Proxy) getRole(ctx context.Context, api string) (string, error) {
	b, err := p.get(ctx, api+"/role", 64)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func (p *Proxy) get(ctx context.Context, url string, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("building request: %w", err)
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return b, nil
}

// checkReplicas polls /status of every other member of the proxy's region
// and keeps those that are streaming replicas within MaxReplicaLag.
func (p *Proxy) checkReplicas(ctx context.Context) {
	p.mu.Lock()
	leader := p.viewLeader
	var cands []target
	for id, m := range p.members {
		if id != leader && m.Region == p.cfg.Region {
			cands = append(cands, p.targetOf(m))
		}
	}
	p.mu.Unlock()
	healthy := make([]bool, len(cands))
	var wg sync.WaitGroup
	for i, t := range cands {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := p.get(ctx, t.api+"/status", 1<<20)
			if err != nil {
				return
			}
			var st model.Status
			if json.Unmarshal(b, &st) != nil {
				return
			}
			healthy[i] = st.Role == model.RoleReplica && st.Streaming && st.LagBytes <= p.cfg.MaxReplicaLag
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return
	}
	var rs []target
	for i, t := range cands {
		if healthy[i] {
			rs = append(rs, t)
		}
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].id < rs[j].id })
	p.mu.Lock()
	defer p.mu.Unlock()
	// Only keep members the view still has as they were.
	kept := rs[:0]
	for _, r := range rs {
		if m, ok := p.members[r.id]; ok && p.targetOf(m) == r && r.id != p.viewLeader {
			kept = append(kept, r)
		}
	}
	p.setReplicasLocked(kept)
}
