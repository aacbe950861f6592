package flyreplay

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// TokenCookie is the read-your-writes cookie petrel's edges set after a
// write served in the primary region:
//
//	<timeline>/<LSN hi>/<LSN lo>~<minted, Unix ms>~<signature>
//
// The signature is the edges' (HMAC under EDGE_SECRET); they ignore a
// token they did not sign.
const TokenCookie = "petrel-ryw"

// ParseToken reads the position and mint time of a token WITHOUT checking
// its signature (only the edges hold the key). An app may use it to wait
// for its replica itself (WaitReplayed, with a deadline): a forged token
// then costs its sender a bounded wait, nothing more. Never use it to
// decide what a user may see.
func ParseToken(v string) (Position, time.Time, error) {
	if len(v) > 128 {
		return Position{}, time.Time{}, fmt.Errorf("token: longer than 128 bytes")
	}
	parts := strings.Split(v, "~")
	if len(parts) != 3 {
		return Position{}, time.Time{}, fmt.Errorf("token %q: want position~time~signature", v)
	}
	pos, err := ParsePosition(parts[0])
	if err != nil {
		return Position{}, time.Time{}, fmt.Errorf("token: %w", err)
	}
	ms, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return Position{}, time.Time{}, fmt.Errorf("token: bad time %q", parts[1])
	}
	return pos, time.UnixMilli(ms), nil
}

// TokenFromRequest reads the request's token cookie (unverified, see
// ParseToken).
func TokenFromRequest(r *http.Request) (Position, time.Time, bool) {
	for _, c := range r.CookiesNamed(TokenCookie) {
		if p, t, err := ParseToken(c.Value); err == nil {
			return p, t, true
		}
	}
	return Position{}, time.Time{}, false
}
