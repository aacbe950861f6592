package edge

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-db/petrel/pkg/flyreplay"
)

// CookieName is the read-your-writes cookie the edges set after a write.
const CookieName = flyreplay.TokenCookie

// TokenMaxAge is how long a read-your-writes token is honoured. Replicas
// trail by well under a second, so after this any replica is past it.
const TokenMaxAge = 5 * time.Minute

// token is a read-your-writes token: the leader's position after a write
// and when it was minted, signed by the edge that minted it.
type token struct {
	Pos    flyreplay.Position
	Minted time.Time
}

// encodeToken renders "<position>~<unix ms>~<mac>" (cookie-safe).
func encodeToken(k []byte, t token) string {
	body := t.Pos.String() + "~" + strconv.FormatInt(t.Minted.UnixMilli(), 10)
	return body + "~" + tokenMAC(k, body)
}

func tokenMAC(k []byte, body string) string {
	m := hmac.New(sha256.New, k)
	m.Write([]byte(body))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}

// decodeToken returns the token in v if it is well formed, signed with k
// and not expired. Anything else (garbage, a forgery, an old token) is
// no token at all: a client gains nothing by sending one.
func decodeToken(k []byte, v string, now time.Time) (token, bool) {
	if len(v) > 128 {
		return token{}, false
	}
	i := strings.LastIndexByte(v, '~')
	if i < 0 {
		return token{}, false
	}
	body, mac := v[:i], v[i+1:]
	if !hmac.Equal([]byte(tokenMAC(k, body)), []byte(mac)) {
		return token{}, false
	}
	pos, minted, err := flyreplay.ParseToken(v)
	if err != nil {
		return token{}, false
	}
	t := token{Pos: pos, Minted: minted}
	if age := now.Sub(t.Minted); age > TokenMaxAge || age < -time.Minute {
		return token{}, false
	}
	return t, true
}

// tokenFromRequest reads the request's cookie, if valid.
func tokenFromRequest(k []byte, r *http.Request, now time.Time) (token, bool) {
	for _, c := range r.CookiesNamed(CookieName) {
		if t, ok := decodeToken(k, c.Value, now); ok {
			return t, true
		}
	}
	return token{}, false
}

// stickyFor is how long a sticky token (minted when the leader's
// position could not be read) sends a user's reads to the primary region.
const stickyFor = 10 * time.Second

// stickyToken names a position no replica can hold (the last timeline),
// so reads carrying it are replayed in the primary region; it is dated so
// that it expires stickyFor from now.
func stickyToken(now time.Time) token {
	return token{Pos: flyreplay.Position{Timeline: math.MaxUint32, LSN: math.MaxUint64}, Minted: now.Add(stickyFor - TokenMaxAge)}
}

func tokenCookie(k []byte, t token) *http.Cookie {
	return &http.Cookie{
		Name: CookieName, Value: encodeToken(k, t), Path: "/",
		MaxAge: int(TokenMaxAge / time.Second), HttpOnly: true, SameSite: http.SameSiteLaxMode,
	}
}
