package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/config"
	"github.com/petrel-db/petrel/internal/localworld"
)

// freeRange is a base port with 100 free ports after it, for `petrel up`:
// from 10000..19999, below testcluster.FreePort's range (20000..32767,
// which a cluster started later in the same test may take from) and far
// below the kernel's ephemeral ports (32768..60999 here), which any
// outgoing connection may take at any moment.
func freeRange(t *testing.T) int {
	t.Helper()
	for k := 0; k < 100; k++ {
		b := 10000 + ((os.Getpid()+k)%100)*100
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
	base := fmt.Sprint(freeRange(t))
	var cmd *exec.Cmd
	var exited chan error
	startUp := func() {
		cmd = exec.Command(binary(t), "up", "--dir", dir, "--regions", "scl=1,ord=1", "--base-port", base)
		cmd.Stdout, cmd.Stderr = &out, &errs
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited = make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
	}
	stopUp := func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}
	startUp()
	defer func() {
		stopUp()
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

	// `petrel secrets rotate` in the local world: generated passwords go
	// to secrets.env and cluster.json (never to the output), and the CLI,
	// the admin API and cluster.json's URLs work with them.
	before, err := config.LoadSecrets(filepath.Join(dir, localworld.SecretsFileName))
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"superuser", "operator"} {
		rot := exec.CommandContext(ctx, binary(t), "secrets", "rotate", kind, "--dir", dir)
		rot.Env = cleanEnv()
		b, err := rot.CombinedOutput()
		if err != nil {
			t.Fatalf("secrets rotate %s --dir: %v\n%s", kind, err, b)
		}
		t.Logf("secrets rotate %s --dir:\n%s", kind, b)
	}
	after, err := config.LoadSecrets(filepath.Join(dir, localworld.SecretsFileName))
	if err != nil {
		t.Fatal(err)
	}
	if after.Superuser == before.Superuser || after.Operator == before.Operator || after.Replication != before.Replication {
		t.Fatal("secrets.env does not hold the rotated passwords")
	}
	if st, _ := os.Stat(filepath.Join(dir, localworld.SecretsFileName)); st.Mode().Perm() != 0o600 {
		t.Fatalf("secrets.env mode %v", st.Mode())
	}
	// `petrel up` again, from the rewritten directory.
	stopUp()
	out = lockedBuffer{}
	startUp()
	waitFor(t, ctx, 2*time.Minute, "petrel up to start again", func() bool {
		return strings.Contains(out.String(), "Edges (")
	})
	cf, err = localworld.LoadClusterFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{cf.SuperuserDSN, cf.DatabaseURL} {
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatalf("cluster.json's %s after the rotation: %v", localworld.RedactDSN(u), err)
		}
		conn.Close(ctx)
	}
	if strings.Contains(cf.SuperuserDSN, before.Superuser) || strings.Contains(cf.DatabaseURL, before.Operator) {
		t.Fatal("cluster.json still holds an old password")
	}
	st := exec.CommandContext(ctx, binary(t), "status", "--dir", dir)
	st.Env = cleanEnv()
	if b, err := st.CombinedOutput(); err != nil {
		t.Fatalf("status --dir after the rotation: %v\n%s", err, b)
	}
	events := strings.TrimSuffix(cf.DashboardURL, "/dashboard/") + "/api/v1/events"
	if resp, body := b.do("GET", events, "", "Authorization", "Basic "+basicAuth("operator", after.Operator)); resp.StatusCode != 200 {
		t.Fatalf("admin API with the rotated operator password: %d %.100q", resp.StatusCode, body)
	}
	if resp, _ := b.do("GET", events, "", "Authorization", "Basic "+basicAuth("operator", before.Operator)); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("admin API with the old operator password: %d", resp.StatusCode)
	}
}

// cleanEnv is the environment without the cluster's passwords, so a
// command reads them from its secrets file.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "SU_PASSWORD", "REPL_PASSWORD", "OPERATOR_PASSWORD":
			continue
		}
		env = append(env, kv)
	}
	return env
}
