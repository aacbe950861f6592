package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-db/petrel/internal/api/apitest"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/pki"
	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// TestStoreNotTrusted: whoever can write etcd cannot send the proxy's
// clients elsewhere, swap the CA under the CLI or the nodes, or exhaust a
// node's memory through the sealed key's parameters.
func TestStoreNotTrusted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	leader := startNodes(ctx, t, c, [2]string{"scl1", "scl"}, [2]string{"scl2", "scl"})
	other := "scl1"
	if leader == "scl1" {
		other = "scl2"
	}
	cli, err := c.EtcdClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ca, err := c.UnsealCA(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("forged-member-record", func(t *testing.T) {
		// What the forged record points at: a "Postgres" that counts the
		// probe connections routed to it, and an API that says primary.
		pgLn, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer pgLn.Close()
		var routed atomic.Int64
		go func() {
			for {
				conn, err := pgLn.Accept()
				if err != nil {
					return
				}
				go func() {
					defer conn.Close()
					_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
					b := make([]byte, 512)
					n, _ := conn.Read(b)
					// Only our probes count (the replica's walreceiver, which
					// follows the record too, opens with an SSLRequest).
					if bytes.Contains(b[:n], []byte("trust-probe")) {
						routed.Add(1)
					}
				}()
			}
		}()
		primary := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/role" {
				_, _ = io.WriteString(w, model.RolePrimary)
				return
			}
			_ = json.NewEncoder(w).Encode(model.Status{ID: leader, Role: model.RolePrimary})
		})
		plain := httptest.NewServer(primary)
		defer plain.Close()
		selfSigned := apitest.NewCA(t, c.Opts.Name).Server(t, leader, primary) // names the leader, another CA
		wrongNode := (&apitest.CA{CA: ca, Cluster: c.Opts.Name}).Server(t, other, primary)

		key := store.ClusterKey(c.Opts.Name, "members", leader)
		resp, err := cli.Get(ctx, key)
		if err != nil || len(resp.Kvs) == 0 {
			t.Fatalf("reading %s: %v", key, err)
		}
		orig := resp.Kvs[0]
		defer func() {
			if _, err := cli.Put(context.Background(), key, string(orig.Value), clientv3.WithLease(clientv3.LeaseID(orig.Lease))); err != nil {
				t.Errorf("restoring %s: %v", key, err)
			}
		}()
		probe := strings.Replace(c.ProxyDSN(other), "connect_timeout=10", "connect_timeout=2&application_name=trust-probe", 1)
		for name, impostor := range map[string]string{
			"plain http":                 plain.URL,
			"another CA's certificate":   selfSigned.URL,
			"another node's certificate": wrongNode.URL,
			"the leader's own API":       "", // genuine, but the record pairs it with another Postgres
		} {
			var m model.Member
			if err := json.Unmarshal(orig.Value, &m); err != nil {
				t.Fatal(err)
			}
			if impostor != "" {
				m.APIURL = impostor
			}
			m.PostgresAddr = pgLn.Addr().String()
			b, _ := json.Marshal(m)
			if _, err := cli.Put(ctx, key, string(b), clientv3.WithLease(clientv3.LeaseID(orig.Lease))); err != nil {
				t.Fatal(err)
			}
			// Clients keep trying through the other member's proxy while
			// the forged record is the store's word.
			deadline := time.Now().Add(3 * time.Second)
			for time.Now().Before(deadline) {
				cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
				if conn, err := pgx.Connect(cctx, probe); err == nil {
					conn.Close(cctx)
				}
				ccancel()
				time.Sleep(100 * time.Millisecond)
			}
			if n := routed.Load(); n > 0 {
				t.Fatalf("%s: the proxy routed %d connections to the impostor", name, n)
			}
		}
		// Restored, the genuine leader is reached through the proxy again.
		if _, err := cli.Put(ctx, key, string(orig.Value), clientv3.WithLease(clientv3.LeaseID(orig.Lease))); err != nil {
			t.Fatal(err)
		}
		if err := testcluster.WaitFor(ctx, "a write through the proxy", func() bool {
			return execProxy(ctx, c, other, "SELECT 1") == nil
		}); err != nil {
			t.Fatal(err)
		}
	})

	status := func(pin string) (string, error) {
		args := []string{"status", "--etcd", strings.Join(c.EtcdEndpoints(), ","), "--cluster", c.Opts.Name}
		if pin != "" {
			args = append(args, "--ca-fingerprint", pin)
		}
		cmd := exec.CommandContext(ctx, binary(t), args...)
		cmd.Env = envWithout(os.Environ(), "PETREL_CA_FINGERPRINT")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	caKey := store.ClusterKey(c.Opts.Name, store.KeyCA)
	resp, err := cli.Get(ctx, caKey)
	if err != nil || len(resp.Kvs) == 0 {
		t.Fatalf("reading the CA: %v", err)
	}
	origCA := resp.Kvs[0].Value
	restoreCA := func() {
		if _, err := cli.Put(context.Background(), caKey, string(origCA)); err != nil {
			t.Errorf("restoring the CA: %v", err)
		}
	}

	t.Run("cli-pins-the-ca", func(t *testing.T) {
		if out, err := status(c.CAFingerprint); err != nil || !strings.Contains(out, leader) {
			t.Fatalf("status with the right pin: %v\n%s", err, out)
		}
		otherCA, stored, err := pki.NewCA(c.Opts.Name, c.Secrets.Superuser)
		if err != nil {
			t.Fatal(err)
		}
		wrong, _ := pki.Fingerprint(otherCA.CertPEM)
		if out, err := status(wrong); err == nil || !strings.Contains(out, "does not match the pinned fingerprint") {
			t.Fatalf("status with another CA's pin: %v\n%s", err, out)
		}
		if out, err := status(""); err == nil || !strings.Contains(out, "no CA fingerprint pinned") {
			t.Fatalf("status with no pin: %v\n%s", err, out)
		}
		// An etcd writer swaps the CA: the CLI refuses it, and so does a
		// restarted node, which keeps its own certificates.
		defer restoreCA()
		if _, err := cli.Put(ctx, caKey, string(stored.Encode())); err != nil {
			t.Fatal(err)
		}
		if out, err := status(c.CAFingerprint); err == nil || !strings.Contains(out, "does not match the pinned fingerprint") {
			t.Fatalf("status after the CA was swapped: %v\n%s", err, out)
		}
		if out, errOut, err := petrelCLI(ctx, t, c, "config", "show"); err == nil || !strings.Contains(errOut, "does not match the pinned fingerprint") {
			t.Fatalf("config show after the CA was swapped: %v\n%s%s", err, out, errOut)
		}
		if err := c.Stop(other); err != nil {
			t.Fatal(err)
		}
		if err := c.StartNode(other); err != nil {
			t.Fatal(err)
		}
		if err := testcluster.WaitFor(ctx, other+" refusing the swapped CA and streaming", func() bool {
			st, err := c.Status(other)
			return err == nil && st.Streaming && strings.Contains(strings.Join(st.Problems, ";"), "refusing the cluster CA in the store")
		}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("kdf-bounds", func(t *testing.T) {
		// The genuine certificate (the pin matches) with a derivation cost
		// that would take 4 TiB: a fresh node must refuse it, not die.
		st, err := pki.Decode(origCA)
		if err != nil {
			t.Fatal(err)
		}
		st.Key.MemKiB = 1<<32 - 1
		defer restoreCA()
		if _, err := cli.Put(ctx, caKey, string(st.Encode())); err != nil {
			t.Fatal(err)
		}
		if _, err := c.DefineNode("scl3", "scl"); err != nil {
			t.Fatal(err)
		}
		if err := c.StartNode("scl3"); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Stop("scl3") }()
		logPath := filepath.Join(c.Opts.Dir, "scl3.log")
		if err := testcluster.WaitFor(ctx, "scl3 refusing the key derivation parameters", func() bool {
			b, _ := os.ReadFile(logPath)
			return bytes.Contains(b, []byte("stored key derivation parameters refused"))
		}); err != nil {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("%v\n%s", err, b)
		}
		time.Sleep(time.Second)
		if !c.Running("scl3") {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("scl3 died on the forged parameters:\n%s", b)
		}
	})
}

func envWithout(env []string, name string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, name+"=") {
			out = append(out, e)
		}
	}
	return out
}
