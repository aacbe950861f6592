// Command failover measures petrel's write-unavailability window: a client
// inserts one row every 50 ms through a multi-host connection string that
// asks for a writable server (what an app without the proxy uses), while
// the leader is killed (kill -9 of its agent and postmaster) or switched
// over. The window is from the last acknowledged insert before the fault
// to the first acknowledged insert after it. At the end every acknowledged
// insert must be on the leader.
//
// Usage: go run ./bench/failover [-reps 5] [-interval 50ms]
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/testcluster"
)

type ack struct {
	id int64
	at time.Time
}

type client struct {
	mu    sync.Mutex
	acks  []ack
	next  int64
	every time.Duration
}

func (c *client) run(ctx context.Context, dsn string) {
	var conn *pgx.Conn
	t := time.NewTicker(c.every)
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
		c.acks = append(c.acks, ack{id, time.Now()})
		c.mu.Unlock()
	}
	if conn != nil {
		conn.Close(context.Background())
	}
}

// window returns the gap around t: last ack before, first ack after.
func (c *client) window(t time.Time) (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var before, after time.Time
	for _, a := range c.acks {
		if a.at.Before(t) {
			before = a.at
		} else if after.IsZero() {
			after = a.at
		}
	}
	if before.IsZero() || after.IsZero() {
		return 0, false
	}
	return after.Sub(before), true
}

func (c *client) lastAck() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.acks) == 0 {
		return time.Time{}
	}
	return c.acks[len(c.acks)-1].at
}

func stats(ds []time.Duration) string {
	if len(ds) == 0 {
		return "no samples"
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return fmt.Sprintf("%.2f / %.2f / %.2f", s[0].Seconds(), s[len(s)/2].Seconds(), s[len(s)-1].Seconds())
}

func main() {
	reps := flag.Int("reps", 5, "repetitions of each scenario")
	interval := flag.Duration("interval", 50*time.Millisecond, "client insert interval")
	keep := flag.Bool("keep", false, "keep the cluster directory")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(*reps, *interval, *keep); err != nil {
		log.Fatal(err)
	}
}

func run(reps int, interval time.Duration, keep bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "petrel-bench-failover")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	wd, _ := os.Getwd()
	bin, err := testcluster.Build(ctx, wd, dir)
	if err != nil {
		return err
	}
	c, err := testcluster.Start(ctx, testcluster.Options{Dir: filepath.Join(dir, "cluster"), Binary: bin})
	if err != nil {
		return err
	}
	defer c.Close()
	for _, n := range [][2]string{{"scl1", "scl"}, {"scl2", "scl"}, {"ord1", "ord"}} {
		if _, err := c.AddNode(n[0], n[1]); err != nil {
			return err
		}
	}
	leader, err := c.WaitLeader(ctx, "")
	if err != nil {
		return err
	}
	if err := c.Exec(ctx, leader, "CREATE TABLE bench (id bigint PRIMARY KEY, at timestamptz DEFAULT now())"); err != nil {
		return err
	}
	healthy := func() error {
		return testcluster.WaitFor(ctx, "a healthy cluster", func() bool {
			l, err := c.WaitLeader(ctx, "")
			if err != nil {
				return false
			}
			st, err := c.Status(l)
			if err != nil || st.SyncState != "sync" {
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

	cl := &client{every: interval}
	cctx, stopClient := context.WithCancel(ctx)
	defer stopClient()
	done := make(chan struct{})
	go func() { cl.run(cctx, c.WriterDSN()); close(done) }()

	var crash, switchover []time.Duration
	r := rand.New(rand.NewSource(time.Now().UnixNano()))
	settle := func() error {
		// Wait for writes to flow, then a random phase within the lease
		// renewal cycle so faults do not line up with renewals.
		if err := testcluster.WaitFor(ctx, "writes", func() bool { return time.Since(cl.lastAck()) < 200*time.Millisecond }); err != nil {
			return err
		}
		time.Sleep(time.Second + time.Duration(r.Int63n(int64(time.Second))))
		return nil
	}
	for i := 0; i < reps; i++ {
		if err := settle(); err != nil {
			return err
		}
		old := leader
		t0 := time.Now()
		if err := c.Kill(old); err != nil {
			return err
		}
		if _, err := c.WaitLeader(ctx, old); err != nil {
			return err
		}
		if err := testcluster.WaitFor(ctx, "a write after the crash", func() bool { return cl.lastAck().After(t0) }); err != nil {
			return err
		}
		w, ok := cl.window(t0)
		if ok {
			crash = append(crash, w)
		}
		log.Printf("crash %d: killed %s, window %.2fs", i+1, old, w.Seconds())
		if err := c.StartNode(old); err != nil {
			return err
		}
		if err := healthy(); err != nil {
			return err
		}
	}
	for i := 0; i < reps; i++ {
		if err := settle(); err != nil {
			return err
		}
		old := leader
		t0 := time.Now()
		out, err := exec.CommandContext(ctx, bin, append([]string{"failover"}, c.CLIFlags()...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("petrel failover: %w: %s", err, out)
		}
		if err := testcluster.WaitFor(ctx, "a write after the switchover", func() bool { return cl.lastAck().After(t0) }); err != nil {
			return err
		}
		w, ok := cl.window(t0)
		if ok {
			switchover = append(switchover, w)
		}
		log.Printf("switchover %d: from %s, window %.2fs (%s)", i+1, old, w.Seconds(), strings.TrimSpace(string(out)))
		if err := healthy(); err != nil {
			return err
		}
	}
	stopClient()
	<-done

	// Every acknowledged insert must be on the leader.
	conn, err := pgx.Connect(ctx, c.DSN(leader))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	rows, _ := conn.Query(ctx, "SELECT id FROM bench")
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	have := map[int64]bool{}
	for _, id := range ids {
		have[id] = true
	}
	lost := 0
	for _, a := range cl.acks {
		if !have[a.id] {
			lost++
		}
	}
	fmt.Println()
	fmt.Println("petrel failover benchmark: 3 nodes (scl=2, ord=1), etcd embedded, default settings,")
	fmt.Printf("client inserting every %v through a multi-host DSN (target_session_attrs=read-write, connect_timeout=1)\n\n", interval)
	fmt.Printf("%-34s %-28s %s\n", "scenario", "window min / median / max (s)", "lost acknowledged writes")
	fmt.Printf("%-34s %-28s %d of %d\n", fmt.Sprintf("petrel crash (kill -9), n=%d", len(crash)), stats(crash), lost, len(cl.acks))
	fmt.Printf("%-34s %-28s %s\n", fmt.Sprintf("petrel switchover, n=%d", len(switchover)), stats(switchover), "(same total)")
	fmt.Println()
	fmt.Println("anchors measured on this kind of machine (shared/reference/measured.md, not this run):")
	fmt.Printf("%-34s %-28s %s\n", "Patroni 3.0.2 crash, defaults", "23.2 / 26.9 / 30.9", "0")
	fmt.Printf("%-34s %-28s %s\n", "Patroni crash, ttl 10 loop_wait 2", "10.2 / 10.9 / 12.4", "0")
	fmt.Printf("%-34s %-28s %s\n", "Patroni switchover", "3.2 / 4.3 / 4.4", "0")
	if lost > 0 {
		return fmt.Errorf("%d acknowledged writes lost", lost)
	}
	return nil
}
