// Package adminclient is a typed client of the members' admin API
// (internal/dashboard, /api/v1/...): what the CLI's cluster commands call
// instead of writing etcd and logging in to Postgres themselves.
//
// It reaches members over TLS through api.Client (each answer from a
// server certified by the cluster CA, naming the member asked when its id
// is known), sticks to the first member that answers and moves to the
// next when one is unreachable: on any failure for a read, and for a
// request that changes something only when it never reached the member
// (dial or TLS handshake failed), so nothing is done twice. It
// authenticates with HTTP Basic credentials, trying the next ones when a
// member refuses them (401, 403), and turns the API's JSON errors
// ({"error": "..."}) into *Error values that errors.Is matches against
// ErrBadRequest, ErrUnauthorized, ErrNotFound and ErrConflict.
package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/petrel-db/petrel/internal/api"
)

// Member is a member's admin API: its id (checked against the node
// certificate; "" accepts any member of the cluster) and base URL.
type Member struct {
	ID  string
	URL string // https://host:port
}

// Credential is one HTTP Basic login: the operator (OPERATOR_PASSWORD) or
// the superuser (postgres, SU_PASSWORD; members accept it only from
// their admin networks).
type Credential struct {
	User, Password string
}

// Options tune a Client.
type Options struct {
	// RequestTimeout bounds one request once a member answered (default
	// 60 s: a switchover's request waits for the new leader).
	RequestTimeout time.Duration
	// ProbeTimeout bounds reaching a member (default 3 s).
	ProbeTimeout time.Duration
	// Dial rewrites host:port before dialling (the local world's links).
	Dial func(addr string) string
}

// Client calls the admin API of a cluster's members.
type Client struct {
	members []Member
	creds   []Credential
	probe   *api.Client
	long    *api.Client

	mu   sync.Mutex
	cur  int // the member in use (-1: none chosen yet)
	cred int // the credential in use
}

// New is a client of members (tried in order) trusting caPEM, the cluster
// CA, logging in with creds (tried in order).
func New(caPEM []byte, cluster string, members []Member, creds []Credential, o Options) (*Client, error) {
	if len(members) == 0 {
		return nil, errors.New("no member's admin API to ask")
	}
	if len(creds) == 0 {
		return nil, errors.New("no admin credentials")
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 60 * time.Second
	}
	if o.ProbeTimeout <= 0 {
		o.ProbeTimeout = 3 * time.Second
	}
	probe, err := api.NewClient(caPEM, cluster, api.ClientOptions{Timeout: o.ProbeTimeout, Dial: o.Dial})
	if err != nil {
		return nil, err
	}
	long, err := api.NewClient(caPEM, cluster, api.ClientOptions{Timeout: o.RequestTimeout, Dial: o.Dial})
	if err != nil {
		return nil, err
	}
	return &Client{members: members, creds: creds, probe: probe, long: long, cur: -1}, nil
}

// Close closes idle connections.
func (c *Client) Close() {
	c.probe.CloseIdle()
	c.long.CloseIdle()
}

// Member is the member the client talks to now ("" before the first
// request, or when its id is unknown).
func (c *Client) Member() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur < 0 {
		return ""
	}
	return c.members[c.cur].ID
}

// The kinds of *Error, for errors.Is.
var (
	ErrBadRequest   = errors.New("bad request")
	ErrUnauthorized = errors.New("not authorized")
	ErrNotFound     = errors.New("not found")
	ErrConflict     = errors.New("refused by the cluster")
	// ErrUnreachable: no member's admin API answered.
	ErrUnreachable = errors.New("no member's admin API answered")
)

// Error is the admin API's answer to a request it did not carry out.
type Error struct {
	Method, Path string
	Member       string // the member's id or URL
	Status       int
	Message      string // the API's "error"
	// Body is the whole JSON answer (a 409 may carry the operation
	// running).
	Body json.RawMessage
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (admin API of %s: %s %s: %d %s)", e.Message, e.Member, e.Method, e.Path, e.Status, http.StatusText(e.Status))
}

// Is matches the kind of refusal.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrBadRequest:
		return e.Status == http.StatusBadRequest || e.Status == http.StatusUnsupportedMediaType || e.Status == http.StatusRequestEntityTooLarge
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrConflict:
		return e.Status == http.StatusConflict
	}
	return false
}

// doHere is do on the member in use only (state that is the member's
// own, like its operation): a transport error is returned, never sent
// elsewhere.
func (c *Client) doHere(ctx context.Context, method, path string, out any) error {
	c.mu.Lock()
	cur, cred := c.cur, c.cred
	c.mu.Unlock()
	if cur < 0 {
		return errors.New("no member in use yet")
	}
	m := c.members[cur]
	status, answer, _, err := c.send(ctx, m, method, path, nil, c.creds[cred])
	if err != nil {
		return fmt.Errorf("%s %s on %s: %w", method, path, name(m), err)
	}
	return decode(method, path, name(m), status, answer, out)
}

// maxAnswer bounds an answer's size (the events, 1000 of them, are the
// largest).
const maxAnswer = 8 << 20

// do sends method path (with a JSON body unless nil) and decodes a 2xx
// answer into out (unless nil). Non-2xx answers become *Error.
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return fmt.Errorf("encoding the request: %w", err)
		}
	}
	idempotent := method == http.MethodGet
	var errs []error
	c.mu.Lock()
	cur, cred := c.cur, c.cred
	c.mu.Unlock()
	start := cur
	if start < 0 {
		start = 0
	}
	for i := 0; i < len(c.members); i++ {
		mi := (start + i) % len(c.members)
		m := c.members[mi]
		if mi != cur {
			// A member not in use yet is probed with a short timeout
			// first, so a hung one costs seconds, not the request's.
			if err := c.reach(ctx, m); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		for {
			status, answer, sent, err := c.send(ctx, m, method, path, payload, c.creds[cred])
			if err != nil {
				if ctx.Err() != nil {
					return fmt.Errorf("%s %s on %s: %w", method, path, name(m), err)
				}
				if sent && !idempotent {
					// It may have been carried out: never again elsewhere.
					return fmt.Errorf("%s %s on %s: %w (it may or may not have been carried out)", method, path, name(m), err)
				}
				errs = append(errs, fmt.Errorf("%s: %w", name(m), err))
				break
			}
			if (status == http.StatusUnauthorized || status == http.StatusForbidden) && cred+1 < len(c.creds) {
				cred++ // refused before anything was done: the next login
				continue
			}
			c.mu.Lock()
			c.cur, c.cred = mi, cred
			c.mu.Unlock()
			return decode(method, path, name(m), status, answer, out)
		}
	}
	return fmt.Errorf("%w: %w", ErrUnreachable, errors.Join(errs...))
}

func name(m Member) string {
	if m.ID != "" {
		return m.ID
	}
	return m.URL
}

// reach checks m's API answers (any status: GET /health says more than
// that, but any answer will do).
func (c *Client) reach(ctx context.Context, m Member) error {
	u := strings.TrimRight(m.URL, "/") + "/health"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", name(m), err)
	}
	resp, err := c.probe.Do(req, m.ID)
	if err != nil {
		return fmt.Errorf("%s: %w", name(m), err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return nil
}

// send makes one request; sent says whether it was written (when it
// fails after, the member may have acted on it).
func (c *Client) send(ctx context.Context, m Member, method, path string, payload []byte, cred Credential) (int, []byte, bool, error) {
	var sent bool
	var mu sync.Mutex
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { mu.Lock(); sent = true; mu.Unlock() }}
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), method, strings.TrimRight(m.URL, "/")+path, rd)
	if err != nil {
		return 0, nil, false, err
	}
	req.SetBasicAuth(cred.User, cred.Password)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.long.Do(req, m.ID)
	mu.Lock()
	wrote := sent
	mu.Unlock()
	if err != nil {
		return 0, nil, wrote, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return 0, nil, true, fmt.Errorf("reading the answer: %w", err)
	}
	return resp.StatusCode, b, true, nil
}

func decode(method, path, member string, status int, answer []byte, out any) error {
	if status < 200 || status > 299 {
		e := &Error{Method: method, Path: path, Member: member, Status: status, Body: answer}
		var m struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(answer, &m) == nil && m.Error != "" {
			e.Message = m.Error
		} else {
			e.Message = strings.TrimSpace(string(answer))
			if len(e.Message) > 200 {
				e.Message = e.Message[:200] + "..."
			}
			if e.Message == "" {
				e.Message = http.StatusText(status)
			}
		}
		e.Body = append(json.RawMessage(nil), answer...)
		return e
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(answer, out); err != nil {
		return fmt.Errorf("%s %s on %s: decoding the answer: %w", method, path, member, err)
	}
	return nil
}

func query(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			v.Set(kv[i], kv[i+1])
		}
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}
