package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/pgtest"
)

// pyApp is testdata/pyapp.py running as a child process.
type pyApp struct {
	url    string
	mu     sync.Mutex
	stderr bytes.Buffer
}

func (a *pyApp) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stderr.Write(p)
}

func (a *pyApp) log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stderr.String()
}

func startPyApp(t *testing.T, region, primary, dbURL string) *pyApp {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	a := &pyApp{url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	cmd := exec.Command("python3", filepath.Join(repoRoot(), "internal/e2e/testdata/pyapp.py"))
	cmd.Env = append(os.Environ(), fmt.Sprintf("PORT=%d", port), "FLY_REGION="+region, "PRIMARY_REGION="+primary, "DATABASE_URL="+dbURL)
	cmd.Stdout, cmd.Stderr = a, a
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("pyapp %s log:\n%s", region, a.log())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if code, _, _ := pyAppDo(t, "GET", a.url+"/healthz", ""); code == 200 {
			return a
		}
		if time.Now().After(deadline) {
			t.Fatalf("pyapp %s did not answer /healthz", region)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func pyAppDo(t *testing.T, method, url, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func pyAppItems(t *testing.T, a *pyApp) (int, []string) {
	t.Helper()
	code, _, body := pyAppDo(t, "GET", a.url+"/items", "")
	var items []string
	if code == 200 {
		if err := json.Unmarshal([]byte(body), &items); err != nil {
			t.Fatalf("GET /items: %q: %v", body, err)
		}
	}
	return code, items
}

// The Python app on a real primary and streaming replica (no edge: the
// test replays by hand): reads on the replica, a write there refused
// read-only and answered with fly-replay, the replayed write applied
// once in the primary region and then visible on the replica.
func TestPyAppRealPostgres(t *testing.T) {
	for _, bin := range []string{"python3", "psql"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s not installed: scripts/install-deps.sh (make test) installs it (Debian: python3, postgresql-client)", bin)
		}
	}
	primary := pgtest.Start(t)
	replica := pgtest.StartReplica(t, primary)

	ord := startPyApp(t, "ord", "scl", replica.URL())
	if code, _ := pyAppItems(t, ord); code != 503 {
		t.Errorf("GET /items on ord before the table: %d, want 503", code)
	}
	if code, h, _ := pyAppDo(t, "POST", ord.url+"/items", "early"); code != 409 || h.Get("fly-replay") != "region=scl" {
		t.Errorf("POST on ord before the table: %d %v, want a replay", code, h)
	}

	scl := startPyApp(t, "scl", "scl", primary.URL())
	waitItems := func(a *pyApp, want []string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			code, items := pyAppItems(t, a)
			if code == 200 && fmt.Sprint(items) == fmt.Sprint(want) && len(items) == len(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("items = %d %q, want %q", code, items, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitItems(ord, []string{})

	body := "it's \"quoted\"\n; DROP TABLE pyitems; -- ünïcødé :'body'"
	code, h, _ := pyAppDo(t, "POST", ord.url+"/items", body)
	if code != 409 || h.Get("fly-replay") != "region=scl" {
		t.Fatalf("POST on ord: %d %v, want 409 + fly-replay: region=scl", code, h)
	}
	// The edge would now replay the request in scl.
	code, _, resp := pyAppDo(t, "POST", scl.url+"/items", body)
	var created struct{ ID int }
	if json.Unmarshal([]byte(resp), &created); code != 201 || created.ID == 0 {
		t.Fatalf("replayed POST on scl: %d %q", code, resp)
	}
	waitItems(ord, []string{body})
	waitItems(scl, []string{body})

	// The fallback of a failed replay is not replayed again.
	req, _ := http.NewRequest("POST", ord.url+"/items", strings.NewReader("x"))
	req.Header.Set("fly-replay-failed", "region=scl;reason=timeout")
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != 503 || r.Header.Get("fly-replay") != "" {
		t.Errorf("fallback POST on ord: %v %v", r, err)
	} else {
		r.Body.Close()
	}

	// In the primary region a read-only database is an error, never a
	// replay (options= reaches psql as PGOPTIONS).
	ro := startPyApp(t, "scl", "scl", primary.URL()+"&options="+strings.ReplaceAll("-c default_transaction_read_only=on", " ", "%20"))
	if code, h, _ := pyAppDo(t, "POST", ro.url+"/items", "no"); code != 500 || h.Get("fly-replay") != "" {
		t.Errorf("POST on a read-only primary: %d %v, want 500 and no replay", code, h)
	}
	waitItems(scl, []string{body})

	for name, a := range map[string]*pyApp{"ord": ord, "scl": scl, "ro": ro} {
		if strings.Contains(a.log(), pgtest.Secrets.Superuser) || strings.Contains(a.log(), "postgres://") {
			t.Errorf("pyapp %s logged the database URL or password:\n%s", name, a.log())
		}
	}
}
