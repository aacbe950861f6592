package peerauth

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// Purposes of the keys a secrets rotation uses (see SealPassword).
const (
	PurposeRotationSeal = "petrel secret rotation seal v1"
	PurposeRotationMAC  = "petrel secret rotation mac v1"
)

// A rotated password travels to the members through etcd, which must not
// learn it: it is sealed with AES-256-GCM under a purpose key of the
// cluster secret, which every member already holds (DATA_DIR/api) and
// etcd does not (it is stored only sealed under the superuser password).
// Why not the superuser password's argon2id key, like the CA: a member
// restarted with a stale SU_PASSWORD could not open it, and a rotation of
// the superuser password would need the old one on every member anyway;
// the cluster secret survives every rotation unchanged.
//
// The additional data binds a sealed password to its cluster, kind and
// rotation ID, so a sealed value copied into another record (another
// kind, an older rotation) does not open.

func rotationAD(cluster, kind, id string) []byte {
	return []byte("petrel rotation\x00" + cluster + "\x00" + kind + "\x00" + id)
}

func rotationGCM(secret []byte, cluster string) (cipher.AEAD, error) {
	k, err := Key(secret, cluster, PurposeRotationSeal)
	if err != nil {
		return nil, err
	}
	b, err := aes.NewCipher(k)
	if err != nil {
		return nil, fmt.Errorf("sealing a password: %w", err)
	}
	return cipher.NewGCM(b)
}

// SealPassword seals password for rotation id of kind: nonce || ciphertext.
func SealPassword(secret []byte, cluster, kind, id, password string) ([]byte, error) {
	g, err := rotationGCM(secret, cluster)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("sealing a password: %w", err)
	}
	return g.Seal(nonce, nonce, []byte(password), rotationAD(cluster, kind, id)), nil
}

// ErrUnseal means a sealed password did not open: another cluster secret,
// or a record that was altered or moved.
var ErrUnseal = errors.New("the sealed password does not open with this cluster's secret (altered record, or another cluster)")

// OpenPassword opens what SealPassword sealed.
func OpenPassword(secret []byte, cluster, kind, id string, sealed []byte) (string, error) {
	g, err := rotationGCM(secret, cluster)
	if err != nil {
		return "", err
	}
	if len(sealed) < g.NonceSize()+g.Overhead() {
		return "", ErrUnseal
	}
	p, err := g.Open(nil, sealed[:g.NonceSize()], sealed[g.NonceSize():], rotationAD(cluster, kind, id))
	if err != nil {
		return "", ErrUnseal
	}
	return string(p), nil
}

// PasswordMAC is an HMAC of kind's password under a purpose key of the
// cluster secret: members publish it for the password they held before a
// rotation, so that one restarted later can tell that its secrets file
// still holds that old password, without anyone storing the password or
// an unkeyed hash of it (a guessable password would fall to a dictionary).
func PasswordMAC(secret []byte, cluster, kind, password string) (string, error) {
	k, err := Key(secret, cluster, PurposeRotationMAC)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, k)
	m.Write([]byte(kind))
	m.Write([]byte{0})
	m.Write([]byte(password))
	return hex.EncodeToString(m.Sum(nil)), nil
}
