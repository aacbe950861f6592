package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// TestEtcdCluster runs petrel on a real three-member etcd cluster
// (Debian's etcd-server, separate processes on loopback) as production
// runs one: TLS with client certificates between everyone, and etcd's
// authentication, the nodes and the CLI configured by a host's TOML file
// (--config: status, proxy and edge). While a client writes all along:
//
//   - kill -9 of the etcd leader member: no petrel failover (the same
//     leader, holding the same leader key), no acknowledged write lost;
//   - two of three members down (no quorum): no election, and the failsafe
//     keeps the leader serving writes;
//   - every member restarted in turn: nothing either.
func TestEtcdCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	if _, err := exec.LookPath("etcd"); err != nil {
		t.Fatal("no `etcd` command: install Debian's etcd-server (scripts/install-deps.sh does)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var ec *testcluster.EtcdCluster
	c := newClusterWith(t, ctx, func(o *testcluster.Options) {
		var err error
		ec, err = testcluster.StartEtcdCluster(ctx, testcluster.EtcdOptions{Dir: filepath.Join(o.Dir, "etcd-cluster"), Members: 3, Auth: true})
		if err != nil {
			t.Fatal(err)
		}
		o.EtcdCluster = ec
	})
	t.Cleanup(ec.Close) // after c.Close (cleanups run last-in first-out)

	leader := startNodes(ctx, t, c, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"}, [2]string{"scl3", "scl"})
	if err := c.Exec(ctx, leader, "CREATE TABLE acked (id bigint PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	waitSync(ctx, t, c, leader)
	st0, err := c.Status(leader)
	if err != nil {
		t.Fatal(err)
	}

	// The CLI on a host: `petrel status --config <the node's TOML>`.
	cfg, err := c.ConfigFile(leader)
	if err != nil {
		t.Fatal(err)
	}
	status := func() []model.Status {
		t.Helper()
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		defer scancel()
		out, err := exec.CommandContext(sctx, c.Opts.Binary, "status", "--config", cfg, "--json").CombinedOutput()
		if err != nil {
			t.Fatalf("petrel status --config: %v: %s", err, out)
		}
		var sts []model.Status
		if err := json.Unmarshal(out, &sts); err != nil {
			t.Fatalf("petrel status --json: %v: %s", err, out)
		}
		return sts
	}
	if sts := status(); len(sts) != 3 {
		t.Fatalf("petrel status --config lists %d members, want 3: %+v", len(sts), sts)
	} else {
		for _, st := range sts {
			if st.Version == "" {
				t.Fatalf("%s's status names no petrel version", st.ID)
			}
		}
	}

	cli, err := store.Connect(ctx, ec.Conn(), c.Opts.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	leaderKey := func() (string, int64) {
		t.Helper()
		for {
			gctx, gcancel := context.WithTimeout(ctx, 3*time.Second)
			resp, err := cli.Get(gctx, store.KeysFor(c.Opts.Name).Leader())
			gcancel()
			if err == nil && len(resp.Kvs) == 1 {
				return string(resp.Kvs[0].Value), resp.Kvs[0].CreateRevision
			}
			if ctx.Err() != nil {
				t.Fatalf("reading the leader key: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	holder, created := leaderKey()
	if holder != leader {
		t.Fatalf("the leader key names %s; %s leads", holder, leader)
	}
	// unchanged checks that the same member leads on the same timeline
	// and the same leader key (never re-acquired), and no other is primary.
	unchanged := func(phase string) {
		t.Helper()
		if h, cr := leaderKey(); h != leader || cr != created {
			t.Fatalf("%s: leader key %s (created at %d), was %s (created at %d): a failover", phase, h, cr, leader, created)
		}
		for _, id := range c.IDs() {
			st, err := c.Status(id)
			if err != nil {
				t.Fatalf("%s: %s: %v", phase, id, err)
			}
			if id == leader && (st.Role != model.RolePrimary || st.Timeline != st0.Timeline) {
				t.Fatalf("%s: %s is %s on timeline %d, was primary on %d", phase, id, st.Role, st.Timeline, st0.Timeline)
			}
			if id != leader && st.Role == model.RolePrimary {
				t.Fatalf("%s: %s is primary too", phase, id)
			}
		}
	}
	// during runs fn with a writer going, then checks that writes went on
	// and nothing acknowledged is missing on the leader.
	during := func(phase string, fn func()) {
		t.Helper()
		w, l := writeThrough(ctx, t, c, fn)
		if l != leader {
			t.Fatalf("%s: %s leads, was %s", phase, l, leader)
		}
		unchanged(phase)
		t.Logf("%s: %d writes acknowledged, none lost, %s still leads", phase, w.count(), leader)
	}
	noneLongerThan := func(d time.Duration) {
		// Let any election that the fault would cause happen.
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}

	during("kill -9 of the etcd leader", func() {
		i, err := ec.Leader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ec.Kill(i)
		if err := testcluster.WaitFor(ctx, "a new etcd leader", func() bool {
			j, err := ec.Leader(ctx)
			return err == nil && j != i
		}); err != nil {
			t.Fatal(err)
		}
		noneLongerThan(3 * leaseTTL)
		unchanged("etcd leader killed")
		if err := ec.Restart(i); err != nil {
			t.Fatal(err)
		}
		if err := ec.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
	})

	during("two of three etcd members down", func() {
		ec.Kill(0)
		ec.Kill(1)
		// Four lease TTLs without a quorum: the leader's renewals fail, the
		// failsafe (every member still answers) keeps it writable.
		deadline := time.Now().Add(4 * leaseTTL)
		for time.Now().Before(deadline) {
			if err := c.Exec(ctx, leader, "INSERT INTO acked(id) VALUES ($1)", -time.Now().UnixNano()); err != nil {
				t.Fatalf("a write without an etcd quorum: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		st, err := c.Status(leader)
		if err != nil || st.Role != model.RolePrimary || !strings.Contains(strings.Join(st.Problems, ";"), "failsafe") {
			t.Fatalf("leader without an etcd quorum: %+v %v", st, err)
		}
		for _, i := range []int{0, 1} {
			if err := ec.Restart(i); err != nil {
				t.Fatal(err)
			}
		}
		if err := ec.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
	})

	during("every etcd member restarted in turn", func() {
		for i := range ec.Members() {
			ec.Stop(i)
			if err := ec.Restart(i); err != nil {
				t.Fatal(err)
			}
			if err := ec.WaitHealthy(ctx); err != nil {
				t.Fatal(err)
			}
		}
		noneLongerThan(leaseTTL)
	})
	if sts := status(); len(sts) != 3 {
		t.Fatalf("petrel status --config after the etcd faults lists %d members, want 3", len(sts))
	}
	// After the faults, so that their phases run as without these clients.
	checkHostCommands(ctx, t, c, cfg, leader, cli)
}

// leaseTTL is the nodes' leader lease (testcluster keeps the default).
var leaseTTL = config.Defaults().LeaseTTL
