package sim

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

var (
	flagSeeds = flag.Int("sim.seeds", 1500, "randomized runs of TestRandomized")
	flagSeed  = flag.Int64("sim.seed", -1, "replay this one seed of TestRandomized, with its full log")
	flagFirst = flag.Uint64("sim.first", 0, "first seed of TestRandomized")
	flagKnown = flag.Bool("sim.known", false, "run only the seeds of knownBugs (they fail until the engine is fixed)")
)

// knownBugs are seeds that violate safety because of bugs found by this
// simulation and reported, not yet fixed. They are left out of the
// default run so that it guards against new ones; -sim.known runs exactly
// these. Remove a seed once its bug is fixed.
//
// Fixed, their seeds back in the default run: B1 a second initdb by the
// member that once initialized the cluster (287, 491, 1315, 1326, 1483:
// the info key now records a finished bootstrap); B2 the sync record
// naming standbys while the leader acknowledged alone (486, 637, 1125,
// 1150, 1178, 1466: the record empties first and fills last); B3 a node
// deciding on a cache without its own last write (1108, 1394, 3156: such a
// view counts as the store unreachable); B4 a peer whose Postgres does not
// answer counted as heard at position 0 (1664).
var knownBugs = map[uint64]string{}

// randomRun builds a cluster from seed and drives it through a random
// fault schedule: after bootstrapping, 30 s of faults and writes, then
// every fault is undone and it runs 30 s more. It returns the cluster and
// the schedule, one line per event, so that a failure can be replayed.
func randomRun(seed uint64, keepLog bool) (*Cluster, []string) {
	r := rand.New(rand.NewPCG(seed, 0xfa17))
	cfg := Config{Seed: seed}
	for i := range 2 + r.IntN(3) {
		cfg.Nodes = append(cfg.Nodes, NodeSpec{ID: fmt.Sprintf("scl%d", i+1), Region: "scl"})
	}
	for i := range r.IntN(3) {
		cfg.Nodes = append(cfg.Nodes, NodeSpec{ID: fmt.Sprintf("ord%d", i+1), Region: "ord"})
	}
	switch r.IntN(5) {
	case 0:
		cfg.SyncMode = "strict"
	case 1:
		cfg.SyncMode = "off"
	}
	c := New(cfg)
	c.quietLog = !keepLog
	var sched []string
	var nodes []string
	for _, n := range cfg.Nodes {
		nodes = append(nodes, n.ID+":"+n.Region)
	}
	sched = append(sched, fmt.Sprintf("cluster %s mode=%s seed=%d", strings.Join(nodes, " "), c.params.SyncMode, seed))
	c.Run(3 * time.Second)

	ids := c.Nodes()
	pick := func() string { return ids[r.IntN(len(ids))] }
	for range 300 {
		if r.IntN(100) < 6 {
			id := pick()
			var ev string
			switch r.IntN(16) {
			case 0:
				ev = "kill " + id
				_ = c.Kill(id)
			case 1, 2:
				ev = "restart " + id
				if c.Restart(id) != nil {
					ev = ""
				}
			case 3:
				ev = "stop " + id
				if c.Stop(id) != nil {
					ev = ""
				}
			case 4:
				ev = "pause " + id
				_ = c.Pause(id, true)
			case 5:
				ev = "resume " + id
				_ = c.Pause(id, false)
			case 6:
				ev = "hang " + id
				_ = c.Hang(id, true)
			case 7:
				ev = "unhang " + id
				_ = c.Hang(id, false)
			case 8:
				ev = "partition " + id + " store"
				_ = c.Partition(id, storeEndpoint)
			case 9:
				other := pick()
				ev = "partition " + id + " " + other
				_ = c.Partition(id, other)
			case 10:
				ev = "partition " + id
				_ = c.Partition(id)
			case 11, 12:
				ev = "heal"
				c.Heal()
			case 13:
				if c.store.down {
					ev = "store up"
					c.StoreDown(false)
				} else {
					ev = "store down"
					c.StoreDown(true)
				}
			case 14:
				switch r.IntN(3) {
				case 0:
					ev = "disk-full " + id
					_ = c.DiskFull(id, true)
				case 1:
					ev = "corrupt " + id
					_ = c.Corrupt(id)
				default:
					ev = "wal-removed " + id
					_ = c.RemoveWAL(id)
				}
			case 15:
				to := ""
				if r.IntN(2) == 0 {
					to = pick()
				}
				ev = "switchover"
				if to != "" {
					ev += " to=" + to
				}
				if c.Switchover(to, false) != nil {
					ev = ""
				}
			}
			if ev != "" {
				sched = append(sched, fmt.Sprintf("%6.1fs %s", c.Now().Seconds(), ev))
			}
		}
		if r.IntN(2) == 0 {
			c.Write(1 + r.IntN(3))
		}
		c.Tick()
	}
	// Undo every fault, then let it settle.
	sched = append(sched, fmt.Sprintf("%6.1fs heal all", c.Now().Seconds()))
	c.Heal()
	c.StoreDown(false)
	for _, id := range ids {
		_ = c.Pause(id, false)
		_ = c.Hang(id, false)
		_ = c.DiskFull(id, false)
		_ = c.Restart(id)
	}
	for range 300 {
		if r.IntN(2) == 0 {
			c.Write(1)
		}
		c.Tick()
	}
	return c, sched
}

// TestRandomized checks the safety invariants (Cluster.check) at every
// instant of random fault schedules over many seeds. A failure prints the
// seed and its schedule; replay it, with the full log, with
//
//	go test ./internal/sim -run TestRandomized -sim.seed=N -v
func TestRandomized(t *testing.T) {
	if *flagSeed >= 0 {
		c, sched := randomRun(uint64(*flagSeed), true)
		t.Logf("schedule:\n%s\nlog:\n%s\nstatus:\n%s", strings.Join(sched, "\n"), c.Flush(), c.Status())
		if v := c.Violations(); len(v) > 0 {
			t.Fatalf("seed %d: safety violated:\n%s", *flagSeed, strings.Join(v, "\n"))
		}
		return
	}
	var seeds []uint64
	for i := range *flagSeeds {
		if seed := *flagFirst + uint64(i); *flagKnown == (knownBugs[seed] != "") {
			seeds = append(seeds, seed)
		}
	}
	start := time.Now() // only to report the run's cost, never asserted
	failed, leaderless := 0, 0
	for _, seed := range seeds {
		c, sched := randomRun(seed, false)
		if v := c.Violations(); len(v) > 0 {
			failed++
			if failed <= 3 {
				t.Errorf("seed %d: safety violated:\n%s\nschedule:\n%s\nreplay: go test ./internal/sim -run TestRandomized -sim.seed=%d -v",
					seed, strings.Join(v, "\n"), strings.Join(sched, "\n"), seed)
			}
		}
		if c.Leader() == "" {
			leaderless++
		}
	}
	t.Logf("%d seeds in %v: %d violated safety; %d ended without a leader 30 s after every fault was undone",
		len(seeds), time.Since(start).Round(time.Millisecond), failed, leaderless)
}
