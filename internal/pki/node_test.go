package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
)

func TestNodeCertificates(t *testing.T) {
	ca, _, err := NewCA("c1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := Pool(ca.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(certPEM, keyPEM []byte) *x509.Certificate {
		t.Helper()
		kp, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return kp.Leaf
	}
	cert, key, err := ca.IssueNode("c1", "n1", "10.0.0.5")
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckNodeCert(cert, key, ca.CertPEM, "c1", "n1", "10.0.0.5"); err != nil {
		t.Fatal(err)
	}
	if err := CheckNodeCert(cert, key, ca.CertPEM, "c1", "n2", "10.0.0.5"); err == nil {
		t.Fatal("n1's certificate accepted as n2's")
	}
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if id, err := VerifyNode([]*x509.Certificate{leaf(cert, key)}, pool, "c1", usage); err != nil || id != "n1" {
			t.Fatalf("VerifyNode(%v) = %q, %v", usage, id, err)
		}
	}
	if id, err := VerifyNode([]*x509.Certificate{leaf(cert, key)}, pool, "c2", x509.ExtKeyUsageServerAuth); !errors.Is(err, ErrNotNode) {
		t.Fatalf("another cluster's node accepted: %q, %v", id, err)
	}
	// Postgres' server certificate (its key is readable by the postgres
	// OS user) names no node.
	pgCert, pgKey, err := ca.Issue("n1", "10.0.0.5")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyNode([]*x509.Certificate{leaf(pgCert, pgKey)}, pool, "c1", x509.ExtKeyUsageServerAuth); !errors.Is(err, ErrNotNode) {
		t.Fatalf("a Postgres certificate passed as a node's: %v", err)
	}
	// A node certificate from another CA, naming n1.
	other, _, err := NewCA("c1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	fc, fk, err := other.IssueNode("c1", "n1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyNode([]*x509.Certificate{leaf(fc, fk)}, pool, "c1", x509.ExtKeyUsageServerAuth); !errors.Is(err, ErrNotNode) {
		t.Fatalf("another CA's certificate accepted: %v", err)
	}
}

func TestFingerprintPinning(t *testing.T) {
	ca, _, err := NewCA("c1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := NewCA("c1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	fp, err := Fingerprint(ca.CertPEM)
	if err != nil || len(fp) != 64 {
		t.Fatalf("Fingerprint = %q, %v", fp, err)
	}
	colons := ""
	for i := 0; i < len(fp); i += 2 {
		if i > 0 {
			colons += ":"
		}
		colons += strings.ToUpper(fp[i : i+2])
	}
	for _, pin := range []string{fp, "sha256:" + fp, colons, " " + fp + "\n"} {
		if err := CheckPinned(ca.CertPEM, pin); err != nil {
			t.Fatalf("pin %q: %v", pin, err)
		}
	}
	if err := CheckPinned(other.CertPEM, fp); !errors.Is(err, ErrFingerprint) {
		t.Fatalf("a different CA passed the pin: %v", err)
	}
	for _, bad := range []string{"", "abc", fp[:62], fp + "00", strings.Repeat("zz", 32)} {
		if err := CheckPinned(ca.CertPEM, bad); err == nil || errors.Is(err, ErrFingerprint) {
			t.Fatalf("malformed pin %q: %v", bad, err)
		}
	}
}

// TestKDFBounds: the stored derivation parameters come from etcd; outside
// the bounds they are refused before anything is derived (a huge memory
// cost would otherwise exhaust the node), and so are weak ones.
func TestKDFBounds(t *testing.T) {
	_, stored, err := NewCA("c1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	if stored.Key.KDF != "argon2id" || stored.Key.MemKiB < minKDFMemKiB || stored.Key.Time < minKDFTime {
		t.Fatalf("NewCA seals with %+v", stored.Key)
	}
	for name, mutate := range map[string]func(k *SealedKey){
		"memory 4 TiB": func(k *SealedKey) { k.MemKiB = 1<<32 - 1 },
		"memory 1 GiB": func(k *SealedKey) { k.MemKiB = 1 << 20 },
		"memory 1 MiB": func(k *SealedKey) { k.MemKiB = 1 << 10 },
		"time 0":       func(k *SealedKey) { k.Time = 0 },
		"time 1e9":     func(k *SealedKey) { k.Time = 1e9 },
		"threads 0":    func(k *SealedKey) { k.Threads = 0 },
		"threads 255":  func(k *SealedKey) { k.Threads = 255 },
		"short salt":   func(k *SealedKey) { k.Salt = k.Salt[:4] },
		"scrypt N=2^15": func(k *SealedKey) {
			*k = SealedKey{KDF: "scrypt", N: 1 << 15, R: 8, P: 1, Salt: k.Salt, Cipher: k.Cipher, Nonce: k.Nonce, Ciphertext: k.Ciphertext}
		},
		"scrypt N=2^40": func(k *SealedKey) {
			*k = SealedKey{KDF: "scrypt", N: 1 << 40, R: 8, P: 1, Salt: k.Salt, Cipher: k.Cipher, Nonce: k.Nonce, Ciphertext: k.Ciphertext}
		},
		"unknown function": func(k *SealedKey) { k.KDF = "md5" },
	} {
		dec, err := Decode(stored.Encode())
		if err != nil {
			t.Fatal(err)
		}
		mutate(&dec.Key)
		if _, err := dec.Unseal("pw"); !errors.Is(err, ErrKDFParams) {
			t.Errorf("%s: Unseal = %v, want ErrKDFParams", name, err)
		}
	}
}

func TestClusterSecret(t *testing.T) {
	ca, stored, err := NewCA("c1", "pw")
	if err != nil {
		t.Fatal(err)
	}
	dec, err := Decode(stored.Encode())
	if err != nil {
		t.Fatal(err)
	}
	got, err := dec.Unseal("pw")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Secret) != SecretLen || string(got.Secret) != string(ca.Secret) {
		t.Fatal("the unsealed cluster secret differs from the one created")
	}
	if strings.Contains(string(stored.Encode()), string(ca.Secret)) {
		t.Fatal("the stored record holds the secret in clear")
	}
	dec.Secret.Ciphertext[0] ^= 1
	if _, err := dec.Unseal("pw"); err == nil {
		t.Fatal("an altered sealed secret was accepted")
	}
}
