package localworld

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/config"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/petrel-db/petrel/internal/netsim"
	"github.com/petrel-db/petrel/internal/store"
)

// ControlSocketName is the unix socket in the world's directory on which
// a running `petrel up` takes `petrel scale` and `petrel remove` requests
// (HTTP: POST /scale, POST /remove). The directory is 0700, so only its
// owner can use it.
const ControlSocketName = "up.sock"

// ControlTimeout bounds one scale or remove request.
const ControlTimeout = 2 * time.Minute

// live is a running world: what Run started, and what scale and remove
// change while it runs.
type live struct {
	dir, shownDir string
	bin, secrets  string
	suPW          string
	caFP          string      // the cluster CA's fingerprint, pinned on every node
	api           *api.Client // reads the members' /status
	etcdURL       string
	etcdEndpoints []string
	env           []string
	lg            *slog.Logger
	net           *netsim.World // nil with --no-links

	appCmd string // --app; "" is the demo app

	mu       sync.Mutex // guards w, children; serialises scale/remove
	w        *world
	children map[string]*child
}

// nodeArgs is the `petrel node` command line for n.
func (l *live) nodeArgs(n worldNode) []string {
	nd := filepath.Join(l.dir, "nodes", n.ID)
	etcd := l.etcdEndpoints
	if l.net != nil {
		// The node reaches etcd through its own link (etcd lives in the
		// primary region).
		host := strings.TrimPrefix(l.etcdURL, "http://")
		etcd = []string{"http://" + l.net.Via(n.ID, host)}
	}
	return []string{"node",
		"--cluster", l.w.Cluster,
		"--id", n.ID,
		"--region", n.Region,
		"--primary-region", l.w.PrimaryRegion,
		"--data-dir", nd,
		"--listen-host", "127.0.0.1",
		// Everything of the local world runs on this host; its printed
		// URLs and the demo apps connect over loopback without TLS.
		"--loopback-plaintext",
		"--pg-port", strconv.Itoa(n.PGPort),
		"--api-port", strconv.Itoa(n.APIPort),
		"--ca-fingerprint", l.caFP,
		"--proxy-port", strconv.Itoa(n.ProxyPort),
		"--etcd", strings.Join(etcd, ","),
		"--secrets-file", l.secrets,
		"--dial-map", filepath.Join(nd, DialMapName),
	}
}

// startLocked starts n's supervisor; l.mu must be held.
func (l *live) startLocked(n worldNode) error {
	nd := filepath.Join(l.dir, "nodes", n.ID)
	if err := os.MkdirAll(nd, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", nd, err)
	}
	c := &child{
		id:      n.ID,
		dir:     l.dir,
		logPath: filepath.Join(nd, "agent.log"),
		pidPath: filepath.Join(nd, "agent.pid"),
		bin:     l.bin,
		env:     l.env,
		log:     l.lg,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		args:    l.nodeArgs(n),
	}
	l.children[n.ID] = c
	go c.run()
	return nil
}

// snapshot returns the current nodes and children, in world order.
func (l *live) snapshot() ([]worldNode, []*child) {
	l.mu.Lock()
	defer l.mu.Unlock()
	nodes := slices.Clone(l.w.Nodes)
	var cs []*child
	for _, n := range nodes {
		if c := l.children[n.ID]; c != nil {
			cs = append(cs, c)
		}
	}
	return nodes, cs
}

// persistLocked writes world.json, cluster.json and the dial maps.
func (l *live) persistLocked() (*ClusterFile, error) {
	if err := writeJSON(filepath.Join(l.dir, WorldFileName), l.w, 0o600); err != nil {
		return nil, fmt.Errorf("writing world.json: %w", err)
	}
	// secrets.env, not the password `up` started with: `petrel secrets
	// rotate` may have changed it since.
	su := l.suPW
	if sec, err := config.LoadSecrets(filepath.Join(l.dir, SecretsFileName)); err == nil {
		su = sec.Superuser
	}
	cf := clusterFileFor(l.w, l.etcdEndpoints, su, l.caFP)
	addDatabaseURL(cf, l.dir) // the operator's URL through the leader proxy (dburl.go)
	if err := writeJSON(filepath.Join(l.dir, ClusterFileName), cf, 0o600); err != nil {
		return nil, fmt.Errorf("writing cluster.json: %w", err)
	}
	if err := writeDialMaps(l.dir, l.net, l.w.Nodes); err != nil {
		return nil, err
	}
	return cf, nil
}

// ScaleRequest asks a running world for Count more nodes in Region.
type ScaleRequest struct {
	Region string `json:"region"`
	Count  int    `json:"count"`
}

// ScaleResult lists the nodes added.
type ScaleResult struct {
	Added []string `json:"added"`
}

// RemoveRequest asks a running world to take node ID out.
type RemoveRequest struct {
	ID string `json:"id"`
}

// scale adds nodes: new ports, links to and from every other host, new
// dial maps everywhere, then the processes. They join by themselves
// (clone the leader, register, get a slot).
func (l *live) scale(req ScaleRequest) (ScaleResult, error) {
	var res ScaleResult
	if !regionRE.MatchString(req.Region) {
		return res, fmt.Errorf("region %q must be lowercase letters and digits, starting with a letter", req.Region)
	}
	if req.Count < 1 {
		return res, fmt.Errorf("count %d: want at least 1", req.Count)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.w.Nodes)+req.Count > maxNodes {
		return res, fmt.Errorf("%d nodes + %d would exceed the local world's %d", len(l.w.Nodes), req.Count, maxNodes)
	}
	usedSlot := map[int]bool{}
	maxN := 0
	for _, n := range l.w.Nodes {
		usedSlot[n.PGPort-l.w.BasePort-pgPortOffset] = true
		if r, num, ok := splitID(n.ID); ok && r == req.Region && num > maxN {
			maxN = num
		}
	}
	if l.w.NextNum != nil && l.w.NextNum[req.Region] > maxN {
		maxN = l.w.NextNum[req.Region]
	}
	var added []worldNode
	for k := 0; k < req.Count; k++ {
		slot := 0
		for usedSlot[slot] {
			slot++
		}
		usedSlot[slot] = true
		maxN++
		n := worldNode{
			ID:        fmt.Sprintf("%s%d", req.Region, maxN),
			Region:    req.Region,
			PGPort:    l.w.BasePort + pgPortOffset + slot,
			APIPort:   l.w.BasePort + apiPortOffset + slot,
			ProxyPort: l.w.BasePort + proxyPortOffset + slot,
		}
		added = append(added, n)
	}
	if err := checkNodePorts(added); err != nil {
		return res, err
	}
	for _, n := range added {
		if l.net != nil {
			if err := addToNet(l.net, n); err != nil {
				return res, err
			}
		}
		l.w.Nodes = append(l.w.Nodes, n)
		if l.w.NextNum == nil {
			l.w.NextNum = map[string]int{}
		}
		if num, ok := numOf(n.ID, n.Region); ok && num > l.w.NextNum[n.Region] {
			l.w.NextNum[n.Region] = num
		}
	}
	if _, err := l.persistLocked(); err != nil {
		return res, err
	}
	for _, n := range added {
		if err := l.startLocked(n); err != nil {
			return res, err
		}
		res.Added = append(res.Added, n.ID)
	}
	l.lg.Info("scaled", "region", req.Region, "added", strings.Join(res.Added, ","))
	return res, nil
}

// remove stops a node (SIGTERM: a leader hands over first), deletes its
// data, takes it out of the network and deletes its member and node keys
// in etcd, so the leader drops its replication slot.
func (l *live) remove(ctx context.Context, id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	i := slices.IndexFunc(l.w.Nodes, func(n worldNode) bool { return n.ID == id })
	if i < 0 {
		return fmt.Errorf("no node %s in this world (see petrel status)", id)
	}
	n := l.w.Nodes[i]
	if len(l.w.Nodes) == 1 {
		return fmt.Errorf("%s is the only node; use petrel down", id)
	}
	if n.Region == l.w.PrimaryRegion {
		left := 0
		for _, o := range l.w.Nodes {
			if o.Region == l.w.PrimaryRegion {
				left++
			}
		}
		if left == 1 {
			return fmt.Errorf("%s is the last node of the primary region %s: add another first (petrel scale --region %s)", id, n.Region, n.Region)
		}
	}
	if c := l.children[id]; c != nil {
		c.shutdown()
		delete(l.children, id)
	}
	if err := removeNodeKeys(ctx, l.etcdEndpoints, l.w.Cluster, id); err != nil {
		return err
	}
	if l.net != nil {
		l.net.Remove(id)
	}
	l.w.Nodes = slices.Delete(l.w.Nodes, i, i+1)
	if _, err := l.persistLocked(); err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(l.dir, "nodes", id)); err != nil {
		return fmt.Errorf("deleting %s's data: %w", id, err)
	}
	l.lg.Info("removed node", "node", id)
	return nil
}

// removeNodeKeys deletes /petrel/<c>/members/<id> and nodes/<id>.
func removeNodeKeys(ctx context.Context, endpoints []string, cluster, id string) error {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 3 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return fmt.Errorf("connecting to etcd: %w", err)
	}
	defer cli.Close()
	if err := store.RemoveNode(ctx, cli, cluster, id); err != nil {
		return err
	}
	return nil
}

// splitID splits "scl12" into ("scl", 12).
func splitID(id string) (string, int, bool) {
	i := len(id)
	for i > 0 && id[i-1] >= '0' && id[i-1] <= '9' {
		i--
	}
	if i == 0 || i == len(id) {
		return "", 0, false
	}
	n, err := strconv.Atoi(id[i:])
	return id[:i], n, err == nil
}

func numOf(id, region string) (int, bool) {
	r, n, ok := splitID(id)
	return n, ok && r == region
}

// serveControl serves the control socket until ctx ends.
func (l *live) serveControl(ctx context.Context) (func(), error) {
	path := filepath.Join(l.dir, ControlSocketName)
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /scale", func(w http.ResponseWriter, r *http.Request) {
		var req ScaleRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		res, err := l.scale(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		_ = json.NewEncoder(w).Encode(res)
	})
	mux.HandleFunc("POST /remove", func(w http.ResponseWriter, r *http.Request) {
		var req RemoveRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		rctx, cancel := context.WithTimeout(r.Context(), ControlTimeout)
		defer cancel()
		if err := l.remove(rctx, req.ID); err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		_, _ = w.Write([]byte("{}\n"))
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		_ = os.Remove(path)
	}, nil
}

// control posts req to the `petrel up` running on dir.
func control(ctx context.Context, dir, path string, req, resp any) error {
	sock := filepath.Join(dir, ControlSocketName)
	if _, err := os.Stat(sock); err != nil {
		return fmt.Errorf("no petrel up is running on %s (no %s): start it with `petrel up --dir %s`: %w", dir, ControlSocketName, dir, ErrNotRunning)
	}
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, ControlTimeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://petrel-up"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	hresp, err := hc.Do(hreq)
	if err != nil {
		return fmt.Errorf("asking the petrel up on %s: %w", dir, err)
	}
	defer hresp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(hresp.Body, 1<<20))
	if hresp.StatusCode != http.StatusOK {
		return errors.New(strings.TrimSpace(string(b)))
	}
	if resp != nil {
		if err := json.Unmarshal(b, resp); err != nil {
			return fmt.Errorf("petrel up's answer: %w", err)
		}
	}
	return nil
}

// Scale asks the `petrel up` running on dir for count more nodes in
// region and returns their ids. They are started; they join by themselves.
func Scale(ctx context.Context, dir, region string, count int) ([]string, error) {
	var res ScaleResult
	if err := control(ctx, dir, "/scale", ScaleRequest{Region: region, Count: count}, &res); err != nil {
		return nil, err
	}
	return res.Added, nil
}

// Remove asks the `petrel up` running on dir to take node id out: stopped,
// data deleted, keys (and so its slot) removed, dropped from world.json.
func Remove(ctx context.Context, dir, id string) error {
	return control(ctx, dir, "/remove", RemoveRequest{ID: id}, nil)
}
