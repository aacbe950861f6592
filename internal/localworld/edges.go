package localworld

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/apps"
	"github.com/petrel-db/petrel/internal/config"
)

// The edges and apps of the local world: every region gets one edge
// (`petrel edge`) and one app instance behind it (--app CMD, or the demo
// app). Ports, for the i-th region in the order of --regions: edge
// B+70+i, app B+80+i, edge admin B+92+i; so edges for at most 8 regions.
const (
	edgePortOffset  = 70
	appPortOffset   = 80
	adminPortOffset = 92
	maxEdgeRegions  = 8

	// AppUser and AppDatabase are the role and database `petrel up`
	// attaches for the app (created on the leader once it is ready).
	AppUser     = "app"
	AppDatabase = "app"
)

// EdgeInfo is one region's edge in cluster.json.
type EdgeInfo struct {
	Region   string `json:"region"`
	URL      string `json:"url"`       // what a browser or client opens
	AdminURL string `json:"admin_url"` // /metrics, /health, /instances
	AppAddr  string `json:"app_addr"`  // the region's app instance, direct
	Instance string `json:"instance"`  // its instance id
}

type regionSlot struct {
	region string
	index  int
}

// regionSlots lists the world's regions in order of first appearance.
func regionSlots(w *world) []regionSlot {
	var out []regionSlot
	seen := map[string]bool{}
	for _, n := range w.Nodes {
		if !seen[n.Region] && len(out) < maxEdgeRegions {
			seen[n.Region] = true
			out = append(out, regionSlot{n.Region, len(out)})
		}
	}
	return out
}

func edgesFor(w *world) []EdgeInfo {
	if w.NoEdges {
		return nil
	}
	var out []EdgeInfo
	for _, s := range regionSlots(w) {
		out = append(out, EdgeInfo{
			Region:   s.region,
			URL:      fmt.Sprintf("http://127.0.0.1:%d", w.BasePort+edgePortOffset+s.index),
			AdminURL: fmt.Sprintf("http://127.0.0.1:%d", w.BasePort+adminPortOffset+s.index),
			AppAddr:  fmt.Sprintf("127.0.0.1:%d", w.BasePort+appPortOffset+s.index),
			Instance: s.region + "-app1",
		})
	}
	return out
}

func edgeHost(region string) string { return "edge-" + region }
func appHost(region string) string  { return "app-" + region }

func edgePortUses(w *world) []portUse {
	var ps []portUse
	for _, e := range edgesFor(w) {
		for _, u := range []string{e.URL, e.AdminURL, "http://" + e.AppAddr} {
			p, _ := strconv.Atoi(u[strings.LastIndexByte(u, ':')+1:])
			ps = append(ps, portUse{p, e.Region + " edge/app"})
		}
	}
	return ps
}

// firstInRegion is the region's first node (the edge's database member).
func firstInRegion(w *world, region string) (worldNode, bool) {
	for _, n := range w.Nodes {
		if n.Region == region {
			return n, true
		}
	}
	return worldNode{}, false
}

// regionDB is the URL of region's database for user/password: the leader
// proxy of its first member in the primary region (always the writable
// leader), the first member's own Postgres elsewhere (a replica, so
// writes there fail read-only, as in the seeds).
func regionDB(w *world, region, user, password, db string) string {
	n, ok := firstInRegion(w, region)
	if !ok {
		return ""
	}
	host := pgAddr(n)
	if region == w.PrimaryRegion && n.ProxyPort > 0 {
		host = fmt.Sprintf("127.0.0.1:%d", n.ProxyPort)
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: host, Path: "/" + db, RawQuery: "connect_timeout=5"}
	return u.String()
}

// leaderURLFrom is the leader proxy's URL as seen from region: through
// the link between the regions, so an app there pays the real distance.
func (l *live) leaderURLFrom(region, user, password, db string) string {
	n, ok := firstInRegion(l.w, l.w.PrimaryRegion)
	if !ok || n.ProxyPort == 0 {
		return ""
	}
	host := fmt.Sprintf("127.0.0.1:%d", n.ProxyPort)
	if l.net != nil {
		host = l.net.Via(appHost(region), host)
	}
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: host, Path: "/" + db, RawQuery: "connect_timeout=5"}
	return u.String()
}

// ensureExtraSecrets adds EDGE_SECRET and APP_PASSWORD to secrets.env
// when an older world's file lacks them, and returns them.
func ensureExtraSecrets(path string) (edgeSecret, appPassword string, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", err
	}
	vals := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			v = strings.TrimSpace(v)
			if uq, err := strconv.Unquote(v); err == nil {
				v = uq
			}
			vals[strings.TrimSpace(k)] = v
		}
	}
	add := ""
	for _, k := range []string{"EDGE_SECRET", "APP_PASSWORD"} {
		if vals[k] == "" {
			pw, err := randomPassword()
			if err != nil {
				return "", "", err
			}
			vals[k] = pw
			add += k + "=" + pw + "\n"
		}
	}
	if add != "" {
		data := string(b)
		if !strings.HasSuffix(data, "\n") {
			data += "\n"
		}
		if err := writeFileAtomic(path, []byte(data+add), 0o600); err != nil {
			return "", "", fmt.Errorf("writing %s: %w", path, err)
		}
	}
	return vals["EDGE_SECRET"], vals["APP_PASSWORD"], nil
}

// ensureAppDatabase creates the app's role and database on the leader if
// they are missing.
func ensureAppDatabase(ctx context.Context, superuserDSN, password string) error {
	var lastErr error
	for attempt := 0; attempt < 30 && ctx.Err() == nil; attempt++ {
		lastErr = func() error {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			c, err := pgx.Connect(cctx, superuserDSN)
			if err != nil {
				return fmt.Errorf("connecting to the leader: %w", err)
			}
			defer c.Close(context.Background())
			ok, err := apps.RoleExists(cctx, c, AppUser)
			if err != nil {
				return err
			}
			if !ok {
				if err := apps.CreateUser(cctx, c, AppUser, password); err != nil {
					return err
				}
			} else if err := apps.SetPassword(cctx, c, AppUser, password); err != nil {
				// A restored cluster holds its source's password.
				return err
			}
			return apps.CreateDatabase(cctx, c, AppDatabase, AppUser)
		}()
		if lastErr == nil {
			return nil
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return fmt.Errorf("creating the app's database: %w", lastErr)
}

// startEdgesLocked starts one edge per region; l.mu must be held.
func (l *live) startEdgesLocked(edgeSecret string) error {
	sec, err := config.LoadSecrets(l.secrets)
	if err != nil {
		return err
	}
	for _, e := range edgesFor(l.w) {
		dir := filepath.Join(l.dir, "edges", e.Region)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
		etcd := l.etcdEndpoints
		if l.net != nil {
			etcd = []string{"http://" + l.net.Via(edgeHost(e.Region), strings.TrimPrefix(l.etcdURL, "http://"))}
		}
		args := []string{"edge",
			"--cluster", l.w.Cluster,
			"--region", e.Region,
			"--primary-region", l.w.PrimaryRegion,
			"--listen", strings.TrimPrefix(e.URL, "http://"),
			"--admin-listen", strings.TrimPrefix(e.AdminURL, "http://"),
			"--instance", "id=" + e.Instance + ",addr=" + e.AppAddr,
			"--health-path", l.appHealthPath(),
			"--etcd", strings.Join(etcd, ","),
			"--secrets-file", l.secrets,
			"--dial-map", filepath.Join(dir, DialMapName),
		}
		if n, ok := firstInRegion(l.w, e.Region); ok && e.Region != l.w.PrimaryRegion {
			args = append(args, "--node-api", "https://"+apiAddr(n), "--ca-fingerprint", l.caFP)
		}
		env := append(envWithout(l.env, "EDGE_SECRET", "EDGE_DATABASE_URL"),
			"EDGE_DATABASE_URL="+regionDB(l.w, e.Region, "operator", sec.Operator, "postgres"))
		c := &child{id: edgeHost(e.Region), dir: l.dir, logPath: filepath.Join(dir, "edge.log"), pidPath: filepath.Join(dir, "edge.pid"),
			bin: l.bin, env: env, log: l.lg, stop: make(chan struct{}), done: make(chan struct{}), args: args}
		l.children[c.id] = c
		go c.run()
	}
	return nil
}

// appHealthPath is what the edges GET on instances: the demo app has
// /healthz; an app of the user's gets a TCP check.
func (l *live) appHealthPath() string {
	if l.appCmd == "" {
		return "/healthz"
	}
	return ""
}

// startAppsLocked starts one app instance per region; l.mu must be held.
func (l *live) startAppsLocked(appPassword string) error {
	var regions []string
	for _, e := range edgesFor(l.w) {
		regions = append(regions, e.Region)
	}
	for _, e := range edgesFor(l.w) {
		dir := filepath.Join(l.dir, "apps", e.Region)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("creating %s: %w", dir, err)
		}
		port := e.AppAddr[strings.LastIndexByte(e.AppAddr, ':')+1:]
		env := append(envWithout(l.env, "PORT", "FLY_REGION", "PETREL_REGION", "PRIMARY_REGION", "DATABASE_URL"),
			"PORT="+port,
			"FLY_REGION="+e.Region,
			"PETREL_REGION="+e.Region,
			"PRIMARY_REGION="+l.w.PrimaryRegion,
			"DATABASE_URL="+regionDB(l.w, e.Region, AppUser, appPassword, AppDatabase),
			"PETREL_LEADER_URL="+l.leaderURLFrom(e.Region, AppUser, appPassword, AppDatabase),
			"PETREL_INSTANCE="+e.Instance,
			"FLY_ALLOC_ID="+e.Instance,
			"PETREL_REGIONS="+strings.Join(regions, ","),
			"PETREL_EDGE_URL="+e.URL,
		)
		bin, args := l.bin, []string{"demo-app"}
		if l.appCmd != "" {
			bin, args = "/bin/sh", []string{"-c", l.appCmd}
		}
		c := &child{id: appHost(e.Region), dir: l.dir, logPath: filepath.Join(dir, "app.log"), pidPath: filepath.Join(dir, "app.pid"),
			bin: bin, env: env, log: l.lg, stop: make(chan struct{}), done: make(chan struct{}), args: args}
		l.children[c.id] = c
		go c.run()
	}
	return nil
}

func envWithout(env []string, keys ...string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		drop := false
		for _, x := range keys {
			if k == x {
				drop = true
			}
		}
		if !drop {
			out = append(out, kv)
		}
	}
	return out
}

// addEdgesToNet puts every region's edge (dialled by other edges) and
// app (dialling the leader) into the network.
func addEdgesToNet(l *live) error {
	if l.net == nil {
		return nil
	}
	for _, e := range edgesFor(l.w) {
		if err := l.net.AddHost(edgeHost(e.Region), e.Region, strings.TrimPrefix(e.URL, "http://")); err != nil {
			return fmt.Errorf("adding the %s edge to the local network: %w", e.Region, err)
		}
		if err := l.net.AddHost(appHost(e.Region), e.Region); err != nil {
			return fmt.Errorf("adding the %s app to the local network: %w", e.Region, err)
		}
	}
	return nil
}

// writeEdgeDialMaps writes edges/<region>/dialmap.json.
func writeEdgeDialMaps(l *live) error {
	for _, e := range edgesFor(l.w) {
		dir := filepath.Join(l.dir, "edges", e.Region)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		m := map[string]string{}
		if l.net != nil {
			m = l.net.DialMap(edgeHost(e.Region))
		}
		if err := writeJSON(filepath.Join(dir, DialMapName), m, 0o644); err != nil {
			return fmt.Errorf("writing the %s edge's dial map: %w", e.Region, err)
		}
	}
	return nil
}
