package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/testcluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestDashboard drives a replica's dashboard in a real headless chromium:
// the page shows every member with its role; the admin API refuses
// requests without or with forged credentials (and the leader stays); the
// switchover button (operator password in the page's dialog) moves the
// leader and the open page shows it without a reload; a screenshot is
// kept. Then a crash failover, and the event log names the old and the new
// leader and why. One cluster for all of it.
func TestDashboard(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal("chromium is needed for the dashboard test: run scripts/install-deps.sh (apt-get install chromium)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	leader := startNodes(ctx, t, c, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"}, [2]string{"ord1", "ord"})
	waitSync(ctx, t, c, leader)
	target := "scl2"
	if leader == "scl2" {
		target = "scl1"
	}
	page := c.Node("ord1").APIURL() // a replica's page shows the whole cluster

	// The admin API: no credentials, forged ones: 401, and no switchover.
	forged := []string{"", "Basic " + basicAuth("operator", "not-the-password"), "Bearer v1.9999999999.0123456789abcdef", "Bearer " + c.Secrets.Operator}
	for _, auth := range forged {
		req, _ := http.NewRequestWithContext(ctx, "POST", page+"/api/v1/switchover", strings.NewReader(`{"to":"`+target+`"}`))
		req.Header.Set("Content-Type", "application/json")
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := c.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("switchover with %q: %s, want 401", auth, resp.Status)
		}
	}
	time.Sleep(time.Second) // a switchover, had one been requested, would be under way
	if l, err := c.WaitLeader(ctx, ""); err != nil || l != leader {
		t.Fatalf("after refused requests the leader is %q (%v), want %s", l, err, leader)
	}

	userData := t.TempDir()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium), chromedp.UserDataDir(userData),
		chromedp.Flag("headless", true), chromedp.Flag("no-sandbox", true), chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.WindowSize(1400, 1000),
		// The page is served with the cluster CA's certificate, which this
		// throwaway browser profile does not hold.
		chromedp.Flag("ignore-certificate-errors", true),
	)
	actx, acancel := chromedp.NewExecAllocator(ctx, opts...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx)
	defer bcancel()

	role := func(id, role string) chromedp.CSS {
		return chromedp.CSS(fmt.Sprintf(`tr[data-member=%q][data-role=%q]`, id, role))
	}
	if err := chromedp.Do(bctx, chromedp.Navigate(page+"/dashboard/"), chromedp.WaitVisible(chromedp.CSS(`#conn.on`))); err != nil {
		t.Fatalf("loading the dashboard: %v", err)
	}
	for _, id := range c.IDs() {
		want := model.RoleReplica
		if id == leader {
			want = model.RolePrimary
		}
		if err := chromedp.Do(bctx, chromedp.WaitVisible(role(id, want))); err != nil {
			t.Fatalf("the page does not show %s as %s: %v", id, want, err)
		}
	}
	regions, err := chromedp.Run(bctx, chromedp.Evaluate[int](`document.querySelectorAll(".region").length`))
	if err != nil || regions != 2 {
		t.Fatalf("the page shows %d regions (%v), want 2", regions, err)
	}

	// The switchover button, confirmed with the operator's password. The
	// page is never reloaded: the change must come over the stream.
	start := time.Now()
	err = chromedp.Do(bctx,
		chromedp.SetValue(chromedp.CSS(`#target`), target),
		chromedp.Click(chromedp.CSS(`#switchover`)),
		chromedp.WaitVisible(chromedp.CSS(`#login`)),
		chromedp.SendKeys(chromedp.CSS(`#password`), c.Secrets.Operator),
		chromedp.Click(chromedp.CSS(`#login-ok`)),
		chromedp.WaitVisible(role(target, model.RolePrimary)),
		chromedp.WaitVisible(role(leader, model.RoleReplica)),
	)
	if err != nil {
		status, _ := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#op-status`)))
		t.Fatalf("switchover from the page (status %q): %v", status, err)
	}
	t.Logf("the page showed %s as primary %.2fs after the click", target, time.Since(start).Seconds())
	if err := chromedp.Do(bctx, chromedp.WaitVisible(chromedp.CSS(`tr[data-kind="switchover"]`))); err != nil {
		t.Fatalf("the switchover event is not on the page: %v", err)
	}
	shot, err := chromedp.Run(bctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("PETREL_TEST_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	}
	shotPath := filepath.Join(dir, "dashboard-switchover.png")
	if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shotPath, len(shot))

	cli, err := clientv3.New(clientv3.Config{Endpoints: c.EtcdEndpoints(), DialTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	// The admin API with a token: attach an app (its URL works), then a
	// rolling restart, followed until done.
	var tok struct{ Token string }
	if code := apiCall(ctx, t, c, "POST", page+"/api/v1/token", "Basic "+basicAuth("operator", c.Secrets.Operator), "", &tok); code != 200 || tok.Token == "" {
		t.Fatalf("token: %d", code)
	}
	bearer := "Bearer " + tok.Token
	var att struct {
		ProxyURL   string            `json:"proxy_url"`
		RegionURLs map[string]string `json:"region_urls"`
	}
	if code := apiCall(ctx, t, c, "POST", page+"/api/v1/apps", bearer, `{"app":"dash-app"}`, &att); code != http.StatusCreated || att.ProxyURL == "" || att.RegionURLs["ord"] == "" {
		t.Fatalf("attach through the API: %d %+v", code, att)
	}
	conn, err := pgx.Connect(ctx, att.ProxyURL) // through the leader proxy: the leader, where the user was created
	if err != nil {
		t.Fatalf("connecting with the attached app's URL: %v", err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE notes (body text)"); err != nil {
		t.Fatalf("the attached app creating a table in its database: %v", err)
	}
	conn.Close(ctx)
	checkAdminUsers(ctx, t, c, page, bearer)
	if err := c.WaitRole(ctx, leader, model.RoleReplica); err != nil {
		t.Fatal(err)
	}
	waitSync(ctx, t, c, target)
	restartStart := time.Now()
	if code := apiCall(ctx, t, c, "POST", page+"/api/v1/restart", bearer, "", nil); code != http.StatusAccepted {
		t.Fatalf("rolling restart: %d", code)
	}
	var op struct {
		State, Error string
		Log          []string
	}
	err = testcluster.WaitFor(ctx, "the rolling restart", func() bool {
		apiCall(ctx, t, c, "GET", page+"/api/v1/operation", bearer, "", &op)
		return op.State != "running"
	})
	if err != nil || op.State != "done" {
		t.Fatalf("rolling restart: %v %+v", err, op)
	}
	t.Logf("rolling restart through the API: %.1fs", time.Since(restartStart).Seconds())
	restarted := map[string]bool{}
	evs, _, err := store.ListEvents(ctx, cli, c.Opts.Name, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Kind == model.EventRestart && ev.Reason == "rolling restart" {
			restarted[ev.Node] = true
		}
	}
	for _, id := range c.IDs() {
		if id != target && !restarted[id] {
			t.Errorf("no restart event of replica %s (restarted: %v)", id, restarted)
		}
	}
	target, err = c.WaitLeader(ctx, target) // the restart ended with a switchover
	if err != nil {
		t.Fatal(err)
	}

	// A crash failover: the event names the old and new leader and why.
	for _, id := range c.IDs() {
		if id != target {
			if err := c.WaitRole(ctx, id, model.RoleReplica); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitSync(ctx, t, c, target)
	if err := c.Kill(target); err != nil {
		t.Fatal(err)
	}
	newLeader, err := c.WaitLeader(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	var failover *model.Event
	err = testcluster.WaitFor(ctx, "the failover event", func() bool {
		evs, _, err := store.ListEvents(ctx, cli, c.Opts.Name, 0, 0)
		if err != nil {
			return false
		}
		for _, ev := range evs {
			if ev.Kind == model.EventFailover && ev.To == newLeader {
				failover = &ev
			}
		}
		return failover != nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if failover.From != target || failover.Node != newLeader || failover.Reason == "" || failover.Timeline == 0 || failover.LSN == "" {
		t.Fatalf("failover event %+v: want from %s to %s with a reason, timeline and LSN", failover, target, newLeader)
	}
	t.Logf("failover event: %+v", *failover)
	// The page still follows (its node, ord1, is alive) and shows it.
	if err := chromedp.Do(bctx, chromedp.WaitVisible(chromedp.CSS(fmt.Sprintf(`tr[data-kind="failover"][data-event="%d"]`, failover.ID)))); err != nil {
		t.Fatalf("the failover event is not on the page: %v", err)
	}
}

// apiCall makes an admin API request and decodes its JSON answer into v.
func apiCall(ctx context.Context, t *testing.T, c *testcluster.Cluster, method, url, auth, body string, v any) int {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	req.Header.Set("Authorization", auth)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	client := c.HTTPClient() // the API's TLS, against the cluster CA
	client.Timeout = time.Minute
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	if v != nil {
		_ = json.NewDecoder(resp.Body).Decode(v)
	}
	return resp.StatusCode
}

func basicAuth(user, pass string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

// checkAdminUsers drives the admin API's users, databases and detach on
// the real cluster: what `petrel users`, `petrel db` and `petrel detach`
// do, through internal/ops as the operator.
func checkAdminUsers(ctx context.Context, t *testing.T, c *testcluster.Cluster, page, bearer string) {
	t.Helper()
	names := func(path, key string) map[string]bool {
		t.Helper()
		var out map[string][]struct{ Name string }
		if code := apiCall(ctx, t, c, "GET", page+path, bearer, "", &out); code != http.StatusOK {
			t.Fatalf("GET %s: %d", path, code)
		}
		m := map[string]bool{}
		for _, x := range out[key] {
			m[x.Name] = true
		}
		return m
	}
	if !names("/api/v1/users", "users")["dash_app"] || !names("/api/v1/databases", "databases")["dash_app"] {
		t.Fatal("the attached app's user or database is missing from the API's lists")
	}
	var u struct{ Name, Password string }
	if code := apiCall(ctx, t, c, "POST", page+"/api/v1/users", bearer, `{"name":"api_user"}`, &u); code != http.StatusCreated || u.Password == "" {
		t.Fatalf("creating a user: %d %+v", code, u)
	}
	if code := apiCall(ctx, t, c, "POST", page+"/api/v1/databases", bearer, `{"name":"api_db","owner":"api_user"}`, nil); code != http.StatusCreated {
		t.Fatalf("creating a database: %d", code)
	}
	// The new user logs in to its database with the password it was given.
	dsn := strings.Replace(c.ProxyDSN(c.IDs()[0]), "postgres:"+c.Secrets.Superuser+"@", "api_user:"+u.Password+"@", 1)
	dsn = strings.Replace(dsn, "/postgres?", "/api_db?", 1)
	uc, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("the API's new user connecting: %v", err)
	}
	uc.Close(ctx)
	if code := apiCall(ctx, t, c, "POST", page+"/api/v1/users", bearer, `{"name":"api_user"}`, nil); code != http.StatusConflict {
		t.Fatalf("creating an existing user: %d, want 409", code)
	}
	if code := apiCall(ctx, t, c, "DELETE", page+"/api/v1/users/api_user", bearer, "", nil); code != http.StatusOK {
		t.Fatalf("deleting a user: %d", code)
	}
	if code := apiCall(ctx, t, c, "DELETE", page+"/api/v1/apps/dash-app?drop_database=true", bearer, "", nil); code != http.StatusOK {
		t.Fatalf("detaching the app: %d", code)
	}
	users, dbs := names("/api/v1/users", "users"), names("/api/v1/databases", "databases")
	if users["dash_app"] || users["api_user"] || dbs["dash_app"] || !dbs["api_db"] {
		t.Fatalf("after delete and detach: users %v, databases %v", users, dbs)
	}
}
