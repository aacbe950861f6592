package sim

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"
	"github.com/petrel-db/petrel/internal/engine"
)

// TestScenarios runs testdata/*.txt. Commands:
//
//	cluster id:region ... [primary=r] [mode=on|strict|off] [seed=N] [ttl=3s]
//	stabilize [max=60s]       tick until 5 s pass with nothing logged
//	tick N                    N ticks of 100 ms
//	write [n=1]               commit n transactions on every writable primary
//	kill|restart|stop|pause|resume|hang|unhang|corrupt|disk-full|disk-ok ID
//	partition ID [ID|store ...]  cut ID from those (from everything if none)
//	heal                      restore every link
//	store down|up             stop or restart the store
//	switchover [to=ID] [any-region]
//	lose-wal ID               the node's WAL before its divergence is gone (rewind impossible)
//	wal-removed ID            the WAL the node needs next is gone from its upstreams (re-clone)
//	restart-request ID [in-place] [force]   petrel config set's (or a rolling) restart request
//	pending ID [applied=a,b] [foreign=c]  settings waiting for a restart (foreign: not petrel's)
//	status                    the store's records and every member
//
// Commands that advance time print the log of what happened meanwhile:
// every action an agent executed with its outcome (store requests show
// "ok" or the lost race), role changes, lease expiries, watchdog kills.
// A safety violation fails the test. Run with -rewrite to regenerate the
// expected output after a deliberate change, and review the diff.
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		var c *Cluster
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			if d.Cmd != "cluster" && c == nil {
				d.Fatalf(t, "no cluster yet")
			}
			out, err := runCommand(&c, d)
			if err != nil {
				return "error: " + err.Error() + "\n"
			}
			if c != nil && len(c.Violations()) > 0 {
				d.Fatalf(t, "safety violated:\n%s\nlog:\n%s", strings.Join(c.Violations(), "\n"), out)
			}
			return out
		})
	})
}

func arg(d *datadriven.TestData, key string) (string, bool) {
	for _, a := range d.CmdArgs {
		if a.Key == key {
			return strings.Join(a.Vals, ","), true
		}
	}
	return "", false
}

// ids are the arguments given without a value (node ids, "store").
func ids(d *datadriven.TestData) []string {
	var out []string
	for _, a := range d.CmdArgs {
		if len(a.Vals) == 0 {
			out = append(out, a.Key)
		}
	}
	return out
}

func runCommand(cp **Cluster, d *datadriven.TestData) (string, error) {
	c := *cp
	one := func(f func(string) error) (string, error) {
		for _, id := range ids(d) {
			if err := f(id); err != nil {
				return "", err
			}
		}
		return "ok\n", nil
	}
	switch d.Cmd {
	case "cluster":
		cfg := Config{Seed: 1}
		for _, a := range d.CmdArgs {
			switch {
			case a.Key == "primary":
				cfg.PrimaryRegion = a.Vals[0]
			case a.Key == "mode":
				cfg.SyncMode = a.Vals[0]
			case a.Key == "seed":
				n, err := strconv.ParseUint(a.Vals[0], 10, 64)
				if err != nil {
					return "", err
				}
				cfg.Seed = n
			case a.Key == "ttl":
				ttl, err := time.ParseDuration(a.Vals[0])
				if err != nil {
					return "", err
				}
				cfg.TTL = ttl
			case len(a.Vals) == 0 && strings.Contains(a.Key, ":"):
				id, region, _ := strings.Cut(a.Key, ":")
				cfg.Nodes = append(cfg.Nodes, NodeSpec{ID: id, Region: region})
			default:
				return "", fmt.Errorf("unknown argument %q", a.Key)
			}
		}
		*cp = New(cfg)
		return "ok\n", nil
	case "stabilize":
		maxWait := 60 * time.Second
		if v, ok := arg(d, "max"); ok {
			var err error
			if maxWait, err = time.ParseDuration(v); err != nil {
				return "", err
			}
		}
		quiet := c.Stabilize(5*time.Second, maxWait)
		out := c.Flush()
		if !quiet {
			out += fmt.Sprintf("(still busy after %v)\n", maxWait)
		}
		return out, nil
	case "tick":
		n := 1
		if a := ids(d); len(a) > 0 {
			var err error
			if n, err = strconv.Atoi(a[0]); err != nil {
				return "", err
			}
		}
		for range n {
			c.Tick()
		}
		return c.Flush(), nil
	case "write":
		n := 1
		if v, ok := arg(d, "n"); ok {
			var err error
			if n, err = strconv.Atoi(v); err != nil {
				return "", err
			}
		}
		on := c.Write(n)
		if len(on) == 0 {
			return "no member takes writes\n", nil
		}
		return fmt.Sprintf("%d written on %s\n", n, strings.Join(on, ", ")), nil
	case "kill":
		return one(c.Kill)
	case "restart":
		return one(c.Restart)
	case "stop":
		out, err := one(c.Stop)
		return c.Flush() + out, err
	case "pause":
		return one(func(id string) error { return c.Pause(id, true) })
	case "resume":
		return one(func(id string) error { return c.Pause(id, false) })
	case "hang":
		return one(func(id string) error { return c.Hang(id, true) })
	case "unhang":
		return one(func(id string) error { return c.Hang(id, false) })
	case "corrupt":
		return one(c.Corrupt)
	case "disk-full":
		return one(func(id string) error { return c.DiskFull(id, true) })
	case "disk-ok":
		return one(func(id string) error { return c.DiskFull(id, false) })
	case "partition":
		a := ids(d)
		if len(a) == 0 {
			return "", fmt.Errorf("partition needs a node")
		}
		if err := c.Partition(a[0], a[1:]...); err != nil {
			return "", err
		}
		return "ok\n", nil
	case "heal":
		c.Heal()
		return "ok\n", nil
	case "store":
		a := ids(d)
		if len(a) != 1 || (a[0] != "down" && a[0] != "up") {
			return "", fmt.Errorf("store down|up")
		}
		c.StoreDown(a[0] == "down")
		return "ok\n", nil
	case "switchover":
		to, _ := arg(d, "to")
		_, anyRegion := arg(d, "any-region")
		if err := c.Switchover(to, anyRegion); err != nil {
			return "", err
		}
		return "ok\n", nil
	case "status":
		return c.Status(), nil
	case "lose-wal":
		return one(c.LoseWAL)
	case "wal-removed":
		return one(c.RemoveWAL)
	case "restart-request":
		a := ids(d)
		if len(a) == 0 {
			return "", fmt.Errorf("restart-request needs a node")
		}
		req := engine.RestartRequest{InPlace: slices.Contains(a[1:], "in-place"), Force: slices.Contains(a[1:], "force")}
		if err := c.RequestRestart(a[0], req); err != nil {
			return "", err
		}
		return "ok\n", nil
	case "pending":
		var applied, foreign []string
		if v, ok := arg(d, "applied"); ok {
			applied = strings.Split(v, ",")
		}
		if v, ok := arg(d, "foreign"); ok {
			foreign = strings.Split(v, ",")
		}
		return one(func(id string) error { return c.Pending(id, applied, foreign) })
	}
	return "", fmt.Errorf("unknown command %q", d.Cmd)
}
