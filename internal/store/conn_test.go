package store_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrel-db/petrel/internal/store"
	"github.com/petrel-db/petrel/internal/testcluster"
)

// noHang is how long a failed connection may take to say so: the
// connect timeout and the endpoint probes, with room for a slow machine.
// It is the "never a hang" promise, not a speed figure.
const noHang = 20 * time.Second

// TestConnectErrors runs a real etcd (Debian's etcd-server) with TLS,
// client certificates and authentication, and checks that each way of
// getting the connection wrong fails within seconds with an error of the
// right class that names what failed.
func TestConnectErrors(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	ec, err := testcluster.StartEtcdCluster(ctx, testcluster.EtcdOptions{Dir: filepath.Join(dir, "etcd"), Members: 1, Auth: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()

	// A second CA, as a host given the wrong files would have.
	other, err := testcluster.StartEtcdCluster(ctx, testcluster.EtcdOptions{Dir: filepath.Join(dir, "other"), Members: 1})
	if err != nil {
		t.Fatal(err)
	}
	other.Close()

	good := ec.Conn()
	closed, err := testcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		mod   func(*store.Conn)
		class error  // nil: connects
		says  string // in the message
	}{
		{"ok", func(*store.Conn) {}, nil, ""},
		{"wrong-ca", func(c *store.Conn) { c.CAFile = other.CAFile }, store.ErrTLS, "not signed by etcd_ca_file"},
		{"client-cert-of-another-ca", func(c *store.Conn) { c.CertFile, c.KeyFile = other.CertFile, other.KeyFile }, store.ErrTLS, "refused our client certificate"},
		{"no-client-cert", func(c *store.Conn) { c.CertFile, c.KeyFile = "", "" }, store.ErrTLS, "refused our client certificate"},
		{"wrong-password", func(c *store.Conn) { c.Password = "not-" + c.Password }, store.ErrAuth, `refused user "petrel"`},
		{"wrong-user", func(c *store.Conn) { c.Username = "nobody" }, store.ErrAuth, `refused user "nobody"`},
		{"no-login", func(c *store.Conn) { c.Username, c.Password = "", "" }, store.ErrAuth, "etcd_username"},
		{"unreachable", func(c *store.Conn) { c.Endpoints = []string{fmt.Sprintf("https://127.0.0.1:%d", closed)} }, store.ErrUnreachable, "connection refused"},
		{"plain-http-to-tls", func(c *store.Conn) {
			c.Endpoints = []string{strings.Replace(c.Endpoints[0], "https://", "http://", 1)}
			c.CAFile, c.CertFile, c.KeyFile = "", "", ""
		}, store.ErrTLS, "serves TLS: write https://"},
		{"missing-ca-file", func(c *store.Conn) { c.CAFile = filepath.Join(dir, "nope.pem") }, store.ErrConfig, "etcd_ca_file"},
		{"cert-without-key", func(c *store.Conn) { c.KeyFile = "" }, store.ErrConfig, "go together"},
		{"user-without-password", func(c *store.Conn) { c.Password = "" }, store.ErrConfig, "ETCD_PASSWORD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := good
			conn.Endpoints = append([]string(nil), good.Endpoints...)
			tc.mod(&conn)
			start := time.Now()
			cli, err := store.Connect(ctx, conn, "petrel")
			took := time.Since(start)
			if took > noHang {
				t.Errorf("took %v", took)
			}
			if tc.class == nil {
				if err != nil {
					t.Fatal(err)
				}
				cli.Close()
				return
			}
			if err == nil {
				cli.Close()
				t.Fatalf("connected; want %v", tc.class)
			}
			if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got %v (after %v); want %v saying %q", err, took, tc.class, tc.says)
			}
			if c := conn.Password; c != "" && strings.Contains(err.Error(), c) {
				t.Fatalf("the error shows the password: %v", err)
			}
			t.Logf("%v: %v", took.Round(time.Millisecond), err)
		})
	}

	// The agent's Dial: a wrong password fails it at once; an unreachable
	// etcd with a login is retried until the caller gives up.
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
	bad := good
	bad.Password = "wrong"
	if _, err := store.Dial(ctx, bad, "petrel", 3*time.Second, log); !errors.Is(err, store.ErrAuth) {
		t.Fatalf("Dial with a wrong password: %v", err)
	}
	gone := good
	gone.Endpoints = []string{fmt.Sprintf("https://127.0.0.1:%d", closed)}
	dctx, dcancel := context.WithTimeout(ctx, 4*time.Second)
	defer dcancel()
	if _, err := store.Dial(dctx, gone, "petrel", 3*time.Second, log); !errors.Is(err, store.ErrUnreachable) {
		t.Fatalf("Dial of an unreachable etcd: %v", err)
	}
	st, err := store.Dial(ctx, good, "petrel", 3*time.Second, log)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
}
