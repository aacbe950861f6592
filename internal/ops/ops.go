// Package ops carries out the operator's multi-step operations on a
// running cluster: planned switchovers (request, then wait for the new
// leader), cluster settings and the rolling restarts that apply them,
// forced rolling restarts, and the events they leave. The CLI and the
// admin API (internal/dashboard) both call it; neither holds orchestration
// of its own.
//
// Everything goes through etcd and the members' GET /status: an operation
// can run anywhere that reaches them, and re-running one resumes it.
package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Cluster is a handle on one cluster for operations.
type Cluster struct {
	Etcd *clientv3.Client
	Name string
	// Out receives progress lines (nil: discarded).
	Out io.Writer
	// Actor names who acts, in the events operations record ("operator",
	// "postgres", "api:operator@10.0.0.5", ...).
	Actor string
	// ConnectLeader opens an admin connection to the leader's postgres
	// database; the settings checks need it (nil: they fail).
	ConnectLeader func(ctx context.Context) (*pgx.Conn, error)
	// ConnectLeaderDB opens an admin connection to a database on the
	// leader; deleting a user needs it (its objects in every database).
	ConnectLeaderDB func(ctx context.Context, db string) (*pgx.Conn, error)
	// API asks members for their /status (over TLS, against the pinned
	// cluster CA; nil: no member answers).
	API *api.Client
}

func (c *Cluster) out() io.Writer {
	if c.Out == nil {
		return io.Discard
	}
	return c.Out
}

// record writes an event of this operation; a failure is reported on Out
// and does not fail the operation (its action is done).
func (c *Cluster) record(ctx context.Context, ev model.Event) {
	if ev.Node == "" {
		ev.Node = c.Actor
	}
	if ev.Node == "" {
		ev.Node = "operator"
	}
	if _, err := store.RecordEvent(ctx, c.Etcd, c.Name, ev); err != nil {
		fmt.Fprintf(c.out(), "warning: %v\n", err)
	}
}

// Topology is the leader and the live members.
type Topology struct {
	Leader  string
	Members map[string]model.Member
}

// Topology reads the live members and the leader from etcd.
func (c *Cluster) Topology(ctx context.Context) (Topology, error) {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	t := Topology{Members: map[string]model.Member{}}
	resp, err := c.Etcd.Get(gctx, store.KeysFor(c.Name).Members(), clientv3.WithPrefix())
	if err != nil {
		return t, fmt.Errorf("reading members from etcd: %w", err)
	}
	for _, kv := range resp.Kvs {
		var m model.Member
		if json.Unmarshal(kv.Value, &m) == nil && m.ID != "" {
			t.Members[m.ID] = m
		}
	}
	if t.Leader, err = c.Leader(gctx); err != nil {
		return t, err
	}
	if len(t.Members) == 0 {
		return t, fmt.Errorf("no live members registered for cluster %q: is any `petrel node` running? is --cluster right?", c.Name)
	}
	return t, nil
}

// IDs returns the member ids sorted.
func (t Topology) IDs() []string {
	ids := make([]string, 0, len(t.Members))
	for id := range t.Members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// RegionMember is a region's nearest member for direct connections: its
// first replica by id, else the leader when it is in that region, else
// any member there.
func (t Topology) RegionMember(region string) (model.Member, bool) {
	var any *model.Member
	for _, id := range t.IDs() {
		m := t.Members[id]
		if m.Region != region {
			continue
		}
		if id != t.Leader {
			return m, true
		}
		if any == nil {
			any = &m
		}
	}
	if any != nil {
		return *any, true
	}
	return model.Member{}, false
}

// Regions lists the members' regions, in the order of their first member.
func (t Topology) Regions() []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range t.IDs() {
		if r := t.Members[id].Region; !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}

// Leader reads the leader's id from etcd ("" when none).
func (c *Cluster) Leader(ctx context.Context) (string, error) {
	resp, err := c.Etcd.Get(ctx, store.KeysFor(c.Name).Leader())
	if err != nil {
		return "", fmt.Errorf("reading the leader from etcd: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// Errors callers tell apart (the admin API maps them to status codes).
var (
	ErrNoLeader  = errors.New("the cluster has no leader right now; check `petrel status`")
	ErrBadTarget = errors.New("bad switchover target")
	ErrRefused   = errors.New("the leader refused the switchover")
)

// SwitchoverRequest is a planned switchover's parameters.
type SwitchoverRequest struct {
	To string // "" lets the leader choose
	// AllowSecondaryRegion lets To be outside the primary region, which
	// then moves to To's region.
	AllowSecondaryRegion bool
}

// Switchover asks the leader to hand over and waits (until ctx ends) for
// a new leader; it returns the old and the new leader.
func (c *Cluster) Switchover(ctx context.Context, req SwitchoverRequest) (from, to string, err error) {
	leader, err := c.Leader(ctx)
	if err != nil {
		return "", "", err
	}
	if leader == "" {
		return "", "", ErrNoLeader
	}
	if req.To == leader {
		return leader, "", fmt.Errorf("%w: %s is already the leader", ErrBadTarget, req.To)
	}
	if req.To != "" {
		if err := c.checkTarget(ctx, req.To, req.AllowSecondaryRegion); err != nil {
			return leader, "", err
		}
	}
	start := time.Now()
	if err := store.RequestSwitchover(ctx, c.Etcd, c.Name, model.Switchover{From: leader, To: req.To, RequestedAt: time.Now().UTC(), AllowSecondaryRegion: req.AllowSecondaryRegion}); err != nil {
		return leader, "", err
	}
	c.record(ctx, model.Event{Kind: model.EventSwitchoverReq, From: leader, To: req.To, Reason: "planned switchover requested"})
	fmt.Fprintf(c.out(), "switchover requested: leader %s", leader)
	if req.To != "" {
		fmt.Fprintf(c.out(), " -> %s", req.To)
	}
	fmt.Fprintln(c.out())
	for {
		l, err := c.Leader(ctx)
		if err == nil && l != "" && l != leader {
			fmt.Fprintf(c.out(), "new leader: %s (after %.2fs)\n", l, time.Since(start).Seconds())
			return leader, l, nil
		}
		sw, _ := c.Etcd.Get(ctx, store.KeysFor(c.Name).Switchover())
		if err == nil && l == leader && sw != nil && len(sw.Kvs) == 0 && time.Since(start) > time.Second {
			return leader, "", fmt.Errorf("%w (no eligible streaming standby in the primary region%s); see its log", ErrRefused, strings.TrimSpace(" "+req.To))
		}
		select {
		case <-ctx.Done():
			return leader, "", fmt.Errorf("no new leader after %v: %w", time.Since(start).Round(time.Millisecond), ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// checkTarget refuses a target that is not a live member, or outside the
// primary region unless allowed.
func (c *Cluster) checkTarget(ctx context.Context, to string, allow bool) error {
	keys := store.KeysFor(c.Name)
	mr, err := c.Etcd.Get(ctx, keys.Member(to))
	if err != nil {
		return fmt.Errorf("reading member %s: %w", to, err)
	}
	if len(mr.Kvs) == 0 {
		return fmt.Errorf("%w: no live member %s; see `petrel status`", ErrBadTarget, to)
	}
	var m model.Member
	if err := json.Unmarshal(mr.Kvs[0].Value, &m); err != nil {
		return fmt.Errorf("decoding member %s: %w", to, err)
	}
	ir, err := c.Etcd.Get(ctx, keys.Info())
	if err != nil || len(ir.Kvs) == 0 {
		return fmt.Errorf("reading cluster info: %v", err)
	}
	var info model.ClusterInfo
	if err := json.Unmarshal(ir.Kvs[0].Value, &info); err != nil {
		return fmt.Errorf("decoding cluster info: %w", err)
	}
	if m.Region != info.PrimaryRegion {
		if !allow {
			return fmt.Errorf("%w: %s is in region %s, outside the primary region %s: only primary-region members may lead. Pass --allow-secondary-region to move the primary region to %s", ErrBadTarget, to, m.Region, info.PrimaryRegion, m.Region)
		}
		fmt.Fprintf(c.out(), "moving the primary region from %s to %s\n", info.PrimaryRegion, m.Region)
	}
	return nil
}

// RollingRestart restarts every member's Postgres while writes stay
// available: each replica in turn (back streaming before the next), then
// a switchover, after which the old leader restarts as a replica.
func (c *Cluster) RollingRestart(ctx context.Context) error {
	t, err := c.Topology(ctx)
	if err != nil {
		return err
	}
	if t.Leader == "" {
		return ErrNoLeader
	}
	c.record(ctx, model.Event{Kind: model.EventRestart, Reason: "rolling restart started"})
	for _, id := range t.IDs() {
		if id == t.Leader {
			continue
		}
		if err := c.restartReplicaReq(ctx, id, store.RestartRequest{RequestedAt: time.Now().UTC(), Force: true}); err != nil {
			return err
		}
	}
	if err := c.switchoverForRestart(ctx, t.Leader); err != nil {
		return err
	}
	c.record(ctx, model.Event{Kind: model.EventRestart, Reason: "rolling restart complete"})
	fmt.Fprintln(c.out(), "rolling restart complete")
	return nil
}
