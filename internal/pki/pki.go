// Package pki is petrel's small certificate authority: one ECDSA P-256 CA
// per cluster, created once at bootstrap and kept in etcd under
// /petrel/<cluster>/ca, and the per-node server certificates it signs for
// PostgreSQL's TLS.
//
// The CA's private key is never stored in clear: it is sealed with
// AES-256-GCM under a key derived from the cluster's superuser password
// with argon2id (RFC 9106's second recommended setting: t=3, 64 MiB, 4
// lanes) and a random 16-byte salt; the salt and the 12-byte nonce are
// stored beside the ciphertext. The cluster secret (32 random bytes, from
// which the members' message keys are derived, see internal/peerauth) is
// sealed under the same derived key. Anyone with etcd access but without
// the superuser password can read the CA certificate (which is public
// anyway) but can neither sign certificates nor learn the secret.
//
// The store is not trusted with the key derivation's cost: stored
// parameters outside fixed bounds are refused before any derivation runs,
// so a forged record cannot make a node allocate gigabytes.
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
	"net/url"
	"slices"
	"time"

	"golang.org/x/crypto/argon2"
)

// Validity periods.
const (
	CAValidity     = 10 * 365 * 24 * time.Hour
	ServerValidity = 2 * 365 * 24 * time.Hour
	// RenewBefore: a server certificate expiring sooner is reissued.
	RenewBefore = 30 * 24 * time.Hour
)

// The key derivation petrel writes: argon2id, RFC 9106 section 4's
// second recommended option (for when 2 GiB cannot be spared).
const (
	kdfName    = "argon2id"
	kdfTime    = 3
	kdfMemKiB  = 64 << 10
	kdfThreads = 4
	kdfKeyLen  = 32
)

// Bounds on stored derivation parameters. Below them a sealed key is too
// cheap to guess at; above them, unsealing would exhaust a node's memory
// or CPU. A record outside them is refused before deriving anything.
const (
	minKDFTime, maxKDFTime       = 1, 10
	minKDFMemKiB, maxKDFMemKiB   = 19 << 10, 256 << 10
	minKDFThreads, maxKDFThreads = 1, 16
	minSaltLen, maxSaltLen       = 16, 64
)

// ErrKDFParams means a stored sealed key names a key derivation, or
// parameters, petrel does not accept.
var ErrKDFParams = errors.New("stored key derivation parameters refused")

// SealedKey is a private key encrypted with a password-derived key.
type SealedKey struct {
	KDF string `json:"kdf"` // "argon2id"
	// argon2id parameters.
	Time    uint32 `json:"time,omitempty"`
	MemKiB  uint32 `json:"mem_kib,omitempty"`
	Threads uint8  `json:"threads,omitempty"`
	// scrypt parameters of records written before argon2id: read only to
	// be refused with a clear reason.
	N          int    `json:"n,omitempty"`
	R          int    `json:"r,omitempty"`
	P          int    `json:"p,omitempty"`
	Salt       []byte `json:"salt"`
	Cipher     string `json:"cipher"` // "aes-256-gcm"
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"` // sealed PKCS#8 DER
}

// SealedSecret is the cluster secret, sealed under the same derived key
// as the CA key (one derivation unseals both), with its own nonce.
type SealedSecret struct {
	Nonce      []byte `json:"nonce"`
	Ciphertext []byte `json:"ciphertext"`
}

// StoredCA is the JSON value of /petrel/<cluster>/ca.
type StoredCA struct {
	CertPEM   string       `json:"cert_pem"`
	Key       SealedKey    `json:"key"`
	Secret    SealedSecret `json:"secret"`
	CreatedAt time.Time    `json:"created_at"`
}

// SecretLen is the cluster secret's length in bytes.
const SecretLen = 32

// CA is an unsealed CA, able to sign, with the cluster secret.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	// Secret is the cluster secret: members derive their message keys
	// from it (internal/peerauth). Never stored or sent in clear.
	Secret []byte
	key    *ecdsa.PrivateKey
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
	secret := make([]byte, SecretLen)
	if _, err := rand.Read(secret); err != nil {
		return nil, nil, fmt.Errorf("generating the cluster secret: %w", err)
	}
	sealed, sealedSecret, err := seal(pkcs8, secret, password)
	if err != nil {
		return nil, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return &CA{Cert: cert, CertPEM: certPEM, Secret: secret, key: key},
		&StoredCA{CertPEM: string(certPEM), Key: sealed, Secret: sealedSecret, CreatedAt: now.UTC()}, nil
}

// checkKDF refuses parameters petrel would not write itself, before
// anything is derived with them (they come from the store).
func checkKDF(k SealedKey) error {
	switch k.KDF {
	case kdfName:
	case "scrypt":
		return fmt.Errorf("%w: the CA key is sealed with scrypt (N=%d), which this version no longer accepts; create the cluster's CA again with this version", ErrKDFParams, k.N)
	default:
		return fmt.Errorf("%w: unknown key derivation %q", ErrKDFParams, k.KDF)
	}
	switch {
	case k.Time < minKDFTime || k.Time > maxKDFTime:
		return fmt.Errorf("%w: argon2id time %d outside [%d, %d]", ErrKDFParams, k.Time, minKDFTime, maxKDFTime)
	case k.MemKiB < minKDFMemKiB || k.MemKiB > maxKDFMemKiB:
		return fmt.Errorf("%w: argon2id memory %d KiB outside [%d, %d]", ErrKDFParams, k.MemKiB, minKDFMemKiB, maxKDFMemKiB)
	case k.Threads < minKDFThreads || k.Threads > maxKDFThreads:
		return fmt.Errorf("%w: argon2id threads %d outside [%d, %d]", ErrKDFParams, k.Threads, minKDFThreads, maxKDFThreads)
	case len(k.Salt) < minSaltLen || len(k.Salt) > maxSaltLen:
		return fmt.Errorf("%w: salt of %d bytes outside [%d, %d]", ErrKDFParams, len(k.Salt), minSaltLen, maxSaltLen)
	}
	return nil
}

func deriveKey(password string, k SealedKey) ([]byte, error) {
	if err := checkKDF(k); err != nil {
		return nil, err
	}
	return argon2.IDKey([]byte(password), k.Salt, k.Time, k.MemKiB, k.Threads, kdfKeyLen), nil
}

// Additional data binding each ciphertext to what it holds.
var (
	adKey    = []byte("petrel-ca-key")
	adSecret = []byte("petrel-cluster-secret")
)

func seal(keyDER, secret []byte, password string) (SealedKey, SealedSecret, error) {
	k := SealedKey{KDF: kdfName, Time: kdfTime, MemKiB: kdfMemKiB, Threads: kdfThreads, Cipher: "aes-256-gcm",
		Salt: make([]byte, 16), Nonce: make([]byte, 12)}
	ss := SealedSecret{Nonce: make([]byte, 12)}
	for _, b := range [][]byte{k.Salt, k.Nonce, ss.Nonce} {
		if _, err := rand.Read(b); err != nil {
			return k, ss, fmt.Errorf("generating salt and nonces: %w", err)
		}
	}
	kek, err := deriveKey(password, k)
	if err != nil {
		return k, ss, err
	}
	gcm, err := newGCM(kek)
	if err != nil {
		return k, ss, err
	}
	k.Ciphertext = gcm.Seal(nil, k.Nonce, keyDER, adKey)
	ss.Ciphertext = gcm.Seal(nil, ss.Nonce, secret, adSecret)
	return k, ss, nil
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
	if len(s.Key.Nonce) != gcm.NonceSize() || len(s.Secret.Nonce) != gcm.NonceSize() {
		return nil, errors.New("the stored CA has a malformed nonce")
	}
	plain, err := gcm.Open(nil, s.Key.Nonce, s.Key.Ciphertext, adKey)
	if err != nil {
		return nil, ErrWrongPassword
	}
	secret, err := gcm.Open(nil, s.Secret.Nonce, s.Secret.Ciphertext, adSecret)
	if err != nil || len(secret) != SecretLen {
		return nil, errors.New("the stored cluster secret does not open under the CA's key: the record was altered")
	}
	k, err := x509.ParsePKCS8PrivateKey(plain)
	if err != nil {
		return nil, fmt.Errorf("parsing the CA key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || !ek.PublicKey.Equal(cert.PublicKey) {
		return nil, errors.New("the stored CA key does not match its certificate")
	}
	return &CA{Cert: cert, CertPEM: []byte(s.CertPEM), Secret: secret, key: ek}, nil
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
	return ca.issue(commonName, nil, hosts...)
}

func (ca *CA) issue(commonName string, uris []*url.URL, hosts ...string) (certPEM, keyPEM []byte, err error) {
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
		URIs:         uris,
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

// Reseal returns the record re-sealed under newPassword (fresh salt and
// nonces; the same certificate, key and cluster secret), after opening it
// with oldPassword. A superuser password rotation stores it in place of
// the old record with a compare-and-swap (internal/ops).
func (s *StoredCA) Reseal(oldPassword, newPassword string) (*StoredCA, error) {
	if newPassword == "" {
		return nil, errors.New("re-sealing the cluster CA: the new superuser password is empty")
	}
	ca, err := s.Unseal(oldPassword)
	if err != nil {
		return nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, fmt.Errorf("encoding CA key: %w", err)
	}
	k, sec, err := seal(pkcs8, ca.Secret, newPassword)
	if err != nil {
		return nil, err
	}
	return &StoredCA{CertPEM: s.CertPEM, Key: k, Secret: sec, CreatedAt: s.CreatedAt}, nil
}
