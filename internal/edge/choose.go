package edge

import (
	"slices"
	"sort"
)

// target is where a request goes next: this edge's own instances
// (peer == nil) or another region's edge; instance pins one instance.
type target struct {
	peer     *peer
	instance string
}

// chooseReplay decides where a fly-replay directive sends a request, from
// what this edge knows now: its region, its healthy local instances, and
// the other edges (alive ones only are candidates). asking is the
// instance that answered with the directive. The rules, in order:
//
//  1. instance=X goes to X, wherever it is, and nowhere else (elsewhere=true
//     and X the asking instance: nowhere).
//  2. prefer_instance=X goes to X when it is up; otherwise the rules below.
//  3. region= (a list, or any): the nearest listed region with a healthy
//     instance, this edge's own region counting as nearest. elsewhere=true
//     skips the asking instance (its region may still serve).
//  4. A directive with only elsewhere=true (or prefer_instance= alone)
//     means any region.
//
// ok=false: no candidate now (the caller waits up to the timeout).
func chooseReplay(d Directive, asking, region string, local []string, peers []peer) (target, bool) {
	localOK := func(id string) bool {
		return slices.Contains(local, id) && !(d.Elsewhere && id == asking)
	}
	findInstance := func(id string) (target, bool) {
		if localOK(id) {
			return target{instance: id}, true
		}
		for i := range peers {
			if peers[i].alive && slices.Contains(peers[i].Instances, id) {
				return target{peer: &peers[i], instance: id}, true
			}
		}
		return target{}, false
	}
	if d.Instance != "" {
		return findInstance(d.Instance)
	}
	if d.PreferInstance != "" {
		if t, ok := findInstance(d.PreferInstance); ok {
			return t, true
		}
	}
	any := d.AnyRegion || len(d.Regions) == 0
	want := func(r string) bool { return any || slices.Contains(d.Regions, r) }
	if want(region) && slices.ContainsFunc(local, localOK) {
		return target{}, true
	}
	var cands []*peer
	for i := range peers {
		p := &peers[i]
		if p.alive && p.Region != region && want(p.Region) && len(p.Instances) > 0 {
			cands = append(cands, p)
		}
	}
	if len(cands) == 0 {
		return target{}, false
	}
	sort.SliceStable(cands, func(a, b int) bool { return rttOrMax(cands[a]) < rttOrMax(cands[b]) })
	return target{peer: cands[0]}, true
}

// rttOrMax orders unmeasured peers last.
func rttOrMax(p *peer) int64 {
	if p.rtt == 0 {
		return 1 << 62
	}
	return int64(p.rtt)
}

// nearestPeer is the closest live edge of another region with instances
// (for shedding load and fly-prefer-region's fallback), or of region r
// when r != "".
func nearestPeer(region, r string, peers []peer) *peer {
	var best *peer
	for i := range peers {
		p := &peers[i]
		if !p.alive || p.Region == region || len(p.Instances) == 0 || (r != "" && p.Region != r) {
			continue
		}
		if best == nil || rttOrMax(p) < rttOrMax(best) {
			best = p
		}
	}
	return best
}
