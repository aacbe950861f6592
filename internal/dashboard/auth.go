package dashboard

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// The admin API's credentials: the operator's password (HTTP Basic, user
// "operator") or a token derived from it. A token is
// "v1.<expiry unix seconds>.<hex HMAC-SHA256>", keyed by a key derived
// from the password, so any member can check a token another issued,
// changing the password revokes every token, and the password itself
// never has to be kept by the browser.

// TokenTTL is how long an issued token is valid.
const TokenTTL = 12 * time.Hour

// Operator is the admin API's principal; Superuser is accepted too
// (HTTP Basic only, from the admin networks: see Options.Superuser).
const (
	Operator  = "operator"
	Superuser = "postgres"
)

type authenticator struct {
	password []byte // the operator's password ("" refuses everything)
	key      []byte // the token key
	now      func() time.Time
}

func newAuthenticator(password string) *authenticator {
	m := hmac.New(sha256.New, []byte(password))
	m.Write([]byte("petrel admin api token key v1"))
	return &authenticator{password: []byte(password), key: m.Sum(nil), now: time.Now}
}

var (
	errNoCredentials  = errors.New("credentials required: HTTP Basic as operator with OPERATOR_PASSWORD, or Authorization: Bearer <token from POST /api/v1/token>")
	errBadCredentials = errors.New("bad credentials")
	// errNotAdminNetwork: the superuser's password, from outside the
	// admin networks (403).
	errNotAdminNetwork = errors.New("the superuser is accepted only from the admin networks (admin_networks, default loopback): use the operator's password (OPERATOR_PASSWORD)")
)

// token issues a token valid for TokenTTL.
func (a *authenticator) token() (string, time.Time) {
	exp := a.now().Add(TokenTTL).Truncate(time.Second)
	return a.sign(exp.Unix()), exp
}

func (a *authenticator) sign(exp int64) string {
	m := hmac.New(sha256.New, a.key)
	fmt.Fprintf(m, "v1.%d", exp)
	return fmt.Sprintf("v1.%d.%s", exp, hex.EncodeToString(m.Sum(nil)))
}

// check authenticates r; it returns the principal and how it proved it.
func (a *authenticator) check(r *http.Request) (string, string, error) {
	if len(a.password) == 0 {
		return "", "", errors.New("this node has no operator password: the admin API is closed")
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", "", errNoCredentials
	}
	if user, pass, ok := r.BasicAuth(); ok {
		// Both compared in constant time, whatever the user.
		okUser := subtle.ConstantTimeCompare([]byte(user), []byte(Operator))
		okPass := subtle.ConstantTimeCompare([]byte(pass), a.password)
		if okUser&okPass != 1 {
			return "", "", errBadCredentials
		}
		return Operator, "password", nil
	}
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return "", "", errNoCredentials
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || parts[0] != "v1" {
		return "", "", errBadCredentials
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return "", "", errBadCredentials
	}
	if !hmac.Equal([]byte(a.sign(exp)), []byte(tok)) {
		return "", "", errBadCredentials
	}
	now := a.now()
	if now.Unix() >= exp {
		return "", "", errors.New("token expired: get a new one from POST /api/v1/token")
	}
	if time.Unix(exp, 0).After(now.Add(TokenTTL + time.Minute)) {
		return "", "", errBadCredentials // signed, but for longer than any token is issued
	}
	return Operator, "token", nil
}

// authenticate checks r's credentials: the operator's (password or
// token, see check), or the superuser's password from an admin network.
func (s *Server) authenticate(r *http.Request) (string, string, error) {
	if user, pass, ok := r.BasicAuth(); ok && user == Superuser {
		su := s.superuserPassword()
		if su == "" || subtle.ConstantTimeCompare([]byte(pass), []byte(su)) != 1 {
			return "", "", errBadCredentials
		}
		if !s.fromAdminNetwork(r) {
			return "", "", errNotAdminNetwork
		}
		return Superuser, "password", nil
	}
	return s.auth().check(r)
}

func (s *Server) superuserPassword() string {
	if s.o.Superuser == nil {
		return ""
	}
	return s.o.Superuser()
}

// fromAdminNetwork: r's peer address is in the admin networks.
func (s *Server) fromAdminNetwork(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range s.adminNets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseNetworks parses CIDRs (bad ones are left out: the node's config
// was checked when loaded); none is loopback.
func parseNetworks(cidrs []string) []netip.Prefix {
	if len(cidrs) == 0 {
		cidrs = []string{"127.0.0.0/8", "::1/128"}
	}
	var ps []netip.Prefix
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil {
			ps = append(ps, p.Masked())
		} else if a, err := netip.ParseAddr(c); err == nil {
			ps = append(ps, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return ps
}
