package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pg"
	"github.com/petrel-db/petrel/internal/pgsettings"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func newConfigCmd() *cobra.Command {
	var (
		cf      clusterFlags
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Show or change cluster-wide PostgreSQL settings",
		Long: `Cluster-wide PostgreSQL settings, stored in etcd (/petrel/<cluster>/config) and
applied by every member (petrel-user.conf, then a reload). Settings that need
a restart are applied with a rolling restart that keeps writes available:
replicas one at a time (each back streaming before the next), then a planned
switchover, then the old leader.`,
	}
	show := &cobra.Command{
		Use: "show", Short: "Show the stored settings and each member's pending restarts", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 15*time.Second)
			defer cancel()
			c, err := openCluster(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			settings, rev, err := c.loadSettings(ctx)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if len(settings) == 0 {
				fmt.Fprintln(out, "no cluster-wide settings (set some with `petrel config set name=value`)")
			} else {
				tw := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
				fmt.Fprintln(tw, "NAME\tVALUE")
				for _, k := range sortedKeys(settings) {
					fmt.Fprintf(tw, "%s\t%s\n", k, settings[k])
				}
				tw.Flush()
			}
			t, err := c.topology(ctx)
			if err != nil {
				return err
			}
			for _, id := range t.ids() {
				st, err := memberStatus(ctx, t.members[id])
				switch {
				case err != nil:
					fmt.Fprintf(out, "%s: unreachable (%v)\n", id, err)
				case st.PendingRestart:
					fmt.Fprintf(out, "%s: pending restart (run `petrel config set` to finish the rolling restart)\n", id)
				case rev > 0 && st.ConfigRev < rev:
					fmt.Fprintf(out, "%s: not applied yet\n", id)
				}
			}
			return nil
		},
	}
	set := &cobra.Command{
		Use:   "set [name=value...]",
		Short: "Validate, store and apply settings (no arguments: finish an interrupted rolling restart)",
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, err := openCluster(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			rev, err := c.setSettings(ctx, out, args)
			if err != nil {
				return err
			}
			return c.rollOut(ctx, out, rev)
		},
	}
	unset := &cobra.Command{
		Use: "unset name...", Short: "Remove settings (back to petrel's defaults), then apply", Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			c, err := openCluster(ctx, cf)
			if err != nil {
				return err
			}
			defer c.Close()
			settings, rev, err := c.loadSettings(ctx)
			if err != nil {
				return err
			}
			for _, k := range args {
				if _, ok := settings[strings.ToLower(k)]; !ok {
					return fmt.Errorf("%s is not set (see `petrel config show`)", k)
				}
				delete(settings, strings.ToLower(k))
			}
			newRev, err := c.storeSettings(ctx, settings, rev)
			if err != nil {
				return err
			}
			return c.rollOut(ctx, cmd.OutOrStdout(), newRev)
		},
	}
	cf.bind(cmd.PersistentFlags())
	cmd.PersistentFlags().DurationVar(&timeout, "timeout", 15*time.Minute, "give up after this long (re-running resumes)")
	cmd.AddCommand(show, set, unset)
	return cmd
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// loadSettings reads /config and its mod revision (0 when absent).
func (c *clusterConn) loadSettings(ctx context.Context) (map[string]string, int64, error) {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.etcd.Get(gctx, store.ClusterKey(c.name, store.KeyConfig))
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

// storeSettings writes m if /config is still at rev; returns the new rev.
func (c *clusterConn) storeSettings(ctx context.Context, m map[string]string, rev int64) (int64, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return 0, err
	}
	k := store.ClusterKey(c.name, store.KeyConfig)
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := c.etcd.Txn(gctx).If(clientv3.Compare(clientv3.ModRevision(k), "=", rev)).Then(clientv3.OpPut(k, string(b))).Commit()
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
	recordEvent(ctx, io.Discard, c.etcd, c.name, model.Event{Kind: model.EventConfig, Node: c.user, Reason: "cluster settings now: " + strings.Join(kv, ", ")})
	return resp.Header.Revision, nil
}

// setSettings validates args against the leader's pg_settings and stores
// them; nothing is stored when any is refused. No args: the current rev.
func (c *clusterConn) setSettings(ctx context.Context, out io.Writer, args []string) (int64, error) {
	settings, rev, err := c.loadSettings(ctx)
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
		conn, err := c.connectLeader(ctx, "postgres")
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
		fmt.Fprintln(out, "settings unchanged")
		return rev, nil
	}
	newRev, err := c.storeSettings(ctx, settings, rev)
	if err != nil {
		return 0, err
	}
	fmt.Fprintf(out, "stored %d setting(s)\n", len(want))
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

var statusHTTP = &http.Client{Timeout: 2 * time.Second}

func memberStatus(ctx context.Context, m model.Member) (model.Status, error) {
	var st model.Status
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, m.APIURL+"/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := statusHTTP.Do(req)
	if err != nil {
		return st, fmt.Errorf("asking %s for its status: %w", m.ID, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		return st, fmt.Errorf("decoding %s's status: %w", m.ID, err)
	}
	return st, nil
}

// snapshot is every live member's status.
func (c *clusterConn) statuses(ctx context.Context) (topology, map[string]model.Status, error) {
	t, err := c.topology(ctx)
	if err != nil {
		return t, nil, err
	}
	sts := map[string]model.Status{}
	for id, m := range t.members {
		if st, err := memberStatus(ctx, m); err == nil {
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

// rollOut waits for every member to apply rev, then restarts those with
// a pending restart: replicas one at a time, then the leader by a
// switchover (and a restart of the old leader if it still needs one).
func (c *clusterConn) rollOut(ctx context.Context, out io.Writer, rev int64) error {
	err := waitUntil(ctx, "every member to apply the settings", func() (bool, error) {
		t, sts, err := c.statuses(ctx)
		if err != nil {
			return false, err
		}
		for id := range t.members {
			if st, ok := sts[id]; !ok || st.ConfigRev < rev {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	t, sts, err := c.statuses(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "applied on %d member(s)\n", len(t.members))
	restarted := map[string]bool{}
	// A standby must run these at least as high as its primary, so a
	// lowered one rolls the other way: the leader first, in place (writes
	// pause for its restart; its WAL then carries the lower value), then
	// the replicas. Raising, the usual order (replicas, switchover) works.
	if st := sts[t.leader]; st.PendingRestart {
		lowered, err := c.lowered(ctx)
		if err != nil {
			return err
		}
		if len(lowered) > 0 {
			fmt.Fprintf(out, "lowering %s: restarting the leader %s in place first (writes pause while it restarts)\n", strings.Join(lowered, ", "), t.leader)
			if err := c.restartInPlace(ctx, out, t.leader, rev); err != nil {
				return err
			}
			restarted[t.leader] = true
			if t, sts, err = c.statuses(ctx); err != nil {
				return err
			}
		}
	}
	for round := 0; ; round++ {
		var replicas []string
		leaderPending := false
		for _, id := range t.ids() {
			st := sts[id]
			if !st.PendingRestart {
				continue
			}
			if id == t.leader {
				leaderPending = true
			} else {
				replicas = append(replicas, id)
			}
		}
		if len(replicas) == 0 && !leaderPending {
			if len(restarted) == 0 {
				fmt.Fprintln(out, "no restart needed")
			} else {
				fmt.Fprintln(out, "rolling restart complete")
			}
			return nil
		}
		if round > 2*len(t.members)+2 {
			return errors.New("the rolling restart is not converging; see `petrel status` and the members' logs, then run `petrel config set` again")
		}
		for _, id := range replicas {
			if err := c.restartReplica(ctx, out, id, rev); err != nil {
				return err
			}
			restarted[id] = true
		}
		if leaderPending && len(replicas) == 0 {
			if err := c.switchoverForRestart(ctx, out, t.leader); err != nil {
				return err
			}
			restarted[t.leader] = true
		}
		if t, sts, err = c.statuses(ctx); err != nil {
			return err
		}
	}
}

// restartReplica asks replica id to restart and waits until it streams
// again with nothing pending.
func (c *clusterConn) restartReplica(ctx context.Context, out io.Writer, id string, rev int64) error {
	start := time.Now()
	fmt.Fprintf(out, "restarting replica %s...\n", id)
	err := c.restartMember(ctx, id, store.RestartRequest{RequestedAt: time.Now().UTC(), ConfigRev: rev},
		" to restart and stream again", func(st model.Status) bool {
			// Primary: it became the leader meanwhile; the next round handles it.
			return st.Role == model.RolePrimary || st.Role == model.RoleReplica && st.Streaming && !st.PendingRestart
		})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  %s is back and streaming (%.1fs)\n", id, time.Since(start).Seconds())
	return nil
}

// restartMember writes a restart request for id and waits until the agent
// took it (the key is gone) and id's /status satisfies done.
func (c *clusterConn) restartMember(ctx context.Context, id string, req store.RestartRequest, what string, done func(model.Status) bool) error {
	b, _ := json.Marshal(req)
	k := store.ClusterKey(c.name, store.KeyRestart, id)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err := c.etcd.Put(pctx, k, string(b))
	cancel()
	if err != nil {
		return fmt.Errorf("asking %s to restart: %w", id, err)
	}
	return waitUntil(ctx, id+what, func() (bool, error) {
		gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		resp, err := c.etcd.Get(gctx, k)
		cancel()
		if err != nil || len(resp.Kvs) > 0 {
			return false, nil
		}
		t, err := c.topology(ctx)
		if err != nil {
			return false, nil
		}
		m, ok := t.members[id]
		if !ok {
			return false, nil
		}
		st, err := memberStatus(ctx, m)
		return err == nil && done(st), nil
	})
}

// standbyMinimums are the settings a hot standby must run at least as
// high as its primary (PostgreSQL pauses recovery otherwise).
var standbyMinimums = []string{"max_connections", "max_worker_processes", "max_wal_senders", "max_prepared_transactions", "max_locks_per_transaction"}

// lowered lists the standbyMinimums whose stored value is below the
// value the leader runs now.
func (c *clusterConn) lowered(ctx context.Context) ([]string, error) {
	settings, _, err := c.loadSettings(ctx)
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
	conn, err := c.connectLeader(ctx, "postgres")
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
func (c *clusterConn) restartInPlace(ctx context.Context, out io.Writer, leader string, rev int64) error {
	start := time.Now()
	err := c.restartMember(ctx, leader, store.RestartRequest{RequestedAt: time.Now().UTC(), ConfigRev: rev, InPlace: true},
		" to restart in place", func(st model.Status) bool { return st.Role == model.RolePrimary && !st.PendingRestart })
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  %s restarted in place (%.1fs)\n", leader, time.Since(start).Seconds())
	// A replica restarted before it replayed the leader's record of the
	// lower value would refuse to start ("insufficient parameter
	// settings"): wait until every live replica has replayed past the
	// leader's position after its restart. The position is asked of the
	// restarted server itself: the leader's /status can still carry what
	// its agent observed before the restart, a position from before the
	// record, and a replica restarted on it refuses to start.
	var target uint64
	if err := waitUntil(ctx, leader+"'s position", func() (bool, error) {
		conn, err := c.connectLeader(ctx, "postgres")
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
		t, sts, err := c.statuses(ctx)
		if err != nil {
			return false, nil
		}
		for id := range t.members {
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
func (c *clusterConn) switchoverForRestart(ctx context.Context, out io.Writer, leader string) error {
	start := time.Now()
	fmt.Fprintf(out, "switching over from leader %s so it can restart...\n", leader)
	if err := store.RequestSwitchover(ctx, c.etcd, c.name, model.Switchover{From: leader, RequestedAt: time.Now().UTC()}); err != nil {
		return err
	}
	var newLeader string
	err := waitUntil(ctx, "a new leader", func() (bool, error) {
		l, err := currentLeader(ctx, c.etcd, c.name)
		if err != nil {
			return false, nil
		}
		if l != "" && l != leader {
			newLeader = l
			return true, nil
		}
		gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		sw, err := c.etcd.Get(gctx, store.ClusterKey(c.name, "switchover"))
		cancel()
		if err == nil && l == leader && len(sw.Kvs) == 0 && time.Since(start) > 2*time.Second {
			return false, fmt.Errorf("the leader %s refused the switchover (no streaming standby in the primary region to hand over to): add one, or restart the leader yourself (writes stop meanwhile)", leader)
		}
		return false, nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "  new leader %s (%.1fs); waiting for %s to stream as a replica\n", newLeader, time.Since(start).Seconds(), leader)
	return waitUntil(ctx, leader+" to stream as a replica", func() (bool, error) {
		t, err := c.topology(ctx)
		if err != nil {
			return false, nil
		}
		m, ok := t.members[leader]
		if !ok {
			return false, nil
		}
		st, err := memberStatus(ctx, m)
		return err == nil && st.Role == model.RoleReplica && st.Streaming, nil
	})
}
