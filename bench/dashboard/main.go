// Command dashboard measures what the dashboard's live stream costs an
// agent: the CPU time of the agent serving the pages (utime+stime from
// /proc/<pid>/stat) over a window with no page open, then with -streams
// pages open (each a GET /api/v1/stream read to the end, as a browser's
// EventSource does), on a 3-node cluster (scl=2, ord=1). It also reports
// what the pages received (views and bytes per second each) and, across a
// switchover, how long after the new leader took the key the first view
// naming it arrived on every stream.
//
// Usage: go run ./bench/dashboard [-window 30s] [-streams 5]
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/ops"
	"github.com/petrel-db/petrel/internal/testcluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func main() {
	window := flag.Duration("window", 30*time.Second, "length of each measuring window")
	streams := flag.Int("streams", 5, "pages open in the loaded window")
	flag.Parse()
	log.SetFlags(log.Ltime)
	if err := run(*window, *streams); err != nil {
		log.Fatal(err)
	}
}

// cpu is a process's user+system CPU time.
func cpu(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) start after ")".
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / hz, nil
}

func measure(pid int, window time.Duration) (float64, error) {
	c0, err := cpu(pid)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	time.Sleep(window)
	c1, err := cpu(pid)
	if err != nil {
		return 0, err
	}
	return 100 * float64(c1-c0) / float64(time.Since(t0)), nil
}

// page is one open stream: it counts views and bytes, and notes when a
// view first names a given leader.
type page struct {
	views, bytes atomic.Int64
	mu           sync.Mutex
	leaderSeen   map[string]time.Time
}

func (p *page) read(ctx context.Context, client *http.Client, url string) {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := client.Do(req)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	view := false
	for sc.Scan() {
		line := sc.Text()
		p.bytes.Add(int64(len(line) + 1))
		switch {
		case line == "event: view":
			view = true
		case strings.HasPrefix(line, "data: ") && view:
			p.views.Add(1)
			if i := strings.Index(line, `"leader":"`); i >= 0 {
				l := line[i+10:]
				l = l[:strings.IndexByte(l, '"')]
				p.mu.Lock()
				if _, ok := p.leaderSeen[l]; !ok {
					p.leaderSeen[l] = time.Now()
				}
				p.mu.Unlock()
			}
			view = false
		case line == "":
			view = false
		}
	}
}

func run(window time.Duration, streams int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "petrel-bench-dashboard")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	bin, err := testcluster.Build(ctx, wd, dir)
	if err != nil {
		return err
	}
	c, err := testcluster.Start(ctx, testcluster.Options{Dir: filepath.Join(dir, "cluster"), Binary: bin})
	if err != nil {
		return err
	}
	defer c.Close()
	leader, err := c.StartNodes(ctx, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"}, [2]string{"ord1", "ord"})
	if err != nil {
		return err
	}
	// The pages are served by a replica in the other region: it asks every
	// peer for its /status.
	server := "ord1"
	pid := c.AgentPID(server)
	url := c.Node(server).APIURL() + "/api/v1/stream"
	client := c.HTTPClient()
	client.Timeout = 0          // a stream
	time.Sleep(5 * time.Second) // settle
	idle, err := measure(pid, window)
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	pages := make([]*page, streams)
	var wg sync.WaitGroup
	for i := range pages {
		pages[i] = &page{leaderSeen: map[string]time.Time{}}
		wg.Add(1)
		go func() { defer wg.Done(); pages[i].read(sctx, client, url) }()
	}
	time.Sleep(2 * time.Second)
	for _, p := range pages {
		p.views.Store(0)
		p.bytes.Store(0)
	}
	loaded, err := measure(pid, window)
	if err != nil {
		stop()
		return err
	}
	var views, bytes int64
	for _, p := range pages {
		views += p.views.Load()
		bytes += p.bytes.Load()
	}
	secs := window.Seconds()
	fmt.Printf("agent %s CPU, %v windows (100%% = one core):\n", server, window)
	fmt.Printf("  no page open:   %.2f%%\n", idle)
	fmt.Printf("  %d pages open:   %.2f%%  (+%.2f%%; each page: %.1f views/s, %.1f KiB/s)\n", streams, loaded, loaded-idle,
		float64(views)/float64(streams)/secs, float64(bytes)/float64(streams)/secs/1024)

	cli, err := clientv3.New(clientv3.Config{Endpoints: c.EtcdEndpoints(), DialTimeout: 3 * time.Second})
	if err != nil {
		stop()
		return err
	}
	defer cli.Close()
	target := "scl2"
	if leader == "scl2" {
		target = "scl1"
	}
	if err := testcluster.WaitFor(ctx, "a synchronous standby", func() bool {
		st, err := c.Status(leader)
		return err == nil && st.SyncState == "sync"
	}); err != nil {
		stop()
		return err
	}
	o := &ops.Cluster{Etcd: cli, Name: c.Opts.Name}
	if _, _, err := o.Switchover(ctx, ops.SwitchoverRequest{To: target}); err != nil {
		stop()
		return err
	}
	// The new leader's key revision time is when it took over; the
	// switchover above returns right after it (polling every 100 ms).
	took := time.Now()
	if err := testcluster.WaitFor(ctx, target+" as primary", func() bool { return c.Role(target) == model.RolePrimary }); err != nil {
		stop()
		return err
	}
	time.Sleep(2 * time.Second)
	stop()
	wg.Wait()
	var worst time.Duration
	for _, p := range pages {
		p.mu.Lock()
		at, ok := p.leaderSeen[target]
		p.mu.Unlock()
		if !ok {
			return fmt.Errorf("a page never saw %s lead", target)
		}
		worst = max(worst, at.Sub(took))
	}
	fmt.Printf("switchover %s -> %s: every page named the new leader within %v of the CLI seeing it take the key\n", leader, target, worst.Round(time.Millisecond))
	return nil
}
