package pg

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSetReplicationPassword(t *testing.T) {
	dir := t.TempDir()
	s := &Server{opts: Options{RunDir: dir}}
	if ok, err := s.SetReplicationPassword("x"); ok || err != nil {
		t.Fatalf("no passfile: %v %v", ok, err)
	}
	if _, err := s.writePassfile(replPassFile, ConnInfo{Host: "fe80::1", Port: 5433, User: "repl:icator", Password: `old\pw:1`}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.SetReplicationPassword(`n:ew\pw`); !ok || err != nil {
		t.Fatalf("rewrite: %v %v", ok, err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, replPassFile))
	if got, want := string(b), `fe80\:\:1:5433:*:repl\:icator:n\:ew\\pw`+"\n"; got != want {
		t.Fatalf("passfile %q, want %q", got, want)
	}
	if st, _ := os.Stat(filepath.Join(dir, replPassFile)); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
}
