// Package pki is petrel's small certificate authority: one ECDSA P-256 CA
// per cluster, created once at bootstrap and kept in etcd under
// /petrel/<cluster>/ca, and the per-node server certificates it signs for
// PostgreSQL's TLS.
//
// The CA's private key is never stored in clear: it is sealed with
// AES-256-GCM under a key derived from the cluster's superuser password
// with scrypt (N=2^15, r=8, p=1) and a random 16-byte salt; the salt and
// the 12-byte nonce are stored beside the ciphertext. Anyone with etcd
// access but without the superuser password can read the CA certificate
// (which is public anyway) but cannot sign certificates.
package pki

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"

	"golang.org/x/crypto/scrypt"
)

// Validity periods.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 2 * 365 * 24 * time.Hour
	// RenewBefore: a server certificate expiring sooner is reissued.
	RenewBefore = 30 * 24 * time.Hour
)

// scrypt parameters (recorded in StoredCA so they can change later).
const (
	scryptN = 1 << 15
	scryptR = 8
	scryptP = 1
)

// SealedKey is a private key encrypted with a password-derived key.
type SealedKey struct {
	KDF        string `json:"kdf"` // "scrypt"
	N          int    `json:"n"`
	R          int    `json:"r"`
	P          int    `json:"p"`
	Salt       []byte `json:"salt"`
	Cipher     string `json:"cipher"` // "aes-256-gcm"
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"` // sealed PKCS#8 DER
}

// StoredCA is the JSON value of /petrel/<cluster>/ca.
type StoredCA struct {
	CertPEM   string    `json:"cert_pem"`
	Key       SealedKey `json:"key"`
	CreatedAt time.Time `json:"created_at"`
}

// CA is an unsealed CA, able to sign.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     *ecdsa.PrivateKey
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return n, nil
}

// NewCA creates a CA for cluster and seals its key with password.
func NewCA(cluster, password string) (*CA, *StoredCA, error) {
	if password == "" {
		return nil, nil, errors.New("creating the cluster CA: the superuser password is empty, so the CA key cannot be sealed")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating CA key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "petrel cluster " + cluster + " CA", Organization: []string{"petrel"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding CA key: %w", err)
	}
	sealed, err := seal(pkcs8, password)
	if err != nil {
		return nil, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return &CA{Cert: cert, CertPEM: certPEM, key: key},
		&StoredCA{CertPEM: string(certPEM), Key: sealed, CreatedAt: now.UTC()}, nil
}

func deriveKey(password string, k SealedKey) ([]byte, error) {
	if k.KDF != "scrypt" {
		return nil, fmt.Errorf("unsupported key derivation %q", k.KDF)
	}
	key, err := scrypt.Key([]byte(password), k.Salt, k.N, k.R, k.P, 32)
	if err != nil {
		return nil, fmt.Errorf("deriving the CA key-encryption key: %w", err)
	}
	return key, nil
}

func seal(plain []byte, password string) (SealedKey, error) {
	k := SealedKey{KDF: "scrypt", N: scryptN, R: scryptR, P: scryptP, Cipher: "aes-256-gcm",
		Salt: make([]byte, 16), Nonce: make([]byte, 12)}
	if _, err := rand.Read(k.Salt); err != nil {
		return k, fmt.Errorf("generating salt: %w", err)
	}
	if _, err := rand.Read(k.Nonce); err != nil {
		return k, fmt.Errorf("generating nonce: %w", err)
	}
	kek, err := deriveKey(password, k)
	if err != nil {
		return k, err
	}
	gcm, err := newGCM(kek)
	if err != nil {
		return k, err
	}
	k.Ciphertext = gcm.Seal(nil, k.Nonce, plain, []byte("petrel-ca-key"))
	return k, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("AES: %w", err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		return nil, fmt.Errorf("GCM: %w", err)
	}
	return g, nil
}

// ErrWrongPassword means the CA key could not be unsealed: the superuser
// password differs from the one the CA was sealed with.
var ErrWrongPassword = errors.New("cannot unseal the cluster CA key: the superuser password does not match the one it was sealed with")

// Decode parses the stored JSON.
func Decode(b []byte) (*StoredCA, error) {
	var s StoredCA
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("decoding the stored cluster CA: %w", err)
	}
	if s.CertPEM == "" {
		return nil, errors.New("decoding the stored cluster CA: no certificate")
	}
	return &s, nil
}

// Encode is the JSON stored in etcd.
func (s *StoredCA) Encode() []byte {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // plain struct
	}
	return b
}

// Unseal decrypts the CA key with password.
func (s *StoredCA) Unseal(password string) (*CA, error) {
	cert, err := ParseCert([]byte(s.CertPEM))
	if err != nil {
		return nil, err
	}
	if s.Key.Cipher != "aes-256-gcm" {
		return nil, fmt.Errorf("unsupported CA key cipher %q", s.Key.Cipher)
	}
	kek, err := deriveKey(password, s.Key)
	if err != nil {
		return nil, err
	}
	gcm, err := newGCM(kek)
	if err != nil {
		return nil, err
	}
	plain, err := gcm.Open(nil, s.Key.Nonce, s.Key.Ciphertext, []byte("petrel-ca-key"))
	if err != nil {
		return nil, ErrWrongPassword
	}
	k, err := x509.ParsePKCS8PrivateKey(plain)
	if err != nil {
		return nil, fmt.Errorf("parsing the CA key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || !ek.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("the stored CA key does not match its certificate")
	}
	return &CA{Cert: cert, CertPEM: []byte(s.CertPEM), key: ek}, nil
}

// ParseCert parses the first PEM certificate in b.
func ParseCert(b []byte) (*x509.Certificate, error) {
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate found")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing certificate: %w", err)
	}
	return c, nil
}

// ServerNames returns the SANs for a node: hosts (IPs or DNS names, empty
// and wildcard addresses skipped) plus 127.0.0.1, ::1 and localhost.
func ServerNames(hosts ...string) (ips []net.IP, dns []string) {
	add := func(h string) {
		if h == "" || h == "0.0.0.0" || h == "::" || h == "*" {
			return
		}
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			return
		}
		if !slices.Contains(dns, h) {
			dns = append(dns, h)
		}
	}
	for _, h := range hosts {
		add(h)
	}
	add("127.0.0.1")
	add("::1")
	add("localhost")
	return ips, dns
}

// Issue signs a server certificate for hosts (see ServerNames) and returns
// the certificate and its private key, PEM-encoded.
func (ca *CA) Issue(commonName string, hosts ...string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating server key: %w", err)
	}
	sn, err := serial()
	if err != nil {
		return nil, nil, err
	}
	ips, dns := ServerNames(hosts...)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"petrel"}},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(ServerValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  ips,
		DNSNames:     dns,
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing server certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding server key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), nil
}

// CheckServerCert reports why certPEM is not a usable server certificate
// for hosts under caPEM (nil when it is): not signed by the CA, a host
// missing from its SANs, or expiring within RenewBefore.
func CheckServerCert(certPEM, keyPEM, caPEM []byte, hosts ...string) error {
	ca, err := ParseCert(caPEM)
	if err != nil {
		return fmt.Errorf("CA file: %w", err)
	}
	c, err := ParseCert(certPEM)
	if err != nil {
		return fmt.Errorf("certificate file: %w", err)
	}
	if blk, _ := pem.Decode(keyPEM); blk == nil {
		return errors.New("key file holds no PEM key")
	} else if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err != nil {
		return fmt.Errorf("key file: %w", err)
	} else if ek, ok := k.(*ecdsa.PrivateKey); !ok || !ek.PublicKey.Equal(c.PublicKey) {
		return errors.New("key does not match the certificate")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("not signed by the cluster CA: %w", err)
	}
	if time.Until(c.NotAfter) < RenewBefore {
		return fmt.Errorf("expires %s", c.NotAfter.Format(time.RFC3339))
	}
	ips, dns := ServerNames(hosts...)
	for _, ip := range ips {
		if c.VerifyHostname(ip.String()) != nil {
			return fmt.Errorf("%s is not in its names", ip)
		}
	}
	for _, d := range dns {
		if c.VerifyHostname(d) != nil {
			return fmt.Errorf("%s is not in its names", d)
		}
	}
	return nil
}

// SameCert reports whether two PEM blobs hold the same certificate.
func SameCert(a, b []byte) bool {
	ca, err1 := ParseCert(a)
	cb, err2 := ParseCert(b)
	return err1 == nil && err2 == nil && bytes.Equal(ca.Raw, cb.Raw)
}
