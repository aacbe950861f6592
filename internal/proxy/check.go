package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pki"
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
	role, err := p.getRole(ctx, t)
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

func (p *Proxy) getRole(ctx context.Context, t target) (string, error) {
	b, hdr, err := p.get(ctx, t, "/role", 64)
	if err != nil {
		return "", err
	}
	// The member names its own Postgres address (agents before it did
	// not: no header, taken as agreeing); a record pairing its API with
	// another address is a forged one.
	if own := hdr.Get(api.HeaderPostgresAddr); own != "" && own != t.pgAddr {
		p.log.Warn("proxy: a member record's postgres_addr is not the member's own; refusing it", "member", t.id, "record", t.pgAddr, "member_says", own)
		return "", fmt.Errorf("member %s says its postgres is at %q, not %q as its record says", t.id, own, t.pgAddr)
	}
	return strings.TrimSpace(string(b)), nil
}

// get asks member t's API; the answer must come from t itself (a
// certificate of the cluster CA naming t.id), else it is an error like no
// answer at all.
func (p *Proxy) get(ctx context.Context, t target, path string, limit int64) ([]byte, http.Header, error) {
	if p.api == nil {
		return nil, nil, errors.New("no API client: cannot verify members")
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CheckTimeout)
	defer cancel()
	b, hdr, err := p.api.GetHeader(ctx, t.api, t.id, path, limit)
	if errors.Is(err, api.ErrWrongNode) || errors.Is(err, pki.ErrNotNode) {
		p.log.Warn("proxy: a member record leads to a server that is not that member; refusing it", "member", t.id, "api", t.api, "err", err)
	}
	return b, hdr, err
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
			b, _, err := p.get(ctx, t, "/status", 1<<20)
			if err != nil {
				return
			}
			var st model.Status
			if json.Unmarshal(b, &st) != nil {
				return
			}
			if st.PostgresAddr != "" && st.PostgresAddr != t.pgAddr {
				return // a forged record: see getRole
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
