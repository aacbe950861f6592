package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/localworld"
)

// freeRange finds a base port whose 100 ports are free, below the
// ephemeral range.
func freeRange(t *testing.T) int {
	t.Helper()
	for k := 0; k < 60; k++ {
		b := 30000 + ((os.Getpid()+k)%60)*100
		free := true
		for p := b; p < b+100 && free; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				free = false
				break
			}
			l.Close()
		}
		if free {
			return b
		}
	}
	t.Fatal("no free port range")
	return 0
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestUpServesDemo runs `petrel up` as users do (the default demo app,
// an edge per region, the latency world) and uses the demo from the
// replica region: the page is served there, a write is replayed in the
// primary region, and the writer reads it back in the replica region.
func TestUpServesDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test; skipped with -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dir := t.TempDir()
	var out, errs lockedBuffer
	cmd := exec.Command(binary(t), "up", "--dir", dir, "--regions", "scl=1,ord=1", "--base-port", fmt.Sprint(freeRange(t)))
	cmd.Stdout, cmd.Stderr = &out, &errs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			t.Logf("petrel up stdout:\n%s\nstderr (tail):\n%s", out.String(), lastLines(errs.String(), 40))
			for _, f := range []string{"edges/ord/edge.log", "apps/ord/app.log", "edges/scl/edge.log", "apps/scl/app.log"} {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				t.Logf("---- %s ----\n%s", f, lastLines(string(b), 30))
			}
		}
	}()
	waitFor(t, ctx, 3*time.Minute, "petrel up to print the edges", func() bool {
		return strings.Contains(out.String(), "Edges (")
	})
	cf, err := localworld.LoadClusterFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	var ord, scl string
	for _, e := range cf.Edges {
		switch e.Region {
		case "ord":
			ord = e.URL
		case "scl":
			scl = e.URL
		}
	}
	if ord == "" || scl == "" || !strings.Contains(out.String(), ord) {
		t.Fatalf("cluster.json edges %+v (printed: %v)", cf.Edges, strings.Contains(out.String(), ord))
	}
	// The dashboard: printed, in cluster.json, and served.
	if cf.DashboardURL == "" || !strings.Contains(out.String(), "Dashboard: "+cf.DashboardURL) {
		t.Fatalf("dashboard_url %q in cluster.json, printed: %v", cf.DashboardURL, strings.Contains(out.String(), "Dashboard: "))
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, localworld.CAFileName))
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t).trusting(caPEM)
	if resp, body := b.do("GET", cf.DashboardURL, ""); resp.StatusCode != 200 || !strings.Contains(body, "app.js") {
		t.Fatalf("GET %s: %d %.100q", cf.DashboardURL, resp.StatusCode, body)
	}
	waitFor(t, ctx, time.Minute, "the demo page in ord", func() bool {
		resp, body := b.do("GET", ord+"/", "")
		return resp.StatusCode == 200 && strings.Contains(body, "region <b>ord</b>")
	})
	waitFor(t, ctx, time.Minute, "the demo in ord to have its table", func() bool {
		resp, _ := b.do("GET", ord+"/api/notes", "")
		return resp.StatusCode == 200
	})
	resp, body := b.do("POST", ord+"/api/notes", `{"body":"hello from ord"}`)
	if resp.StatusCode != 201 || resp.Header.Get("Fly-Region") != "scl" {
		t.Fatalf("POST in ord: %d %q region %q", resp.StatusCode, body, resp.Header.Get("Fly-Region"))
	}
	bodies, region := b.notes(ord)
	if !slices.Contains(bodies, "hello from ord") {
		t.Fatalf("read after write in ord (served in %s): %v", region, bodies)
	}
	// The same page, replayed to scl by the tab's fly-replay.
	resp, body = b.do("GET", ord+"/?region=scl", "")
	if resp.StatusCode != 200 || resp.Header.Get("Fly-Region") != "scl" || !strings.Contains(body, "hello from ord") {
		t.Fatalf("tab scl from ord's edge: %d region %q", resp.StatusCode, resp.Header.Get("Fly-Region"))
	}
}
