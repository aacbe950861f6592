package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/pki"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/testcluster"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestSecretsRotate rotates the replication, superuser and operator
// passwords of a running 3-node cluster (`petrel secrets rotate`) while a
// client writes through the leader proxy: no write fails, the leader and
// its timeline stay, the replicas keep streaming, a replica restarted
// afterwards with its stale secrets file streams again, the CA record
// opens only with the new superuser password, the admin API takes only
// the new operator password, and no member's Postgres log shows a refused
// password.
func TestSecretsRotate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	leader := startNodes(ctx, t, c, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"}, [2]string{"scl3", "scl"})
	before, err := c.Status(leader)
	if err != nil {
		t.Fatal(err)
	}
	oldSecrets := c.Secrets

	// An app's writer, through scl1's leader proxy, on its own role: the
	// rotations must not disturb it.
	if err := c.Exec(ctx, leader, `CREATE ROLE rotapp LOGIN PASSWORD 'rotapp-password-1';
		CREATE TABLE rot (id bigserial PRIMARY KEY, at timestamptz DEFAULT now());
		GRANT SELECT, INSERT ON rot TO rotapp; GRANT USAGE ON SEQUENCE rot_id_seq TO rotapp`); err != nil {
		t.Fatal(err)
	}
	dsn := fmt.Sprintf("postgres://rotapp:rotapp-password-1@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=5", c.Node("scl1").ProxyPort)
	var (
		writes   atomic.Int64
		errMu    sync.Mutex
		writeErr []string
	)
	wctx, stopWriter := context.WithCancel(ctx)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		var conn *pgx.Conn
		fail := func(err error) {
			errMu.Lock()
			writeErr = append(writeErr, err.Error())
			errMu.Unlock()
			if conn != nil {
				conn.Close(context.Background())
				conn = nil
			}
		}
		for wctx.Err() == nil {
			if conn == nil {
				var err error
				if conn, err = pgx.Connect(wctx, dsn); err != nil {
					if wctx.Err() == nil {
						fail(err)
					}
					time.Sleep(100 * time.Millisecond)
					continue
				}
			}
			ictx, icancel := context.WithTimeout(wctx, 20*time.Second)
			_, err := conn.Exec(ictx, "INSERT INTO rot DEFAULT VALUES")
			icancel()
			if err != nil {
				if wctx.Err() == nil {
					fail(err)
				}
				continue
			}
			writes.Add(1)
			time.Sleep(20 * time.Millisecond)
		}
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	if err := testcluster.WaitFor(ctx, "first writes", func() bool { return writes.Load() >= 5 }); err != nil {
		t.Fatal(err)
	}

	streaming := func(id string) bool {
		st, err := c.Status(id)
		return err == nil && st.Role == "replica" && st.Streaming
	}
	rotate := func(kind, pw string) {
		t.Helper()
		f := filepath.Join(c.Opts.Dir, "new-"+kind)
		if err := os.WriteFile(f, []byte(pw+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		out, errOut, err := petrelCLI(ctx, t, c, "secrets", "rotate", kind, "--password-file", f)
		if err != nil {
			t.Fatalf("secrets rotate %s: %v\n%s%s", kind, err, out, errOut)
		}
		t.Logf("secrets rotate %s: %v\n%s", kind, time.Since(start).Round(time.Millisecond), out)
		if strings.Contains(out+errOut, pw) {
			t.Fatalf("secrets rotate %s printed the new password", kind)
		}
		n := writes.Load()
		if err := testcluster.WaitFor(ctx, "writes after the rotation", func() bool { return writes.Load() >= n+5 }); err != nil {
			t.Fatal(err)
		}
	}
	newRepl, newSU, newOp := "repl-rotated-"+oldSecrets.Replication, "su-rotated-"+oldSecrets.Superuser, "op-rotated-"+oldSecrets.Operator
	rotate(store.SecretReplication, newRepl)
	rotate(store.SecretSuperuser, newSU)
	c.Secrets.Superuser = newSU // the test's own superuser connections from now on
	rotate(store.SecretOperator, newOp)

	// The etcd records hold no password in clear.
	etcd, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer etcd.Close()
	resp, err := etcd.Get(ctx, store.KeysFor(c.Opts.Name).Prefix(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		for _, pw := range []string{newRepl, newSU, newOp} {
			if strings.Contains(string(kv.Value), pw) {
				t.Errorf("%s holds a new password in clear", kv.Key)
			}
		}
	}
	// The CA and cluster secret are sealed under the new superuser password only.
	raw, _, err := store.ReadCA(ctx, etcd, c.Opts.Name)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := pki.Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stored.Unseal(oldSecrets.Superuser); err == nil {
		t.Error("the old superuser password still opens the stored CA")
	}
	if _, err := stored.Unseal(newSU); err != nil {
		t.Errorf("the new superuser password does not open the stored CA: %v", err)
	}

	// The admin API on every member: the new operator password, not the old.
	for _, id := range c.IDs() {
		url := c.Node(id).APIURL() + "/api/v1/events"
		if code := apiCall(ctx, t, c, "GET", url, "Basic "+basicAuth("operator", oldSecrets.Operator), "", nil); code != http.StatusUnauthorized {
			t.Errorf("%s: the old operator password got %d, want 401", id, code)
		}
		if code := apiCall(ctx, t, c, "GET", url, "Basic "+basicAuth("operator", newOp), "", nil); code != http.StatusOK {
			t.Errorf("%s: the new operator password got %d, want 200", id, code)
		}
	}

	// Every WAL receiver connects again, with the passfile its member
	// switched: cut the streams on the leader.
	if err := c.Exec(ctx, leader, "SELECT pg_terminate_backend(pid) FROM pg_stat_replication"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	for _, id := range c.IDs() {
		if id != leader {
			if err := testcluster.WaitFor(ctx, id+" streaming again", func() bool { return streaming(id) }); err != nil {
				t.Fatal(err)
			}
		}
	}

	// A replica restarted now, with the secrets file it started with (the
	// old passwords), streams again.
	replica := "scl2"
	if replica == leader {
		replica = "scl3"
	}
	if err := c.Stop(replica); err != nil {
		t.Fatal(err)
	}
	if err := c.StartNode(replica); err != nil {
		t.Fatal(err)
	}
	if err := testcluster.WaitFor(ctx, replica+" streaming after its restart", func() bool { return streaming(replica) }); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(c.Opts.Dir, replica+".log")); !strings.Contains(string(b), "using the rotated one from the store") {
		t.Errorf("%s did not warn that its secrets file is stale", replica)
	}
	if st, err := c.Status(replica); err != nil || !strings.Contains(strings.Join(st.Problems, "\n"), "secrets file: the replication password was rotated") {
		t.Errorf("%s's /status does not say its secrets file is stale: %v %v", replica, st.Problems, err)
	}
	n := writes.Load()
	if err := testcluster.WaitFor(ctx, "writes after the restart", func() bool { return writes.Load() >= n+5 }); err != nil {
		t.Fatal(err)
	}
	stopWriter()
	<-writerDone

	errMu.Lock()
	if len(writeErr) > 0 {
		t.Errorf("%d write errors, first: %s", len(writeErr), writeErr[0])
	}
	errMu.Unlock()
	t.Logf("%d writes, none failed", writes.Load())

	// No failover: the same leader on the same timeline; every replica streams.
	after, err := c.Status(leader)
	if err != nil {
		t.Fatal(err)
	}
	if after.Role != "primary" || after.Timeline != before.Timeline {
		t.Errorf("leader %s: role %s timeline %d, before primary on %d", leader, after.Role, after.Timeline, before.Timeline)
	}
	if l, err := c.WaitLeader(ctx, ""); err != nil || l != leader {
		t.Errorf("leader now %q (%v), was %s", l, err, leader)
	}
	for _, id := range c.IDs() {
		if id != leader && !streaming(id) {
			t.Errorf("%s is not streaming", id)
		}
	}

	// No member's Postgres refused a password (checked before the test's
	// own attempt with the old one below).
	for _, id := range c.IDs() {
		b, err := os.ReadFile(filepath.Join(c.Node(id).DataDir, "postgres.log"))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "password authentication failed") {
				t.Errorf("%s's postgres: %s", id, l)
			}
		}
	}

	// The superuser: the old password is refused, the new one accepted.
	if conn, err := pgx.Connect(ctx, strings.Replace(c.DSN(leader), newSU, oldSecrets.Superuser, 1)); err == nil {
		conn.Close(ctx)
		t.Error("the old superuser password is still accepted")
	} else if !strings.Contains(err.Error(), "28P01") {
		t.Errorf("the old superuser password: %v, want SQLSTATE 28P01", err)
	}
	if err := c.Exec(ctx, leader, "SELECT 1"); err != nil {
		t.Errorf("the new superuser password: %v", err)
	}

	// An app's own password goes through `petrel users password`; petrel's
	// own roles are refused there.
	f := filepath.Join(c.Opts.Dir, "rotapp-new")
	if err := os.WriteFile(f, []byte("rotapp-password-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, err := petrelCLI(ctx, t, c, "users", "password", "rotapp", "--password-file", f); err != nil {
		t.Fatalf("users password: %v\n%s%s", err, out, errOut)
	}
	if _, errOut, err := petrelCLI(ctx, t, c, "users", "password", "replicator", "--password-file", f); err == nil {
		t.Error("users password changed replicator's password")
	} else if !strings.Contains(errOut, "secrets rotate") {
		t.Errorf("users password replicator: %s", errOut)
	}
	if conn, err := pgx.Connect(ctx, dsn); err == nil {
		conn.Close(ctx)
		t.Error("rotapp's old password is still accepted")
	}
	conn, err := pgx.Connect(ctx, strings.Replace(dsn, "rotapp-password-1", "rotapp-password-2", 1))
	if err != nil {
		t.Fatalf("rotapp's new password: %v", err)
	}
	conn.Close(ctx)

	// One rotation of a kind at a time: a running one is not replaced.
	_, rev, err := store.ReadRotation(ctx, etcd, c.Opts.Name, store.SecretOperator)
	if err != nil {
		t.Fatal(err)
	}
	running := store.SecretRotation{ID: "0123456789abcdef", Kind: store.SecretOperator, Phase: store.RotationPublish, Sealed: []byte("not sealed"),
		By: "another operator", StartedAt: time.Now().UTC(), UpdatedAt: time.Now().UTC()}
	if _, err := store.PutRotation(ctx, etcd, c.Opts.Name, running, rev, nil, 0); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := petrelCLI(ctx, t, c, "secrets", "rotate", store.SecretOperator, "--password-file", f); err == nil || !strings.Contains(errOut, "under way") {
		t.Errorf("a rotation started over a running one: %v %s", err, errOut)
	}
}
