package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadPasswordFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	if err := os.WriteFile(f, []byte("a-long-enough-password\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readPasswordFile(f); err == nil || !strings.Contains(err.Error(), "0600") {
		t.Fatalf("a world-readable file: %v", err)
	}
	if err := os.Chmod(f, 0o600); err != nil {
		t.Fatal(err)
	}
	if pw, err := readPasswordFile(f); err != nil || pw != "a-long-enough-password" {
		t.Fatalf("%q, %v", pw, err)
	}
	if err := os.WriteFile(f, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readPasswordFile(f); err == nil {
		t.Fatal("a short password accepted")
	}
}
