package edge

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/store"
)

const testSecret = "test-secret-0123456789abcdef"

// testRegion is one region of an in-process world: an edge and its apps.
type testRegion struct {
	name string
	edge *Edge
	url  string
}

// startEdge runs an edge for region with the given instances; no store:
// mesh tells the edges about each other.
func startEdge(t *testing.T, region, primary string, ins []Instance, mod func(*Config)) *testRegion {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Region: region, PrimaryRegion: primary, AdvertiseURL: "http://" + ln.Addr().String(),
		Instances: ins, Secret: testSecret, ReplayTimeout: 2 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	lg := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		lg = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e, err := New(cfg, lg.With("region", region))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = e.Run(ctx, ln, nil, nil) }()
	t.Cleanup(func() { cancel(); <-done })
	return &testRegion{name: region, edge: e, url: cfg.AdvertiseURL}
}

// mesh gives every edge the others' records, as the store would.
func mesh(rs ...*testRegion) {
	var v store.EdgeView
	for _, r := range rs {
		v.Edges = append(v.Edges, r.edge.record())
	}
	for _, r := range rs {
		r.edge.SetPeers(v)
	}
}

// app is an httptest app instance counting its requests.
func app(t *testing.T, id string, h func(w http.ResponseWriter, r *http.Request, body []byte)) (Instance, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		n.Add(1)
		w.Header().Set("X-Instance", id)
		h(w, r, b)
	}))
	t.Cleanup(srv.Close)
	return Instance{ID: id, Addr: strings.TrimPrefix(srv.URL, "http://")}, &n
}

// replicaApp asks for a replay to region for every write, like an app
// whose replica refused the write; reads are served locally.
func replicaApp(region string) func(w http.ResponseWriter, r *http.Request, body []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Method != http.MethodGet {
			w.Header().Set("fly-replay", "region="+region+";state=captured_write")
			w.WriteHeader(http.StatusConflict)
			io.WriteString(w, "replay me\n")
			return
		}
		fmt.Fprintf(w, "read here\n")
	}
}

// echoApp answers with the body's length and digest and the replay source.
func echoApp(w http.ResponseWriter, r *http.Request, body []byte) {
	w.Header().Set("X-Src", r.Header.Get(HeaderReplaySrc))
	w.Header().Set("X-Failed", r.Header.Get(HeaderReplayFailed))
	w.Header().Set("X-Spoof", r.Header.Get("Petrel-Edge-Kind"))
	fmt.Fprintf(w, "%d %x", len(body), sha256.Sum256(body))
}

func do(t *testing.T, method, url string, body io.Reader, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

func TestReplayToPrimaryRegion(t *testing.T) {
	sclIn, sclN := app(t, "scl-1", echoApp)
	ordIn, ordN := app(t, "ord-1", replicaApp("scl"))
	scl := startEdge(t, "scl", "scl", []Instance{sclIn}, nil)
	ord := startEdge(t, "ord", "scl", []Instance{ordIn}, nil)
	mesh(scl, ord)

	// A read stays in ord.
	resp, body := do(t, "GET", ord.url+"/x", nil, nil)
	if resp.StatusCode != 200 || body != "read here\n" || resp.Header.Get("Fly-Region") != "ord" {
		t.Fatalf("read: %d %q region %q", resp.StatusCode, body, resp.Header.Get("Fly-Region"))
	}
	// A write is replayed whole to scl, once.
	payload := []byte(`{"note":"hello"}`)
	resp, body = do(t, "POST", ord.url+"/notes?x=1", bytes.NewReader(payload), map[string]string{"Content-Type": "application/json"})
	want := fmt.Sprintf("%d %x", len(payload), sha256.Sum256(payload))
	if resp.StatusCode != 200 || body != want {
		t.Fatalf("write: %d %q, want 200 %q", resp.StatusCode, body, want)
	}
	if got := resp.Header.Get("X-Instance"); got != "scl-1" {
		t.Errorf("served by %q, want scl-1", got)
	}
	if got := resp.Header.Get("Fly-Region"); got != "scl" {
		t.Errorf("Fly-Region %q, want scl", got)
	}
	src := resp.Header.Get("X-Src")
	if !strings.HasPrefix(src, "instance=ord-1;region=ord;t=") || !strings.HasSuffix(src, ";state=captured_write") {
		t.Errorf("fly-replay-src = %q", src)
	}
	if resp.Header.Get("fly-replay") != "" {
		t.Errorf("the directive leaked to the client")
	}
	if sclN.Load() != 1 || ordN.Load() != 2 {
		t.Errorf("scl served %d, ord %d; want 1 and 2 (one read, one asked write)", sclN.Load(), ordN.Load())
	}
}

func TestReplayEmpty200AndStatusPassThrough(t *testing.T) {
	sclIn, _ := app(t, "scl-1", func(w http.ResponseWriter, r *http.Request, b []byte) {
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, "created")
	})
	ordIn, _ := app(t, "ord-1", func(w http.ResponseWriter, r *http.Request, b []byte) {
		w.Header().Set("fly-replay", "instance=scl-1") // LiteFS style: empty 200
	})
	scl := startEdge(t, "scl", "scl", []Instance{sclIn}, nil)
	ord := startEdge(t, "ord", "scl", []Instance{ordIn}, nil)
	mesh(scl, ord)
	resp, body := do(t, "PUT", ord.url+"/", strings.NewReader("x"), nil)
	if resp.StatusCode != http.StatusCreated || body != "created" {
		t.Fatalf("got %d %q, want 201 created", resp.StatusCode, body)
	}
}

func TestReplayBodies(t *testing.T) {
	sclIn, sclN := app(t, "scl-1", echoApp)
	ordIn, _ := app(t, "ord-1", replicaApp("scl"))
	const mem, max = 1024, 4096
	lim := func(c *Config) { c.MemoryBody, c.MaxReplayBody = mem, max }
	scl := startEdge(t, "scl", "scl", []Instance{sclIn}, lim)
	ord := startEdge(t, "ord", "scl", []Instance{ordIn}, lim)
	mesh(scl, ord)

	digest := func(b []byte) string { return fmt.Sprintf("%d %x", len(b), sha256.Sum256(b)) }
	for _, n := range []int{0, 1, mem - 1, mem, mem + 1, max - 1, max} {
		b := bytes.Repeat([]byte{'a' + byte(n%26)}, n)
		// Content-Length (including an empty body with Content-Length: 0).
		resp, body := do(t, "POST", ord.url+"/", bytes.NewReader(b), nil)
		if resp.StatusCode != 200 || body != digest(b) {
			t.Errorf("%d bytes with Content-Length: %d %q", n, resp.StatusCode, body)
		}
		// Chunked: the reader hides its length.
		resp, body = do(t, "POST", ord.url+"/", io.MultiReader(bytes.NewReader(b)), nil)
		if resp.StatusCode != 200 || body != digest(b) {
			t.Errorf("%d bytes chunked: %d %q", n, resp.StatusCode, body)
		}
	}
	before := sclN.Load()
	// One byte over the replay limit: the local instance still gets it all
	// (it asked for a replay), the client gets 413 with a reason, and
	// nothing truncated reaches the primary region.
	for _, chunked := range []bool{false, true} {
		b := bytes.Repeat([]byte{'z'}, max+1)
		var r io.Reader = bytes.NewReader(b)
		if chunked {
			r = io.MultiReader(r)
		}
		resp, _ := do(t, "POST", ord.url+"/", r, nil)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(resp.Header.Get(HeaderReplayFailed), "reason=body_too_large") {
			t.Errorf("over the limit (chunked=%v): %d %q", chunked, resp.StatusCode, resp.Header.Get(HeaderReplayFailed))
		}
	}
	if sclN.Load() != before {
		t.Errorf("an over-limit body reached the primary region")
	}
	// A large body that needs no replay streams to the local instance whole.
	ordEcho, _ := app(t, "ord-2", echoApp)
	ord2 := startEdge(t, "ord", "scl", []Instance{ordEcho}, lim)
	big := bytes.Repeat([]byte("0123456789"), 1000)
	resp, body := do(t, "POST", ord2.url+"/", io.MultiReader(bytes.NewReader(big)), nil)
	if resp.StatusCode != 200 || body != digest(big) {
		t.Errorf("large unreplayed body: %d %q", resp.StatusCode, body)
	}
}

func TestSpoofedHeadersAndForgedEdges(t *testing.T) {
	sclIn, sclN := app(t, "scl-1", echoApp)
	scl := startEdge(t, "scl", "scl", []Instance{sclIn}, nil)
	resp, _ := do(t, "GET", scl.url+"/", nil, map[string]string{
		"Fly-Replay-Src": "instance=evil;region=ord;t=1", "Fly-Replay-Failed": "reason=timeout", "Petrel-Edge-Kind": "replay",
	})
	if resp.StatusCode != 200 || resp.Header.Get("X-Src") != "" || resp.Header.Get("X-Failed") != "" || resp.Header.Get("X-Spoof") != "" {
		t.Fatalf("client headers reached the app: %d src=%q failed=%q kind=%q", resp.StatusCode, resp.Header.Get("X-Src"), resp.Header.Get("X-Failed"), resp.Header.Get("X-Spoof"))
	}
	// A request claiming to be from an edge with a bad signature.
	resp, _ = do(t, "POST", scl.url+"/", strings.NewReader("x"), map[string]string{
		"Petrel-Edge-Auth": "v1;t=" + fmt.Sprint(time.Now().UnixMilli()) + ";n=000000000000000000000000;s=AAAA", "Fly-Replay-Src": "instance=evil",
	})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("forged edge request: %d, want 401", resp.StatusCode)
	}
	// A correctly signed request captured and sent again.
	req, _ := http.NewRequest("POST", scl.url+"/", strings.NewReader("x"))
	req.Header.Set(headerEdgeKind, "replay")
	sum := sha256.Sum256([]byte("x"))
	signRequest(deriveKeys(testSecret).auth, req, sum[:], time.Now())
	auth := req.Header.Get(headerEdgeAuth)
	resp, _ = do(t, "POST", scl.url+"/", strings.NewReader("x"), map[string]string{headerEdgeAuth: auth, headerEdgeKind: "replay"})
	if resp.StatusCode != 200 {
		t.Fatalf("signed request: %d", resp.StatusCode)
	}
	resp, _ = do(t, "POST", scl.url+"/", strings.NewReader("x"), map[string]string{headerEdgeAuth: auth, headerEdgeKind: "replay"})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("replayed signature: %d, want 401", resp.StatusCode)
	}
	// The same signature over another body.
	resp, _ = do(t, "POST", scl.url+"/", strings.NewReader("y"), map[string]string{headerEdgeAuth: auth, headerEdgeKind: "replay"})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("signature over another body: %d, want 401", resp.StatusCode)
	}
	if sclN.Load() != 2 {
		t.Errorf("app saw %d requests, want 2", sclN.Load())
	}
	// Another cluster's edge (other secret) is refused too.
	req, _ = http.NewRequest("POST", scl.url+"/", strings.NewReader("x"))
	signRequest(deriveKeys("another-cluster-secret-000").auth, req, sum[:], time.Now())
	resp, _ = do(t, "POST", scl.url+"/", strings.NewReader("x"), map[string]string{headerEdgeAuth: req.Header.Get(headerEdgeAuth)})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("other cluster's signature: %d, want 401", resp.StatusCode)
	}
}

func TestReplayLoopAndMissingTarget(t *testing.T) {
	sclIn, sclN := app(t, "scl-1", replicaApp("ord"))
	ordIn, _ := app(t, "ord-1", replicaApp("scl"))
	scl := startEdge(t, "scl", "scl", []Instance{sclIn}, nil)
	ord := startEdge(t, "ord", "scl", []Instance{ordIn}, nil)
	mesh(scl, ord)
	resp, _ := do(t, "POST", ord.url+"/", strings.NewReader("x"), nil)
	if resp.StatusCode != http.StatusLoopDetected || !strings.Contains(resp.Header.Get(HeaderReplayFailed), "reason=hop_limit") {
		t.Fatalf("loop: %d %q", resp.StatusCode, resp.Header.Get(HeaderReplayFailed))
	}
	if n := sclN.Load(); n < 1 || n > 2 {
		t.Errorf("scl saw the looping request %d times", n)
	}

	// No instance in the target region: 503 within the timeout.
	ams := startEdge(t, "ams", "scl", nil, nil)
	ordIn2, _ := app(t, "ord-2", func(w http.ResponseWriter, r *http.Request, b []byte) {
		w.Header().Set("fly-replay", "region=ams;timeout=300ms")
		w.WriteHeader(409)
	})
	ord2 := startEdge(t, "ord", "scl", []Instance{ordIn2}, func(c *Config) { c.ID = "edge-ord2" })
	mesh(ams, ord2)
	start := time.Now()
	resp, _ = do(t, "POST", ord2.url+"/", strings.NewReader("x"), nil)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(resp.Header.Get(HeaderReplayFailed), "reason=no_candidate") {
		t.Errorf("no target: %d %q", resp.StatusCode, resp.Header.Get(HeaderReplayFailed))
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("no target took %v", d)
	}

	// fallback=force_self: the asking instance gets it back with the reason,
	// and cannot replay again.
	var fallbackSeen atomic.Value
	ordIn3, _ := app(t, "ord-3", func(w http.ResponseWriter, r *http.Request, b []byte) {
		if f := r.Header.Get(HeaderReplayFailed); f != "" {
			fallbackSeen.Store(f)
			io.WriteString(w, "served myself: "+string(b))
			return
		}
		w.Header().Set("fly-replay", "region=ams;timeout=200ms;fallback=force_self")
		w.WriteHeader(409)
	})
	ord3 := startEdge(t, "ord", "scl", []Instance{ordIn3}, func(c *Config) { c.ID = "edge-ord3" })
	mesh(ams, ord3)
	resp, body := do(t, "POST", ord3.url+"/", strings.NewReader("payload"), nil)
	f, _ := fallbackSeen.Load().(string)
	if resp.StatusCode != 200 || body != "served myself: payload" || !strings.Contains(f, "reason=no_candidate") || !strings.Contains(f, "replay_source=ord-3") {
		t.Errorf("fallback: %d %q, fly-replay-failed %q", resp.StatusCode, body, f)
	}
}

func TestInstanceTargetsElsewhereAndClientRegionHeaders(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	count := func(id string) func(w http.ResponseWriter, r *http.Request, b []byte) {
		return func(w http.ResponseWriter, r *http.Request, b []byte) {
			mu.Lock()
			seen[id]++
			mu.Unlock()
			switch r.URL.Path {
			case "/to-instance":
				if id != "scl-2" {
					w.Header().Set("fly-replay", "instance=scl-2")
					return
				}
			case "/elsewhere":
				if r.Header.Get(HeaderReplaySrc) == "" {
					w.Header().Set("fly-replay", "region=scl;elsewhere=true")
					return
				}
			case "/prefer":
				if r.Header.Get(HeaderReplaySrc) == "" {
					w.Header().Set("fly-replay", "prefer_instance=gone;region=scl")
					return
				}
			}
			io.WriteString(w, id)
		}
	}
	s1, _ := app(t, "scl-1", count("scl-1"))
	s2, _ := app(t, "scl-2", count("scl-2"))
	o1, _ := app(t, "ord-1", count("ord-1"))
	scl := startEdge(t, "scl", "scl", []Instance{s1, s2}, nil)
	ord := startEdge(t, "ord", "scl", []Instance{o1}, nil)
	mesh(scl, ord)
	for i := 0; i < 4; i++ {
		if _, body := do(t, "GET", ord.url+"/to-instance", nil, nil); body != "scl-2" {
			t.Errorf("instance=scl-2 from ord answered by %q", body)
		}
		if _, body := do(t, "GET", scl.url+"/elsewhere", nil, nil); body != "scl-1" && body != "scl-2" {
			t.Errorf("elsewhere: %q", body)
		}
		if _, body := do(t, "GET", ord.url+"/prefer", nil, nil); body != "scl-1" && body != "scl-2" {
			t.Errorf("prefer_instance fallback to region: %q", body)
		}
	}
	// elsewhere=true never serves the asking instance: every elsewhere
	// request was served by the instance that did not ask.
	if _, body := do(t, "GET", ord.url+"/", nil, map[string]string{"Fly-Force-Region": "scl"}); body != "scl-1" && body != "scl-2" {
		t.Errorf("fly-force-region: %q", body)
	}
	if resp, _ := do(t, "GET", ord.url+"/", nil, map[string]string{"Fly-Force-Region": "syd"}); resp.StatusCode != 503 {
		t.Errorf("fly-force-region to a region without an edge: %d", resp.StatusCode)
	}
	if _, body := do(t, "GET", ord.url+"/", nil, map[string]string{"Fly-Prefer-Region": "syd"}); body != "ord-1" {
		t.Errorf("fly-prefer-region to nowhere falls back to here: %q", body)
	}
	if _, body := do(t, "GET", ord.url+"/", nil, map[string]string{"Fly-Prefer-Region": "scl"}); body != "scl-1" && body != "scl-2" {
		t.Errorf("fly-prefer-region: %q", body)
	}
}

func TestSheddingAndDeadInstances(t *testing.T) {
	release := make(chan struct{})
	slow, _ := app(t, "ord-1", func(w http.ResponseWriter, r *http.Request, b []byte) {
		if r.URL.Path == "/slow" {
			<-release
		}
		io.WriteString(w, "ord-1")
	})
	slow.Capacity = 1
	s1, _ := app(t, "scl-1", func(w http.ResponseWriter, r *http.Request, b []byte) { io.WriteString(w, "scl-1") })
	scl := startEdge(t, "scl", "scl", []Instance{s1}, nil)
	ord := startEdge(t, "ord", "scl", []Instance{slow}, nil)
	mesh(scl, ord)
	done := make(chan string)
	go func() { _, b := do(t, "GET", ord.url+"/slow", nil, nil); done <- b }()
	// Wait until the slow request holds ord-1's only slot.
	deadline := time.Now().Add(5 * time.Second)
	for ord.edge.inst.get("ord-1").inflight.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if _, body := do(t, "GET", ord.url+"/fast", nil, nil); body != "scl-1" {
		t.Errorf("at capacity: served by %q, want the nearest region (scl-1)", body)
	}
	close(release)
	if b := <-done; b != "ord-1" {
		t.Errorf("slow request: %q", b)
	}

	// An instance that dies: a refused connection takes it out at once and
	// the next healthy instance (here, the other region) serves.
	var calls atomic.Int64
	dying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		// Die mid-request: hijack and close without an answer.
		c, _, _ := w.(http.Hijacker).Hijack()
		c.Close()
	}))
	ams := startEdge(t, "ams", "scl", []Instance{{ID: "ams-1", Addr: strings.TrimPrefix(dying.URL, "http://")}}, nil)
	mesh(scl, ams)
	resp, _ := do(t, "POST", ams.url+"/write", strings.NewReader("once"), nil)
	if resp.StatusCode != http.StatusBadGateway || calls.Load() != 1 {
		t.Errorf("instance died mid-write: %d after %d calls, want 502 after 1 (a write is never sent twice)", resp.StatusCode, calls.Load())
	}
	dying.Close()
	resp, body := do(t, "GET", ams.url+"/", nil, nil)
	if resp.StatusCode != 200 || body != "scl-1" {
		t.Errorf("dead instance: %d %q, want the nearest region", resp.StatusCode, body)
	}
	if ids := ams.edge.inst.healthyIDs(); len(ids) != 0 {
		t.Errorf("dead instance still healthy: %v", ids)
	}
}

func TestStreamingAndUpgrade(t *testing.T) {
	in, _ := app(t, "scl-1", func(w http.ResponseWriter, r *http.Request, b []byte) {
		if r.Header.Get("Upgrade") == "echo" {
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Upgrade", "echo")
			w.WriteHeader(http.StatusSwitchingProtocols)
			c, rw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return
			}
			defer c.Close()
			line, _ := rw.ReadString('\n')
			rw.WriteString("echo: " + line)
			rw.Flush()
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond)
		}
	})
	scl := startEdge(t, "scl", "scl", []Instance{in}, nil)
	resp, err := http.Get(scl.url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	first, _ := br.ReadString('\n')
	if first != "data: 0\n" {
		t.Errorf("first event %q", first)
	}
	resp.Body.Close()

	c, err := net.Dial("tcp", strings.TrimPrefix(scl.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	cr := bufio.NewReader(c)
	r2, err := http.ReadResponse(cr, nil)
	if err != nil || r2.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", r2, err)
	}
	fmt.Fprintf(c, "hi\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, _ := cr.ReadString('\n'); line != "echo: hi\n" {
		t.Errorf("upgraded connection: %q", line)
	}
}

func TestInstanceRegistration(t *testing.T) {
	scl := startEdge(t, "scl", "scl", nil, nil)
	h := scl.edge.AdminHandler()
	post := func(body string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("POST", "/instances", strings.NewReader(body)))
		return rec.Code
	}
	in, _ := app(t, "scl-9", func(w http.ResponseWriter, r *http.Request, b []byte) { io.WriteString(w, "nine") })
	if c := post(fmt.Sprintf(`{"id":"scl-9","addr":%q,"capacity":4}`, in.Addr)); c != 200 {
		t.Fatalf("register: %d", c)
	}
	for _, bad := range []string{`{`, `{"id":"a b","addr":"127.0.0.1:1"}`, `{"id":"x","addr":"nohost"}`, `{"id":"x","addr":"127.0.0.1:1","capacity":-1}`, `{"id":"x","addr":"127.0.0.1:1","extra":1}`} {
		if c := post(bad); c != 400 {
			t.Errorf("register %s: %d, want 400", bad, c)
		}
	}
	if _, body := do(t, "GET", scl.url+"/", nil, nil); body != "nine" {
		t.Errorf("registered instance not used: %q", body)
	}
	// Without heartbeats it expires.
	deadline := time.Now().Add(RegistrationTTL + 3*time.Second)
	for len(scl.edge.inst.healthyIDs()) > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if ids := scl.edge.inst.healthyIDs(); len(ids) != 0 {
		t.Errorf("registration did not expire: %v", ids)
	}
}

func TestTokens(t *testing.T) {
	k := deriveKeys(testSecret).token
	now := time.Now()
	tok := token{Minted: now}
	tok.Pos.Timeline, tok.Pos.LSN = 3, 0x1_0000_0060
	v := encodeToken(k, tok)
	got, ok := decodeToken(k, v, now)
	if !ok || got.Pos != tok.Pos {
		t.Fatalf("round trip %q: %+v %v", v, got, ok)
	}
	for _, bad := range []string{"", "garbage", v + "x", strings.Replace(v, "3/", "4/", 1), encodeToken(deriveKeys("other-secret-xxxxxxxxxx").token, tok),
		encodeToken(k, token{Pos: tok.Pos, Minted: now.Add(-TokenMaxAge - time.Second)}), strings.Repeat("a~", 100)} {
		if _, ok := decodeToken(k, bad, now); ok {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestStickyToken(t *testing.T) {
	k := deriveKeys(testSecret).token
	now := time.Now()
	v := encodeToken(k, stickyToken(now))
	tok, ok := decodeToken(k, v, now)
	if !ok {
		t.Fatalf("sticky token %q not accepted", v)
	}
	if tok.Pos.CoveredBy(1<<31, 1<<62) {
		t.Errorf("a replica covers the sticky token")
	}
	if _, ok := decodeToken(k, v, now.Add(stickyFor+time.Second)); ok {
		t.Errorf("sticky token still valid after %v", stickyFor)
	}
}

// TestAdminURLFor: the admin listener's own address, or the advertised
// host when it listens on every address.
func TestAdminURLFor(t *testing.T) {
	for _, c := range []struct{ advertise, listen, want string }{
		{"http://10.0.0.5:8080", "127.0.0.1:9090", "http://127.0.0.1:9090"},
		{"http://10.0.0.5:8080", "0.0.0.0:9090", "http://10.0.0.5:9090"},
		{"http://edge.example:8080", "[::]:9090", "http://edge.example:9090"},
		{"", "0.0.0.0:9090", ""},
	} {
		addr, err := net.ResolveTCPAddr("tcp", c.listen)
		if err != nil {
			t.Fatal(err)
		}
		if got := adminURLFor(c.advertise, addr); got != c.want {
			t.Errorf("adminURLFor(%q, %s) = %q, want %q", c.advertise, c.listen, got, c.want)
		}
	}
}
