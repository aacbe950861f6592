package config

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// TestShippedConfig: the package's commented /etc/petrel.toml loads with
// no unknown key and validates (with the id an operator sets).
func TestShippedConfig(t *testing.T) {
	_, self, _, _ := runtime.Caller(0)
	n := Defaults()
	if err := LoadFile(filepath.Join(filepath.Dir(self), "..", "..", "packaging", "petrel.toml"), &n); err != nil {
		t.Fatal(err)
	}
	if err := n.Validate(); err != nil {
		t.Fatal(err)
	}
	if n.EtcdCAFile == "" || n.EtcdCertFile == "" || n.EtcdUsername == "" || n.SecretsFile != "/etc/petrel/secrets.env" {
		t.Fatalf("the shipped config should show etcd TLS, the etcd user and the secrets file: %+v", n)
	}
}

// TestSecretsFromEnvironment: with every password in the environment (a
// systemd EnvironmentFile), a secrets file the process cannot read is not
// read; with one missing, it is, and its error says so.
func TestSecretsFromEnvironment(t *testing.T) {
	unreadable := filepath.Join(t.TempDir(), "missing.env")
	t.Setenv("SU_PASSWORD", "a")
	t.Setenv("REPL_PASSWORD", "b")
	t.Setenv("OPERATOR_PASSWORD", "c")
	t.Setenv("ETCD_PASSWORD", "d")
	if s, err := LoadSecrets(unreadable); err != nil || s.Superuser != "a" || s.Operator != "c" {
		t.Fatalf("LoadSecrets from the environment: %v %v", s, err)
	}
	if pw, err := EtcdPassword(unreadable); err != nil || pw != "d" {
		t.Fatalf("EtcdPassword from the environment: %q %v", pw, err)
	}
	os.Unsetenv("OPERATOR_PASSWORD")
	if _, err := LoadSecrets(unreadable); err == nil {
		t.Fatal("a password missing from the environment should read the file, which is missing")
	}
	file := filepath.Join(t.TempDir(), "secrets.env")
	if err := os.WriteFile(file, []byte("OPERATOR_PASSWORD=from-file\nETCD_PASSWORD=file-etcd\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := LoadSecrets(file); err != nil || s.Operator != "from-file" || s.Superuser != "a" {
		t.Fatalf("LoadSecrets, environment then file: %v %v", s, err)
	}
	if pw, _ := EtcdPassword(file); pw != "d" {
		t.Fatalf("ETCD_PASSWORD: the environment wins, got %q", pw)
	}
}
