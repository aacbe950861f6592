// Package peerauth authenticates messages between members (the failsafe
// ask, and any later peer request that changes state): a key per purpose
// derived with HKDF-SHA256 from the cluster secret (32 random bytes,
// sealed in etcd beside the CA key, see internal/pki), and an
// HMAC-SHA256 over the purpose, the sender, the target, a random nonce,
// the send time and the message's own fields.
//
// A verifier refuses a message MACed for another target (a redirected
// message), one whose nonce it has already accepted (a replay), one sent
// outside its clock window, and one whose MAC does not match. Nonces are
// remembered until their window has passed, so memory is bounded by the
// rate of genuine messages (only a valid MAC is remembered).
package peerauth

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Purposes name the keys derived from the cluster secret; a MAC made for
// one purpose never verifies for another.
const (
	PurposeFailsafe = "petrel failsafe v1"
)

// Key derives the purpose key of cluster from its secret.
func Key(secret []byte, cluster, purpose string) ([]byte, error) {
	if len(secret) < 16 {
		return nil, errors.New("deriving a peer key: the cluster secret is missing or too short")
	}
	k, err := hkdf.Key(sha256.New, secret, []byte("petrel cluster "+cluster), purpose, 32)
	if err != nil {
		return nil, fmt.Errorf("deriving a peer key: %w", err)
	}
	return k, nil
}

// Header is what every authenticated message carries besides its own
// fields.
type Header struct {
	Sender     string `json:"sender"`
	Target     string `json:"target"`
	Nonce      string `json:"nonce"` // 16 random bytes, hex
	SentUnixMs int64  `json:"sent_unix_ms"`
	MAC        string `json:"mac"` // hex HMAC-SHA256
}

// NewNonce returns a fresh random nonce.
func NewNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// MAC computes a message's MAC: every field length-prefixed, so no two
// different messages share an input.
func MAC(key []byte, h Header, fields ...string) string {
	m := hmac.New(sha256.New, key)
	put := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		m.Write(n[:])
		m.Write([]byte(s))
	}
	put(h.Sender)
	put(h.Target)
	put(h.Nonce)
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(h.SentUnixMs))
	m.Write(t[:])
	for _, f := range fields {
		put(f)
	}
	return hex.EncodeToString(m.Sum(nil))
}

// Sign fills h's nonce, time and MAC for a message from sender to target.
func Sign(key []byte, sender, target string, now time.Time, fields ...string) Header {
	h := Header{Sender: sender, Target: target, Nonce: NewNonce(), SentUnixMs: now.UnixMilli()}
	h.MAC = MAC(key, h, fields...)
	return h
}

// Errors a Verifier returns, so callers can tell them apart.
var (
	ErrBadMAC      = errors.New("bad signature")
	ErrWrongTarget = errors.New("the message is for another member")
	ErrReplay      = errors.New("replayed message (nonce already seen)")
	ErrStale       = errors.New("stale message (outside the clock window)")
	ErrBusy        = errors.New("too many recent messages to remember their nonces")
)

// maxNonces bounds the nonces remembered: far above the genuine rate
// (a leader asks each member a few times a second) times the window.
const maxNonces = 1 << 14

// Verifier checks messages addressed to one member.
type Verifier struct {
	self string
	skew time.Duration

	mu   sync.Mutex
	seen map[string]time.Time // nonce → when it may be forgotten
}

// NewVerifier verifies messages for self, accepting send times within
// skew of its clock.
func NewVerifier(self string, skew time.Duration) *Verifier {
	return &Verifier{self: self, skew: skew, seen: map[string]time.Time{}}
}

// Verify checks h (and the message's fields) under key at now. A
// message that passes is remembered: the same nonce never passes again.
func (v *Verifier) Verify(key []byte, h Header, now time.Time, fields ...string) error {
	if len(h.Nonce) != 32 {
		return fmt.Errorf("%w: malformed nonce", ErrBadMAC)
	}
	// The MAC first: nothing unauthenticated is remembered or answered
	// with more than "bad signature".
	if !hmac.Equal([]byte(h.MAC), []byte(MAC(key, h, fields...))) {
		return ErrBadMAC
	}
	if h.Target != v.self {
		return fmt.Errorf("%w: %q, this is %q", ErrWrongTarget, h.Target, v.self)
	}
	sent := time.UnixMilli(h.SentUnixMs)
	if d := now.Sub(sent); d > v.skew || d < -v.skew {
		return fmt.Errorf("%w: sent %v ago", ErrStale, d.Round(time.Millisecond))
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	for n, until := range v.seen {
		if now.After(until) {
			delete(v.seen, n)
		}
	}
	if _, dup := v.seen[h.Nonce]; dup {
		return ErrReplay
	}
	if len(v.seen) >= maxNonces {
		return ErrBusy
	}
	// Past sent+skew the time check refuses the message anyway.
	v.seen[h.Nonce] = sent.Add(v.skew)
	return nil
}
