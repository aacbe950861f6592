package pg

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestScramRFC7677 checks the derived keys against the RFC 7677 example
// exchange (user "user", password "pencil").
func TestScramRFC7677(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	storedKey, serverKey, err := scramKeys("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	const nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
	authMsg := "n=user,r=rOprNGfwEbeRWgbNEkqO," +
		"r=" + nonce + ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096," +
		"c=biws,r=" + nonce
	// The client proof is ClientKey XOR HMAC(StoredKey, AuthMessage); check
	// that H(proof XOR signature) == StoredKey, as the server does.
	proof, _ := base64.StdEncoding.DecodeString("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
	sig := hmacSHA256(storedKey, authMsg)
	clientKey := make([]byte, len(proof))
	for i := range proof {
		clientKey[i] = proof[i] ^ sig[i]
	}
	if got := sha256.Sum256(clientKey); !hmac.Equal(got[:], storedKey) {
		t.Errorf("StoredKey does not verify the RFC 7677 client proof")
	}
	wantSrv := "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
	if got := base64.StdEncoding.EncodeToString(hmacSHA256(serverKey, authMsg)); got != wantSrv {
		t.Errorf("server signature = %s, want %s", got, wantSrv)
	}

	v, err := scramVerifier("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	want := "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$" +
		base64.StdEncoding.EncodeToString(storedKey) + ":" + base64.StdEncoding.EncodeToString(serverKey)
	if v != want {
		t.Errorf("verifier = %s, want %s", v, want)
	}
	r1, _ := ScramVerifier("x")
	r2, _ := ScramVerifier("x")
	if r1 == r2 || !strings.HasPrefix(r1, "SCRAM-SHA-256$4096:") || strings.Contains(r1, "'") {
		t.Errorf("random verifiers: %q %q", r1, r2)
	}
}

func TestLSN(t *testing.T) {
	for _, s := range []string{"0/0", "16/B374D848", "FFFFFFFF/FFFFFFFF", "0/3000060"} {
		n, err := ParseLSN(s)
		if err != nil {
			t.Fatalf("ParseLSN(%q): %v", s, err)
		}
		if got := FormatLSN(n); got != s {
			t.Errorf("FormatLSN(ParseLSN(%q)) = %q", s, got)
		}
	}
	if n, _ := ParseLSN("16/B374D848"); n != 0x16_B374D848 {
		t.Errorf("ParseLSN = %x", n)
	}
	for _, s := range []string{"", "16", "/1", "1/", "x/1", "1/100000000"} {
		if _, err := ParseLSN(s); err == nil {
			t.Errorf("ParseLSN(%q) succeeded", s)
		}
	}
}

func TestParseControl(t *testing.T) {
	out := `pg_control version number:            1300
Database cluster state:               shut down in recovery
Latest checkpoint location:           0/3000060
Latest checkpoint's REDO location:    0/3000028
Latest checkpoint's REDO WAL file:    000000020000000000000003
Latest checkpoint's TimeLineID:       2
`
	c, err := parseControl(out)
	if err != nil {
		t.Fatal(err)
	}
	if c.State != "shut down in recovery" || c.Timeline != 2 || c.CheckpointLSN != 0x3000060 || c.REDOLSN != 0x3000028 {
		t.Errorf("parseControl = %+v", c)
	}
	if _, err := parseControl("garbage"); err == nil {
		t.Error("parseControl(garbage) succeeded")
	}
}

func TestQuoting(t *testing.T) {
	if got := quoteConf(`a'b\c`); got != `'a''b\\c'` {
		t.Errorf("quoteConf = %s", got)
	}
	if got := quoteConnValue("plain"); got != "plain" {
		t.Errorf("quoteConnValue = %s", got)
	}
	if got := quoteConnValue(`a b'c`); got != `'a b\'c'` {
		t.Errorf("quoteConnValue = %s", got)
	}
	if got := quoteLiteral(`ANY 1 ("it's")`); got != `'ANY 1 ("it''s")'` {
		t.Errorf("quoteLiteral = %s", got)
	}
}

func TestRenderUserConf(t *testing.T) {
	got := string(renderUserConf(map[string]string{"work_mem": "8MB", "max_connections": "150", "search_path": "a, 'b'"}))
	for _, want := range []string{"max_connections = '150'\n", "shared_buffers = '64MB'\n", "work_mem = '8MB'\n", "search_path = 'a, ''b'''\n"} {
		if !strings.Contains(got, want) {
			t.Errorf("petrel-user.conf lacks %q:\n%s", want, got)
		}
	}
	if strings.Index(got, "max_connections") > strings.Index(got, "work_mem") {
		t.Error("settings not sorted")
	}
	if names := confNames(append(renderUserConf(map[string]string{"Work_Mem": "8MB"}), "# c\n\nprimary_conninfo='a = b'\n"...)); !slices.Equal(names, []string{"authentication_timeout", "max_connections", "shared_buffers", "work_mem", "primary_conninfo"}) {
		t.Errorf("setting names %v: want every name = value line's name, lower case", names)
	}
}

func TestEnsureIncludesOrder(t *testing.T) {
	dir := t.TempDir()
	s := &Server{opts: Options{DataDir: dir}, uid: -1, gid: -1}
	old := "shared_buffers = 1MB\n\n# Added by petrel; keep at the end.\ninclude_if_exists = 'petrel.conf'\ninclude_if_exists = 'petrel-recovery.conf'\n"
	if err := os.WriteFile(filepath.Join(dir, "postgresql.conf"), []byte(old), 0o600); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.ensureIncludes(); err != nil {
			t.Fatal(err)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "postgresql.conf"))
	want := "shared_buffers = 1MB\n\n# Added by petrel; keep at the end.\ninclude_if_exists = 'petrel-user.conf'\ninclude_if_exists = 'petrel.conf'\ninclude_if_exists = 'petrel-archive.conf'\ninclude_if_exists = 'petrel-readonly.conf'\ninclude_if_exists = 'petrel-recovery.conf'\n"
	if string(b) != want {
		t.Fatalf("postgresql.conf:\n%s\nwant:\n%s", b, want)
	}
}

// The read-only switch is rewritten in place at one length (so it needs
// no new block on a full disk) and reads back.
func TestReadOnlySwitch(t *testing.T) {
	dir := t.TempDir()
	s := &Server{opts: Options{DataDir: dir}, uid: -1, gid: -1}
	if err := s.ensureReadOnlyFile(); err != nil {
		t.Fatal(err)
	}
	if s.ReadOnly() {
		t.Fatal("a new switch is on")
	}
	for _, on := range []bool{true, false, true} {
		if err := s.SetReadOnly(context.Background(), on); err != nil {
			t.Fatal(err)
		}
		if s.ReadOnly() != on {
			t.Fatalf("ReadOnly() = %v after SetReadOnly(%v)", !on, on)
		}
		b, _ := os.ReadFile(filepath.Join(dir, readOnlyConf))
		if len(b) != readOnlyLen {
			t.Fatalf("switch is %d bytes, want %d: %q", len(b), readOnlyLen, b)
		}
	}
	if s.DiskFree() <= 0 {
		t.Fatalf("DiskFree() = %d", s.DiskFree())
	}
}

// TestWriteFileConcurrent: writers of one file at once each leave a
// complete file and none fails (a shared temporary name made one writer
// rename the other's away before its chown).
func TestWriteFileConcurrent(t *testing.T) {
	s := &Server{log: slog.New(slog.DiscardHandler), uid: -1}
	path := filepath.Join(t.TempDir(), "petrel-archive.conf")
	contents := []string{strings.Repeat("a", 4096), strings.Repeat("b", 4096)}
	errs := make(chan error, 200)
	for i := range 200 {
		go func() { errs <- s.writeFile(path, []byte(contents[i%2]), 0o600) }()
	}
	for range 200 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil || (string(b) != contents[0] && string(b) != contents[1]) {
		t.Fatalf("file after concurrent writes: %d bytes, %v", len(b), err)
	}
	left, _ := filepath.Glob(path + ".petrel-tmp*")
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}
