package localworld

import (
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrel-db/petrel/internal/config"
)

func TestRotateSecret(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, SecretsFileName), []byte("SU_PASSWORD=old-su\nREPL_PASSWORD=old-repl\nOPERATOR_PASSWORD=old-op\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cf := `{"cluster":"petrel","superuser_dsn":"postgres://postgres:old-su@127.0.0.1:1,127.0.0.1:2/postgres?connect_timeout=2",` +
		`"database_url":"postgres://operator:old-op@127.0.0.1:3/postgres","future_field":7}`
	if err := os.WriteFile(filepath.Join(dir, ClusterFileName), []byte(cf), 0o600); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"SU_PASSWORD": "n3w-su/pw@x", "OPERATOR_PASSWORD": "n3w-op", "REPL_PASSWORD": "n3w-repl"} {
		if err := RotateSecret(dir, k, v); err != nil {
			t.Fatal(err)
		}
	}
	sec, err := config.LoadSecrets(filepath.Join(dir, SecretsFileName))
	if err != nil || sec.Superuser != "n3w-su/pw@x" || sec.Operator != "n3w-op" || sec.Replication != "n3w-repl" {
		t.Fatalf("secrets.env: %v", err)
	}
	got, err := LoadClusterFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	for dsn, want := range map[string]string{got.SuperuserDSN: "n3w-su/pw@x", got.DatabaseURL: "n3w-op"} {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		if pw, _ := u.User.Password(); pw != want {
			t.Errorf("%s: password %q, want %q", RedactDSN(dsn), pw, want)
		}
	}
	if !strings.Contains(got.SuperuserDSN, "127.0.0.1:1,127.0.0.1:2") {
		t.Errorf("hosts lost: %s", RedactDSN(got.SuperuserDSN))
	}
	b, _ := os.ReadFile(filepath.Join(dir, ClusterFileName))
	if !strings.Contains(string(b), "future_field") {
		t.Error("an unknown field was dropped")
	}
	if st, _ := os.Stat(filepath.Join(dir, ClusterFileName)); st.Mode().Perm() != 0o600 {
		t.Errorf("cluster.json mode %v", st.Mode())
	}
}
