package ops

// Cluster-wide settings and the rolling restarts that apply them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/pgsettings"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// LoadSettings reads /config and its mod revision (0 when absent).
func (c *Cluster) LoadSettings(ctx context.Context) (map[string]string, int64, error) {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.Etcd.Get(gctx, store.ClusterKey(c.Name, store.KeyConfig))
	if err != nil {
		return nil, 0, fmt.Errorf("reading settings from etcd: %w", err)
	}
	m := map[string]string{}
	if len(resp.Kvs) == 0 {
		return m, 0, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &m); err != nil {
		return nil, 0, fmt.Errorf("decoding the stored settings: %w", err)
	}
	return m, resp.Kvs[0].ModRevision, nil
}

// StoreSettings writes m if /config is still at rev; returns the new rev.
func (c *Cluster) StoreSettings(ctx context.Context, m map[string]string, rev int64) (int64, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	k := store.ClusterKey(c.Name, store.KeyConfig)
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.Etcd.Txn(gctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).Then(clientv3.OpPut(k, string(b))).Commit()
	if err != nil {
		return 0, fmt.Errorf("storing settings: %w", err)
	}
	if !resp.Succeeded {
		return 0, errors.New("the settings changed while being validated (another `petrel config set`?); run the command again")
	}
	kv := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		kv = append(kv, k+"="+m[k])
	}
	c.record(ctx, model.Event{Kind: model.EventConfig, Reason: "cluster settings now: " + strings.Join(kv, ", ")})
	return resp.Header.Revision, nil
}

// UnsetSettings removes names from the stored settings (back to petrel's
// defaults) and returns the new revision; a name that is not set is an
// error and nothing is changed.
func (c *Cluster) UnsetSettings(ctx context.Context, names []string) (int64, error) {
	settings, rev, err := c.LoadSettings(ctx)
	if err != nil {
		return 0, err
	}
	for _, k := range names {
		k = strings.ToLower(strings.TrimSpace(k))
		if _, ok := settings[k]; !ok {
			return 0, fmt.Errorf("%w: %s is not set (see `petrel config show`)", ErrBadRequest, k)
		}
		delete(settings, k)
	}
	return c.StoreSettings(ctx, settings, rev)
}

// SetSettings validates args against the leader's pg_settings and stores
// them; nothing is stored when any is refused. No args: the current rev.
func (c *Cluster) SetSettings(ctx context.Context, args []string) (int64, error) {
	settings, rev, err := c.LoadSettings(ctx)
	if err != nil {
		return 0, err
	}
	if len(args) == 0 {
		return rev, nil
	}
	want := map[string]string{}
	var names []string
	var errs []error
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		k = strings.ToLower(strings.TrimSpace(k))
		if !ok || k == "" {
			errs = append(errs, fmt.Errorf("%q: write name=value", a))
			continue
		}
		if err := pgsettings.CheckName(k); err != nil {
			errs = append(errs, err)
			continue
		}
		want[k] = strings.TrimSpace(v)
		names = append(names, k)
	}
	if len(names) > 0 {
		conn, err := c.ConnectLeader(ctx)
		if err != nil {
			return 0, fmt.Errorf("validating against the leader: %w", err)
		}
		defer conn.Close(context.Background())
		rows, err := pgsettings.Load(ctx, conn, names)
		if err != nil {
			return 0, err
		}
		for _, k := range names {
			if k == pgsettings.PreloadLibraries {
				// First: pg_settings hides it from non-superusers.
				if err := checkPreload(ctx, conn, want[k]); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			row, ok := rows[k]
			if !ok {
				errs = append(errs, fmt.Errorf("unknown setting %q (not in the leader's pg_settings)", k))
				continue
			}
			if err := pgsettings.Validate(row, want[k]); err != nil {
				errs = append(errs, err)
				continue
			}
		}
	}
	if len(errs) > 0 {
		return 0, fmt.Errorf("nothing changed:\n  %w", joinErrs(errs))
	}
	changed := false
	for k, v := range want {
		if settings[k] != v {
			settings[k], changed = v, true
		}
	}
	if !changed {
		fmt.Fprintln(c.out(), "settings unchanged")
		return rev, nil
	}
	newRev, err := c.StoreSettings(ctx, settings, rev)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(c.out(), "stored %d setting(s)\n", len(want))
	return newRev, nil
}

// checkPreload allows shared_preload_libraries only to the superuser (the
// operator is not one, and preloaded code runs in every backend) and only
// for libraries installed in the leader's pkglibdir; each agent checks its
// own pkglibdir again before applying.
func checkPreload(ctx context.Context, conn *pgx.Conn, value string) error {
	var super bool
	if err := conn.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil {
		return fmt.Errorf("checking for the superuser: %w", err)
	}
	if !super {
		return fmt.Errorf("%s loads code into every backend: only the superuser may set it (SU_PASSWORD)", pgsettings.PreloadLibraries)
	}
	libs, err := pgsettings.LoadLibraries(ctx, conn)
	if err != nil {
		return err
	}
	return pgsettings.CheckLibraries(value, libs)
}

type multiErr []error

func (m multiErr) Error() string {
	s := make([]string, len(m))
	for i, e := range m {
		s[i] = e.Error()
	}
	return strings.Join(s, "\n  ")
}

func joinErrs(errs []error) error { return multiErr(errs) }

// MemberStatus asks member m for its GET /status (over TLS, from m
// itself).
func (c *Cluster) MemberStatus(ctx context.Context, m model.Member) (model.Status, error) {
	var st model.Status
	if c.API == nil {
		return st, errors.New("no API client (cluster CA) to ask members with")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	b, err := c.API.Get(ctx, m.APIURL, m.ID, "/status", 1<<20)
	if err != nil {
		return st, fmt.Errorf("asking %s for its status: %w", m.ID, err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("decoding %s's status: %w", m.ID, err)
	}
	return st, nil
}

// Statuses is every live member's status (those that answer).
func (c *Cluster) Statuses(ctx context.Context) (Topology, map[string]model.Status, error) {
	t, err := c.Topology(ctx)
	if err != nil {
		return t, nil, err
	}
	sts := map[string]model.Status{}
	for id, m := range t.Members {
		if st, err := c.MemberStatus(ctx, m); err == nil {
			sts[id] = st
		}
	}
	return t, sts, nil
}

// waitUntil polls cond every 250ms until it holds or ctx ends.
func waitUntil(ctx context.Context, what string, cond func() (bool, error)) error {
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (run the command again to resume)", what, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// RollOut waits for every member to apply rev, then restarts those with
// a pending restart: replicas one at a time, then the leader by a
// switchover (and a restart of the old leader if it still needs one).
func (c *Cluster) RollOut(ctx context.Context, rev int64) error {
	err := waitUntil(ctx, "every member to apply the settings", func() (bool, error) {
		t, sts, err := c.Statuses(ctx)
		if err != nil {
			return false, err
		}
		for id := range t.Members {
			if st, ok := sts[id]; !ok || st.ConfigRev < rev {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	t, sts, err := c.Statuses(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out(), "applied on %d member(s)\n", len(t.Members))
	restarted := map[string]bool{}
	// A standby must run these at least as high as its primary, so a
	// lowered one rolls the other way: the leader first, in place (writes
	// pause for its restart; its WAL then carries the lower value), then
	// the replicas. Raising, the usual order (replicas, switchover) works.
	if st := sts[t.Leader]; st.PendingRestart {
		lowered, err := c.lowered(ctx)
		if err != nil {
			return err
		}
		if len(lowered) > 0 {
			fmt.Fprintf(c.out(), "lowering %s: restarting the leader %s in place first (writes pause while it restarts)\n", strings.Join(lowered, ", "), t.Leader)
			if err := c.restartInPlace(ctx, t.Leader, rev); err != nil {
				return err
			}
			restarted[t.Leader] = true
			if t, sts, err = c.Statuses(ctx); err != nil {
				return err
			}
		}
	}
	for round := 0; ; round++ {
		var replicas []string
		leaderPending := false
		for _, id := range t.IDs() {
			st := sts[id]
			if !st.PendingRestart {
				continue
			}
			if id == t.Leader {
				leaderPending = true
			} else {
				replicas = append(replicas, id)
			}
		}
		if len(replicas) == 0 && !leaderPending {
			if len(restarted) == 0 {
				fmt.Fprintln(c.out(), "no restart needed")
			} else {
				fmt.Fprintln(c.out(), "rolling restart complete")
			}
			return nil
		}
		if round > 2*len(t.Members)+2 {
			return errors.New("the rolling restart is not converging; see `petrel status` and the members' logs, then run `petrel config set` again")
		}
		for _, id := range replicas {
			if err := c.restartReplica(ctx, id, rev); err != nil {
				return err
			}
			restarted[id] = true
		}
		if leaderPending && len(replicas) == 0 {
			if err := c.switchoverForRestart(ctx, t.Leader); err != nil {
				return err
			}
			restarted[t.Leader] = true
		}
		if t, sts, err = c.Statuses(ctx); err != nil {
			return err
		}
	}
}

// restartReplica asks replica id to restart and waits until it streams
// again with nothing pending.
func (c *Cluster) restartReplica(ctx context.Context, id string, rev int64) error {
	return c.restartReplicaReq(ctx, id, store.RestartRequest{RequestedAt: time.Now().UTC(), ConfigRev: rev})
}

func (c *Cluster) restartReplicaReq(ctx context.Context, id string, req store.RestartRequest) error {
	start := time.Now()
	fmt.Fprintf(c.out(), "restarting replica %s...\n", id)
	err := c.restartMember(ctx, id, req,
		" to restart and stream again", func(st model.Status) bool {
			// Primary: it became the leader meanwhile; the next round handles it.
			return st.Role == model.RolePrimary || st.Role == model.RoleReplica && st.Streaming && !st.PendingRestart
		})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out(), "  %s is back and streaming (%.1fs)\n", id, time.Since(start).Seconds())
	return nil
}

// restartMember writes a restart request for id and waits until the agent
// took it (the key is gone) and id's /status satisfies done.
func (c *Cluster) restartMember(ctx context.Context, id string, req store.RestartRequest, what string, done func(model.Status) bool) error {
	b, _ := json.Marshal(req)
	k := store.ClusterKey(c.Name, store.KeyRestart, id)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := c.Etcd.Put(pctx, k, string(b))
	cancel()
	if err != nil {
		return fmt.Errorf("asking %s to restart: %w", id, err)
	}
	return waitUntil(ctx, id+what, func() (bool, error) {
		gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err := c.Etcd.Get(gctx, k)
		cancel()
		if err != nil || len(resp.Kvs) > 0 {
			return false, nil
		}
		t, err := c.Topology(ctx)
		if err != nil {
			return false, nil
		}
		m, ok := t.Members[id]
		if !ok {
			return false, nil
		}
		st, err := c.MemberStatus(ctx, m)
		return err == nil && done(st), nil
	})
}

// standbyMinimums are the settings a hot standby must run at least as
// high as its primary (PostgreSQL pauses recovery otherwise).
var standbyMinimums = []string{"max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions", "max_locks_per_transaction"}

// lowered lists the standbyMinimums whose stored value is below the
// value the leader runs now.
func (c *Cluster) lowered(ctx context.Context) ([]string, error) {
	settings, _, err := c.LoadSettings(ctx)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, n := range standbyMinimums {
		if _, ok := settings[n]; ok {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	conn, err := c.ConnectLeader(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the leader's running settings: %w", err)
	}
	defer conn.Close(context.Background())
	var out []string
	for _, n := range names {
		want, err := strconv.ParseInt(settings[n], 10, 64)
		if err != nil {
			continue // validated already; a unit-less integer is expected
		}
		var running int64
		if err := conn.QueryRow(ctx, "SELECT setting::bigint FROM pg_settings WHERE name = $1", n).Scan(&running); err != nil {
			return nil, fmt.Errorf("reading %s on the leader: %w", n, err)
		}
		if want < running {
			out = append(out, n)
		}
	}
	return out, nil
}

// restartInPlace asks the leader to restart where it is and waits until
// it is the leader again with nothing pending.
func (c *Cluster) restartInPlace(ctx context.Context, leader string, rev int64) error {
	start := time.Now()
	err := c.restartMember(ctx, leader, store.RestartRequest{RequestedAt: time.Now().UTC(), ConfigRev: rev, InPlace: true},
		" to restart in place", func(st model.Status) bool { return st.Role == model.RolePrimary && !st.PendingRestart })
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out(), "  %s restarted in place (%.1fs)\n", leader, time.Since(start).Seconds())
	// A replica restarted before it replayed the leader's record of the
	// lower value would refuse to start ("insufficient parameter
	// settings"): wait until every live replica has replayed past the
	// leader's position after its restart. The position is asked of the
	// restarted server itself: the leader's /status can still carry what
	// its agent observed before the restart, a position from before the
	// record, and a replica restarted on it refuses to start.
	var target uint64
	if err := waitUntil(ctx, leader+"'s position", func() (bool, error) {
		conn, err := c.ConnectLeader(ctx)
		if err != nil {
			return false, nil
		}
		defer conn.Close(context.Background())
		var lsn string
		if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsn); err != nil {
			return false, nil
		}
		target, err = pg.ParseLSN(lsn)
		return err == nil && target > 0, nil
	}); err != nil {
		return err
	}
	return waitUntil(ctx, "the replicas to replay the leader's new settings", func() (bool, error) {
		t, sts, err := c.Statuses(ctx)
		if err != nil {
			return false, nil
		}
		for id := range t.Members {
			st, ok := sts[id]
			if id == leader || !ok || st.Role != model.RoleReplica {
				continue
			}
			if r, err := pg.ParseLSN(st.ReplayLSN); err != nil || r < target {
				return false, nil
			}
		}
		return true, nil
	})
}

// switchoverForRestart hands leadership over from leader so that its
// Postgres restarts as a replica.
func (c *Cluster) switchoverForRestart(ctx context.Context, leader string) error {
	start := time.Now()
	fmt.Fprintf(c.out(), "switching over from leader %s so it can restart...\n", leader)
	if err := store.RequestSwitchover(ctx, c.Etcd, c.Name, model.Switchover{From: leader, RequestedAt: time.Now().UTC()}); err != nil {
		return err
	}
	var newLeader string
	err := waitUntil(ctx, "a new leader", func() (bool, error) {
		l, err := c.Leader(ctx)
		if err != nil {
			return false, nil
		}
		if l != "" && l != leader {
			newLeader = l
			return true, nil
		}
		gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		sw, err := c.Etcd.Get(gctx, store.ClusterKey(c.Name, "switchover"))
		cancel()
		if err == nil && l == leader && len(sw.Kvs) == 0 && time.Since(start) > 2*time.Second {
			return false, fmt.Errorf("the leader %s refused the switchover (no streaming standby in the primary region to hand over to): add one, or restart the leader yourself (writes stop meanwhile)", leader)
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.out(), "  new leader %s (%.1fs); waiting for %s to stream as a replica\n", newLeader, time.Since(start).Seconds(), leader)
	return waitUntil(ctx, leader+" to stream as a replica", func() (bool, error) {
		t, err := c.Topology(ctx)
		if err != nil {
			return false, nil
		}
		m, ok := t.Members[leader]
		if !ok {
			return false, nil
		}
		st, err := c.MemberStatus(ctx, m)
		return err == nil && st.Role == model.RoleReplica && st.Streaming, nil
	})
}
