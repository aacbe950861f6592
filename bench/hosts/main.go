// Command hosts measures silent machine death on separate hosts
// (internal/hostcluster: network namespaces, an external etcd, nodes
// started from TOML files): the leader's link is taken down (no RST, no
// FIN, nothing) while a client writes, and the window is the time from the
// link going down to the first write a member accepts. Each run then
// brings the link back and waits until the old leader streams again as a
// replica (it rejoins by itself). Prints min/median/max over -reps runs
// next to the lease TTL + 1.5 s target, and the acknowledged writes lost
// (must be 0). Needs root.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/hostcluster"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/testcluster"
)

func main() {
	reps := flag.Int("reps", 5, "silent deaths to measure")
	keep := flag.Bool("keep", false, "keep the cluster's directory (logs)")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(*reps, *keep); err != nil {
		log.Fatal(err)
	}
}

func run(reps int, keep bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "petrel-bench-hosts")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	} else {
		log.Printf("directory: %s", dir)
	}
	wd, _ := os.Getwd()
	bin, err := testcluster.Build(ctx, wd, filepath.Join(dir, "bin"))
	if err != nil {
		return err
	}
	c, err := hostcluster.Start(ctx, hostcluster.Options{Dir: filepath.Join(dir, "cluster"), Binary: bin})
	if err != nil {
		return err
	}
	defer c.Close()
	role := func(id, want string) error {
		return testcluster.WaitFor(ctx, id+" "+want, func() bool {
			s, ok := c.Status(ctx)[id]
			return ok && s.Role == want && (want != model.RoleReplica || s.Streaming)
		})
	}
	ids := []string{"scl1", "scl2", "scl3"}
	for i, id := range ids {
		if _, err := c.AddNode(id, "scl", 11+i); err != nil {
			return err
		}
		if i == 0 {
			if err := role(id, model.RolePrimary); err != nil {
				return err
			}
		}
	}
	for _, id := range ids[1:] {
		if err := role(id, model.RoleReplica); err != nil {
			return err
		}
	}
	if out, err := c.SQL(ctx, "scl1", "CREATE TABLE w (id bigint PRIMARY KEY)", 5*time.Second); err != nil {
		return fmt.Errorf("creating the table: %v: %s", err, out)
	}
	var windows []time.Duration
	lost, acked := 0, 0
	next := int64(0)
	write := func(id string, timeout time.Duration) bool {
		next++
		_, err := c.SQL(ctx, id, fmt.Sprintf("INSERT INTO w VALUES (%d)", next), timeout)
		return err == nil
	}
	for r := 0; r < reps; r++ {
		leader := ""
		if err := testcluster.WaitFor(ctx, "a leader with a synchronous standby", func() bool {
			sts := c.Status(ctx)
			for _, id := range ids {
				if sts[id].Role == model.RolePrimary && sts[id].SyncState == "sync" {
					leader = id
				}
			}
			return leader != ""
		}); err != nil {
			return err
		}
		var ack []int64
		for range 10 {
			if write(leader, 3*time.Second) {
				ack = append(ack, next)
			}
		}
		others := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return id == leader })
		down := time.Now()
		if err := c.Net.LinkDown(leader); err != nil {
			return err
		}
		// The member that accepts a write is the new leader (a replica
		// refuses at once: read-only).
		var window time.Duration
		newLeader := ""
		for newLeader == "" && ctx.Err() == nil {
			for _, id := range others {
				if write(id, time.Second) {
					window, newLeader = time.Since(down), id
					ack = append(ack, next)
					break
				}
			}
		}
		if err := c.Net.LinkUp(leader); err != nil {
			return err
		}
		out, err := c.SQL(ctx, newLeader, "SELECT id FROM w", 10*time.Second)
		if err != nil {
			return fmt.Errorf("reading rows: %v: %s", err, out)
		}
		have := map[int64]bool{}
		for _, f := range strings.Fields(out) {
			n, _ := strconv.ParseInt(f, 10, 64)
			have[n] = true
		}
		for _, x := range ack {
			acked++
			if !have[x] {
				lost++
			}
		}
		windows = append(windows, window)
		log.Printf("run %d: %s silent, %s took writes after %.2fs", r+1, leader, newLeader, window.Seconds())
		if err := role(leader, model.RoleReplica); err != nil {
			return fmt.Errorf("run %d: %s did not rejoin: %w", r+1, leader, err)
		}
	}
	slices.Sort(windows)
	ttl := config.Defaults().LeaseTTL
	fmt.Printf("silent leader death (link down), %d runs: min %.2fs median %.2fs max %.2fs (target: lease TTL %v + 1.5s = %.1fs); acknowledged writes %d, lost %d; the old leader rejoined by itself every time\n",
		len(windows), windows[0].Seconds(), windows[len(windows)/2].Seconds(), windows[len(windows)-1].Seconds(), ttl, (ttl + 1500*time.Millisecond).Seconds(), acked, lost)
	if lost > 0 {
		return fmt.Errorf("%d acknowledged writes lost", lost)
	}
	return nil
}
