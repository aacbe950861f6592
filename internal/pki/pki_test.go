package pki

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestCARoundTrip(t *testing.T) {
	ca, stored, err := NewCA("c1", "s3cret")
	if err != nil {
		t.Fatal(err)
	}
	enc := stored.Encode()
	if bytes.Contains(enc, []byte("PRIVATE KEY")) {
		t.Fatal("stored CA contains a clear private key")
	}
	dec, err := Decode(enc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dec.Unseal("wrong"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("unseal with a wrong password: %v", err)
	}
	ca2, err := dec.Unseal("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca2.Issue("n1", "10.0.0.5", "db.example")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckServerCert(cert, key, ca.CertPEM, "10.0.0.5", "db.example"); err != nil {
		t.Fatal(err)
	}
	if err := CheckServerCert(cert, key, ca.CertPEM, "10.0.0.6"); err == nil || !strings.Contains(err.Error(), "10.0.0.6") {
		t.Fatalf("missing SAN not detected: %v", err)
	}
	other, _, err := NewCA("c2", "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckServerCert(cert, key, other.CertPEM, "10.0.0.5"); err == nil {
		t.Fatal("certificate accepted under another CA")
	}
	if !SameCert(ca.CertPEM, []byte(dec.CertPEM)) || SameCert(ca.CertPEM, other.CertPEM) {
		t.Fatal("SameCert")
	}
}

func TestReseal(t *testing.T) {
	ca, stored, err := NewCA("c1", "old-pw")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stored.Reseal("wrong", "new-pw"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("reseal with a wrong old password: %v", err)
	}
	re, err := stored.Reseal("old-pw", "new-pw")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(re.Key.Salt, stored.Key.Salt) || bytes.Equal(re.Secret.Nonce, stored.Secret.Nonce) {
		t.Fatal("salt or nonce reused")
	}
	if _, err := re.Unseal("old-pw"); !errors.Is(err, ErrWrongPassword) {
		t.Fatalf("the old password still opens the re-sealed CA: %v", err)
	}
	got, err := re.Unseal("new-pw")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Secret, ca.Secret) || !SameCert(got.CertPEM, ca.CertPEM) || !got.key.Equal(ca.key) {
		t.Fatal("the re-sealed CA is not the same CA and secret")
	}
}
