package config

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSetSecret(t *testing.T) {
	f := filepath.Join(t.TempDir(), "secrets.env")
	if err := os.WriteFile(f, []byte("# keep me\nSU_PASSWORD=old-su\nREPL_PASSWORD=\"old repl\"\nOPERATOR_PASSWORD=op\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SetSecret(f, "REPL_PASSWORD", "n3w-repl-pass"); err != nil {
		t.Fatal(err)
	}
	if err := SetSecret(f, "ETCD_PASSWORD", "etcd-pw"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(f)
	if want := "# keep me\nSU_PASSWORD=old-su\nREPL_PASSWORD=n3w-repl-pass\nOPERATOR_PASSWORD=op\nETCD_PASSWORD=etcd-pw\n"; string(b) != want {
		t.Fatalf("file:\n%s\nwant:\n%s", b, want)
	}
	if st, _ := os.Stat(f); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	s, err := LoadSecrets(f)
	if err != nil || s.Replication != "n3w-repl-pass" || s.Superuser != "old-su" {
		t.Fatalf("read back: %v", err)
	}
	if err := SetSecret(f, "SU_PASSWORD", "a\nb"); err == nil {
		t.Fatal("accepted a line break")
	}
	if ents, _ := os.ReadDir(filepath.Dir(f)); len(ents) != 1 {
		t.Fatalf("left files behind: %v", ents)
	}
}
