package peerauth

import (
	"bytes"
	"errors"
	"testing"
)

func TestSealPassword(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	other := bytes.Repeat([]byte{8}, 32)
	s, err := SealPassword(secret, "c1", "replication", "r1", "n3w-pass")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(s, []byte("n3w-pass")) {
		t.Fatal("sealed value holds the password in clear")
	}
	if got, err := OpenPassword(secret, "c1", "replication", "r1", s); err != nil || got != "n3w-pass" {
		t.Fatalf("open: %q, %v", got, err)
	}
	s2, _ := SealPassword(secret, "c1", "replication", "r1", "n3w-pass")
	if bytes.Equal(s, s2) {
		t.Fatal("two seals of one password are equal: no fresh nonce")
	}
	for name, f := range map[string]func() (string, error){
		"other secret":  func() (string, error) { return OpenPassword(other, "c1", "replication", "r1", s) },
		"other cluster": func() (string, error) { return OpenPassword(secret, "c2", "replication", "r1", s) },
		"other kind":    func() (string, error) { return OpenPassword(secret, "c1", "superuser", "r1", s) },
		"other id":      func() (string, error) { return OpenPassword(secret, "c1", "replication", "r0", s) },
		"truncated":     func() (string, error) { return OpenPassword(secret, "c1", "replication", "r1", s[:10]) },
		"tampered": func() (string, error) {
			b := bytes.Clone(s)
			b[len(b)-1] ^= 1
			return OpenPassword(secret, "c1", "replication", "r1", b)
		},
	} {
		if _, err := f(); !errors.Is(err, ErrUnseal) {
			t.Errorf("%s: %v, want ErrUnseal", name, err)
		}
	}
	if _, err := SealPassword(nil, "c1", "replication", "r1", "x"); err == nil {
		t.Error("sealed without a cluster secret")
	}
}

func TestPasswordMAC(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	a, _ := PasswordMAC(secret, "c1", "superuser", "old")
	b, _ := PasswordMAC(secret, "c1", "superuser", "old")
	if a != b || a == "" {
		t.Fatalf("not deterministic: %q %q", a, b)
	}
	for _, c := range [][3]string{{"c2", "superuser", "old"}, {"c1", "operator", "old"}, {"c1", "superuser", "old2"}} {
		if m, _ := PasswordMAC(secret, c[0], c[1], c[2]); m == a {
			t.Errorf("%v: same MAC", c)
		}
	}
	if m, _ := PasswordMAC(bytes.Repeat([]byte{8}, 32), "c1", "superuser", "old"); m == a {
		t.Error("another secret gives the same MAC")
	}
}
