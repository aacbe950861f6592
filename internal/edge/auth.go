package edge

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Keys derived from the edge secret (EDGE_SECRET): one for requests
// between edges, one for read-your-writes tokens, so neither can be
// passed off as the other.
type keys struct {
	auth, token []byte
}

func deriveKeys(secret string) keys {
	d := func(label string) []byte {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(label))
		return m.Sum(nil)
	}
	return keys{auth: d("petrel edge request v1"), token: d("petrel ryw token v1")}
}

// authWindow bounds the clock skew between edges and how long a signed
// request stays valid; the nonce cache remembers signatures that long,
// so a captured request cannot be replayed by anyone else.
const authWindow = 10 * time.Second

// signRequest signs what a receiving edge acts on: the method, the
// request URI, the internal headers, fly-replay-src and the body's digest.
func signRequest(k []byte, r *http.Request, bodySum []byte, now time.Time) {
	var nonce [12]byte
	_, _ = rand.Read(nonce[:])
	t := strconv.FormatInt(now.UnixMilli(), 10)
	n := hex.EncodeToString(nonce[:])
	r.Header.Set(headerEdgeAuth, "v1;t="+t+";n="+n+";s="+authMAC(k, r, bodySum, t, n))
}

func authMAC(k []byte, r *http.Request, bodySum []byte, t, n string) string {
	m := hmac.New(sha256.New, k)
	for _, s := range []string{
		r.Method, r.URL.RequestURI(), t, n,
		r.Header.Get(headerEdgeHops), r.Header.Get(headerEdgeKind), r.Header.Get(headerEdgeInstance),
		r.Header.Get(headerEdgeOrigin), r.Header.Get(headerEdgeTimeout), r.Header.Get(HeaderReplaySrc), r.Header.Get(HeaderReplayFailed),
		hex.EncodeToString(bodySum),
	} {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// nonces remembers recently seen signatures.
type nonces struct {
	mu   sync.Mutex // guards seen
	seen map[string]time.Time
}

var errAuth = errors.New("edge request not authenticated")

// verify checks r's signature (its body digest given) and that it was
// not seen before. A nil error means the request came from an edge of
// this cluster.
func (ns *nonces) verify(k []byte, r *http.Request, bodySum []byte, now time.Time) error {
	v := r.Header.Get(headerEdgeAuth)
	ver, rest, _ := strings.Cut(v, ";")
	if ver != "v1" {
		return fmt.Errorf("%w: no v1 signature", errAuth)
	}
	var t, n, s string
	for _, p := range strings.Split(rest, ";") {
		k, val, _ := strings.Cut(p, "=")
		switch k {
		case "t":
			t = val
		case "n":
			n = val
		case "s":
			s = val
		}
	}
	ms, err := strconv.ParseInt(t, 10, 64)
	if err != nil || len(n) != 24 {
		return fmt.Errorf("%w: malformed", errAuth)
	}
	at := time.UnixMilli(ms)
	if d := now.Sub(at); d > authWindow || d < -authWindow {
		return fmt.Errorf("%w: timestamp %v away", errAuth, d.Round(time.Millisecond))
	}
	want := authMAC(k, r, bodySum, t, n)
	if !hmac.Equal([]byte(want), []byte(s)) {
		return fmt.Errorf("%w: bad signature", errAuth)
	}
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.seen == nil {
		ns.seen = map[string]time.Time{}
	}
	if _, dup := ns.seen[s]; dup {
		return fmt.Errorf("%w: replayed signature", errAuth)
	}
	if len(ns.seen) > 4096 {
		for sig, exp := range ns.seen {
			if now.After(exp) {
				delete(ns.seen, sig)
			}
		}
	}
	ns.seen[s] = at.Add(2 * authWindow)
	return nil
}
