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
