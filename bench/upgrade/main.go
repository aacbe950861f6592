// Command upgrade measures a rolling upgrade of petrel itself on a
// 3-node cluster (testcluster: real processes, Postgres and etcd) while a
// client inserts every 50 ms through a multi-host connection string asking
// for a writable server: each replica's agent is stopped and started from
// the new binary in turn (agents of both versions run side by side, the
// store's records keep the fields the other does not know), then a planned
// switchover, then the old leader. It prints the longest write pause of
// the whole upgrade next to a plain switchover's, the versions `status`
// showed side by side, and the acknowledged inserts lost (must be 0).
//
// Usage: go run ./bench/upgrade [-from 0.1.0] [-to 0.1.1]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// client inserts increasing ids and remembers when each was acknowledged.
type client struct {
	mu   sync.Mutex
	acks []time.Time
	ids  []int64
	next int64
}

func (c *client) run(ctx context.Context, dsn string) {
	var conn *pgx.Conn
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for ctx.Err() == nil {
		<-t.C
		if conn == nil {
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			cn, err := pgx.Connect(cctx, dsn)
			cancel()
			if err != nil {
				continue
			}
			conn = cn
		}
		c.mu.Lock()
		c.next++
		id := c.next
		c.mu.Unlock()
		ictx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := conn.Exec(ictx, "INSERT INTO bench(id) VALUES ($1)", id)
		cancel()
		if err != nil {
			conn.Close(context.Background())
			conn = nil
			continue
		}
		c.mu.Lock()
		c.acks, c.ids = append(c.acks, time.Now()), append(c.ids, id)
		c.mu.Unlock()
	}
	if conn != nil {
		conn.Close(context.Background())
	}
}

func (c *client) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.acks)
}

// longestGap is the longest time between two acknowledgements within
// [from, to].
func (c *client) longestGap(from, to time.Time) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var gap time.Duration
	prev := time.Time{}
	for _, a := range c.acks {
		if a.Before(from) {
			prev = a
			continue
		}
		if !prev.IsZero() && a.Sub(prev) > gap {
			gap = a.Sub(prev)
		}
		prev = a
		if a.After(to) {
			break
		}
	}
	return gap
}

func main() {
	from := flag.String("from", "0.1.0", "version of the binary the cluster starts with")
	to := flag.String("to", "0.1.1", "version it is upgraded to")
	keep := flag.Bool("keep", false, "keep the cluster directory")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(*from, *to, *keep); err != nil {
		log.Fatal(err)
	}
}

func run(fromV, toV string, keep bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "petrel-bench-upgrade")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	wd, _ := os.Getwd()
	oldBin, err := testcluster.BuildVersion(ctx, wd, filepath.Join(dir, "old"), fromV)
	if err != nil {
		return err
	}
	newBin, err := testcluster.BuildVersion(ctx, wd, filepath.Join(dir, "new"), toV)
	if err != nil {
		return err
	}
	c, err := testcluster.Start(ctx, testcluster.Options{Dir: filepath.Join(dir, "cluster"), Binary: oldBin})
	if err != nil {
		return err
	}
	defer c.Close()
	leader, err := c.StartNodes(ctx, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"}, [2]string{"scl3", "scl"})
	if err != nil {
		return err
	}
	if err := c.Exec(ctx, leader, "CREATE TABLE bench (id bigint PRIMARY KEY)"); err != nil {
		return err
	}
	healthy := func() error {
		return testcluster.WaitFor(ctx, "a leader with a synchronous standby and streaming replicas", func() bool {
			l, err := c.WaitLeader(ctx, "")
			if err != nil {
				return false
			}
			if st, err := c.Status(l); err != nil || st.SyncState != "sync" {
				return false
			}
			for _, id := range c.IDs() {
				if s, err := c.Status(id); id != l && (err != nil || s.Role != model.RoleReplica || !s.Streaming) {
					return false
				}
			}
			leader = l
			return true
		})
	}
	if err := healthy(); err != nil {
		return err
	}
	cl := &client{}
	cctx, stopClient := context.WithCancel(ctx)
	defer stopClient()
	done := make(chan struct{})
	go func() { cl.run(cctx, c.WriterDSN()); close(done) }()
	if err := testcluster.WaitFor(ctx, "writes", func() bool { return cl.count() > 10 }); err != nil {
		return err
	}
	versions := func() string {
		var vs []string
		ids := c.IDs()
		slices.Sort(ids)
		for _, id := range ids {
			st, _ := c.Status(id)
			vs = append(vs, id+"="+st.Version)
		}
		return strings.Join(vs, " ")
	}
	restartWith := func(id, bin string) error {
		if err := c.Stop(id); err != nil {
			return err
		}
		c.Node(id).Binary = bin
		if err := c.StartNode(id); err != nil {
			return err
		}
		return healthy()
	}
	switchover := func() error {
		out, err := exec.CommandContext(ctx, newBin, append([]string{"failover"}, c.CLIFlags()...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("petrel failover: %w: %s", err, out)
		}
		return healthy()
	}

	start := time.Now()
	old := leader
	var mixed string
	for _, id := range c.IDs() {
		if id == old {
			continue
		}
		sync := false
		if st, err := c.Status(id); err == nil {
			sync = st.Sync
		}
		t0 := time.Now()
		if err := restartWith(id, newBin); err != nil {
			return err
		}
		mixed = versions()
		log.Printf("replica %s (synchronous: %v) upgraded, longest write pause %.2fs: %s", id, sync, cl.longestGap(t0, time.Now()).Seconds(), mixed)
	}
	t0 := time.Now()
	if err := switchover(); err != nil {
		return err
	}
	log.Printf("switchover %s -> %s, longest write pause %.2fs", old, leader, cl.longestGap(t0, time.Now()).Seconds())
	t0 = time.Now()
	if err := restartWith(old, newBin); err != nil {
		return err
	}
	end := time.Now()
	final := versions()
	log.Printf("old leader %s upgraded, longest write pause %.2fs: %s", old, cl.longestGap(t0, end).Seconds(), final)
	upgradeGap := cl.longestGap(start, end)

	// A plain switchover, for comparison.
	time.Sleep(2 * time.Second)
	s0 := time.Now()
	if err := switchover(); err != nil {
		return err
	}
	plainGap := cl.longestGap(s0, time.Now())
	stopClient()
	<-done

	got, err := c.QueryInts(ctx, leader, "SELECT id FROM bench")
	if err != nil {
		return err
	}
	have := map[int64]bool{}
	for _, x := range got {
		have[x] = true
	}
	lost := 0
	cl.mu.Lock()
	acked := slices.Clone(cl.ids)
	cl.mu.Unlock()
	for _, x := range acked {
		if !have[x] {
			lost++
		}
	}
	for _, id := range c.IDs() {
		if st, err := c.Status(id); err != nil || !strings.HasPrefix(st.Version, toV) {
			return fmt.Errorf("%s runs %q after the upgrade, want %s", id, st.Version, toV)
		}
	}
	fmt.Printf("rolling upgrade %s -> %s of 3 nodes (replicas, switchover, old leader): longest write pause %.2fs; a plain switchover's %.2fs; side by side: %s; acknowledged %d, lost %d\n",
		fromV, toV, upgradeGap.Seconds(), plainGap.Seconds(), mixed, len(acked), lost)
	if lost > 0 {
		return fmt.Errorf("%d acknowledged inserts lost", lost)
	}
	return nil
}
