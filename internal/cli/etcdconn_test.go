package cli

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/petrel-db/petrel/internal/store"
	"github.com/spf13/pflag"
)

// TestClusterFlagsConfig: --config reads a node's TOML (cluster, etcd
// endpoints, TLS files, user, and ETCD_PASSWORD from its secrets file);
// flags the user set win over it.
func TestClusterFlagsConfig(t *testing.T) {
	dir := t.TempDir()
	secrets := filepath.Join(dir, "secrets.env")
	if err := os.WriteFile(secrets, []byte("SU_PASSWORD=su\nETCD_PASSWORD=etcd-pw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	toml := filepath.Join(dir, "petrel.toml")
	if err := os.WriteFile(toml, []byte(`cluster = "main"
id = "scl1"
etcd = ["https://10.0.0.2:2379", "https://10.0.0.3:2379"]
etcd_ca_file = "/etc/petrel/etcd-ca.pem"
etcd_cert_file = "/etc/petrel/etcd.pem"
etcd_key_file = "/etc/petrel/etcd-key.pem"
etcd_username = "petrel"
secrets_file = "`+secrets+`"
`), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ETCD_PASSWORD", "")
	parse := func(args ...string) clusterTarget {
		t.Helper()
		var cf clusterFlags
		fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
		cf.bind(fs)
		if err := fs.Parse(args); err != nil {
			t.Fatal(err)
		}
		tg, err := cf.target()
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	want := store.Conn{
		Endpoints: []string{"https://10.0.0.2:2379", "https://10.0.0.3:2379"},
		CAFile:    "/etc/petrel/etcd-ca.pem", CertFile: "/etc/petrel/etcd.pem", KeyFile: "/etc/petrel/etcd-key.pem",
		Username: "petrel", Password: "etcd-pw",
	}
	tg := parse("--config", toml)
	if !reflect.DeepEqual(tg.conn, want) || tg.cluster != "main" || tg.secrets != secrets || tg.cf != nil {
		t.Fatalf("--config: %+v %q %q, want %+v", tg.conn, tg.cluster, tg.secrets, want)
	}
	tg = parse("--config", toml, "--etcd", "https://e:2379", "--cluster", "other", "--etcd-username", "ops")
	want.Endpoints, want.Username = []string{"https://e:2379"}, "ops"
	if !reflect.DeepEqual(tg.conn, want) || tg.cluster != "other" {
		t.Fatalf("--config with flags: %+v %q, want %+v", tg.conn, tg.cluster, want)
	}
	t.Setenv("ETCD_PASSWORD", "from-env")
	if tg = parse("--config", toml); tg.conn.Password != "from-env" {
		t.Fatalf("ETCD_PASSWORD in the environment should win: %q", tg.conn.Password)
	}
}
