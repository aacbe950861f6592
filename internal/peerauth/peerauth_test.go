package peerauth

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestKeys(t *testing.T) {
	secret := bytes.Repeat([]byte{7}, 32)
	a, err := Key(secret, "c1", PurposeFailsafe)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Key(secret, "c2", PurposeFailsafe)
	c, _ := Key(secret, "c1", "petrel other v1")
	d, _ := Key(bytes.Repeat([]byte{8}, 32), "c1", PurposeFailsafe)
	if bytes.Equal(a, b) || bytes.Equal(a, c) || bytes.Equal(a, d) || bytes.Equal(a, secret) {
		t.Fatal("keys for different clusters, purposes or secrets coincide")
	}
	if _, err := Key(nil, "c1", PurposeFailsafe); err == nil {
		t.Fatal("a key from an empty secret")
	}
}

func TestVerify(t *testing.T) {
	key, _ := Key(bytes.Repeat([]byte{1}, 32), "c1", PurposeFailsafe)
	other, _ := Key(bytes.Repeat([]byte{2}, 32), "c1", PurposeFailsafe)
	now := time.Unix(1_800_000_000, 0)
	v := NewVerifier("n2", 5*time.Second)

	h := Sign(key, "n1", "n2", now, "3000")
	if err := v.Verify(key, h, now.Add(time.Second), "3000"); err != nil {
		t.Fatalf("a genuine message: %v", err)
	}
	if err := v.Verify(key, h, now.Add(2*time.Second), "3000"); !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed: %v", err)
	}

	for name, tc := range map[string]struct {
		h      Header
		key    []byte
		fields []string
		at     time.Time
		want   error
	}{
		"redirected":      {Sign(key, "n1", "n3", now, "3000"), key, []string{"3000"}, now, ErrWrongTarget},
		"other key":       {Sign(other, "n1", "n2", now, "3000"), key, []string{"3000"}, now, ErrBadMAC},
		"altered field":   {Sign(key, "n1", "n2", now, "3000"), key, []string{"60000"}, now, ErrBadMAC},
		"stale":           {Sign(key, "n1", "n2", now, "3000"), key, []string{"3000"}, now.Add(6 * time.Second), ErrStale},
		"from the future": {Sign(key, "n1", "n2", now.Add(6*time.Second), "3000"), key, []string{"3000"}, now, ErrStale},
		"sender changed": {func() Header {
			h := Sign(key, "n1", "n2", now, "3000")
			h.Sender = "n4"
			return h
		}(), key, []string{"3000"}, now, ErrBadMAC},
		"target changed after signing": {func() Header {
			h := Sign(key, "n1", "n3", now, "3000")
			h.Target = "n2"
			return h
		}(), key, []string{"3000"}, now, ErrBadMAC},
		"tampered MAC": {func() Header {
			h := Sign(key, "n1", "n2", now, "3000")
			b := []byte(h.MAC)
			b[0] ^= 1
			h.MAC = string(b)
			return h
		}(), key, []string{"3000"}, now, ErrBadMAC},
		"time changed": {func() Header {
			h := Sign(key, "n1", "n2", now.Add(-time.Minute), "3000")
			h.SentUnixMs = now.UnixMilli()
			return h
		}(), key, []string{"3000"}, now, ErrBadMAC},
	} {
		if err := v.Verify(tc.key, tc.h, tc.at, tc.fields...); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}

	// A refused message does not burn its nonce; and a nonce is forgotten
	// only once the clock window refuses it anyway.
	h2 := Sign(key, "n1", "n2", now, "3000")
	if err := v.Verify(key, h2, now, "4000"); !errors.Is(err, ErrBadMAC) {
		t.Fatal(err)
	}
	if err := v.Verify(key, h2, now, "3000"); err != nil {
		t.Fatalf("after a refused copy: %v", err)
	}
	if err := v.Verify(key, h2, now.Add(5*time.Second), "3000"); !errors.Is(err, ErrReplay) {
		t.Fatalf("replayed at the window's edge: %v", err)
	}
	if err := v.Verify(key, h2, now.Add(5*time.Second+time.Millisecond), "3000"); !errors.Is(err, ErrStale) {
		t.Fatalf("replayed past the window: %v", err)
	}
}
