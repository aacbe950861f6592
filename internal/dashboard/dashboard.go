// Package dashboard serves, from every agent's API port, the cluster's web
// dashboard and the admin API.
//
// The dashboard (GET /dashboard/, assets embedded) shows every region and
// member (role, state, health, timeline, lag as a live chart), the leader
// proxies, the edges and the recent events, over one server-sent-events
// stream (GET /api/v1/stream) that any node can serve for the whole
// cluster: it reads the store and asks its peers' /status itself.
//
// The admin API (/api/v1/...) carries out the CLI's cluster commands
// (internal/adminclient is its client), through internal/ops: switchover,
// rolling restart, events, status, config, apps, users, databases,
// backups (the catalog, one now, the store's configuration, prune,
// verify). Every request but the read-only view and stream needs the
// operator's credentials, or the superuser's from the admin networks (see
// auth.go), is logged with its principal, and gets JSON back: a clear
// error for bad input, 401 without valid credentials, 403 for the
// superuser from elsewhere (and nothing changed).
package dashboard

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/model"
	"github.com/petrel-db/petrel/internal/ops"
	"github.com/petrel-db/petrel/internal/store"
	clientv3 "go.etcd.io/etcd/client/v3"
)

//go:embed assets
var assets embed.FS

// Options configure a node's dashboard and admin API.
type Options struct {
	Cluster string
	Self    string // this member's id
	Store   Store
	// OperatorPassword authenticates the admin API ("" closes it).
	OperatorPassword string
	// Superuser is the superuser's password in use now (it follows a
	// rotation; nil or "": the superuser is not accepted). The admin API
	// takes it (HTTP Basic as postgres) only from AdminNetworks, the
	// networks Postgres takes its TCP logins from, and then acts on the
	// leader's Postgres as the superuser.
	Superuser func() string
	// AdminNetworks are the CIDRs the superuser may call from (default:
	// loopback, as pg_hba.conf).
	AdminNetworks []string
	Log           *slog.Logger
	// API asks the peers for /status and /metrics (the node's own client:
	// TLS, each answer from the member asked). Nil: no member answers.
	API *api.Client
	// CA is the node's pinned cluster CA certificate (nil before it has
	// one): the admin connections to the leader's Postgres verify it.
	CA func() []byte
	// Backups lists the backup catalog, takes a backup on request, and
	// configures, prunes and verifies the store (the node's archiver;
	// nil: 409).
	Backups Backups
}

// Store is what the dashboard reads of the node's store (*store.Store).
type Store interface {
	Snapshot() store.Snapshot
	OK() bool
	Edges() []store.Edge
	Client() *clientv3.Client
}

// Server is one node's dashboard and admin API.
type Server struct {
	o Options
	// authP checks the admin API's credentials; replaced whole when the
	// operator password is rotated (SetOperatorPassword).
	authP atomic.Pointer[authenticator]
	// adminNets are where the superuser's credentials are taken from.
	adminNets []netip.Prefix
	hub       *hub

	opMu   sync.Mutex
	op     *operation // the running or last long operation
	nextOp int64
	opWG   sync.WaitGroup
	opCtx  context.Context
	opStop context.CancelFunc
}

// New builds the server; Close stops what it started.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	col := &collector{cluster: o.Cluster, self: o.Self, st: o.Store, api: o.API, samples: map[string]proxySample{}}
	s := &Server{o: o,
		hub: &hub{col: col, etcd: o.Store.Client(), cluster: o.Cluster, log: o.Log, subs: map[chan struct{}]bool{}}}
	s.authP.Store(newAuthenticator(o.OperatorPassword))
	s.adminNets = parseNetworks(o.AdminNetworks)
	s.opCtx, s.opStop = context.WithCancel(context.Background())
	return s
}

func (s *Server) auth() *authenticator { return s.authP.Load() }

// SetOperatorPassword makes the admin API accept password (and tokens
// derived from it) from now on, and refuse the previous one and its
// tokens: a rotation of the operator password (internal/agent calls it
// when its member switches).
func (s *Server) SetOperatorPassword(password string) {
	s.authP.Store(newAuthenticator(password))
}

// Close stops the stream's gathering and any running operation.
func (s *Server) Close() {
	s.opStop()
	s.opWG.Wait()
	s.hub.close()
}

// Wrap serves the dashboard and the admin API, and everything else from
// next (the node's own endpoints).
func (s *Server) Wrap(next http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", next)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/dashboard/", http.StatusFound)
	})
	sub, _ := fs.Sub(assets, "assets")
	files := http.StripPrefix("/dashboard/", http.FileServerFS(sub))
	mux.Handle("GET /dashboard/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	}))
	api := http.NewServeMux()
	api.HandleFunc("GET /api/v1/stream", s.hub.serveStream)
	api.HandleFunc("GET /api/v1/view", s.public(s.getView))
	api.HandleFunc("POST /api/v1/token", s.authed(s.postToken))
	api.HandleFunc("GET /api/v1/status", s.authed(s.getStatus))
	api.HandleFunc("GET /api/v1/events", s.authed(s.getEvents))
	api.HandleFunc("POST /api/v1/switchover", s.authed(s.postSwitchover))
	api.HandleFunc("POST /api/v1/restart", s.authed(s.postRestart))
	api.HandleFunc("GET /api/v1/operation", s.authed(s.getOperation))
	api.HandleFunc("GET /api/v1/config", s.authed(s.getConfig))
	api.HandleFunc("PUT /api/v1/config", s.authed(s.putConfig))
	api.HandleFunc("POST /api/v1/apps", s.authed(s.postApps))
	api.HandleFunc("DELETE /api/v1/apps/{app}", s.authed(s.deleteApp))
	api.HandleFunc("GET /api/v1/users", s.authed(s.getUsers))
	api.HandleFunc("POST /api/v1/users", s.authed(s.postUsers))
	api.HandleFunc("DELETE /api/v1/users/{name}", s.authed(s.deleteUser))
	api.HandleFunc("POST /api/v1/users/{name}/password", s.authed(s.postUserPassword))
	api.HandleFunc("GET /api/v1/databases", s.authed(s.getDatabases))
	api.HandleFunc("GET /api/v1/backups", s.authed(s.getBackups))
	api.HandleFunc("POST /api/v1/backups", s.authed(s.postBackups))
	api.HandleFunc("POST /api/v1/backups/prune", s.authed(s.postPrune))
	api.HandleFunc("GET /api/v1/backups/verify", s.authed(s.getVerify))
	api.HandleFunc("GET /api/v1/backups/running", s.authed(s.getRunningBackup))
	api.HandleFunc("GET /api/v1/backup/config", s.authed(s.getBackupConfig))
	api.HandleFunc("PUT /api/v1/backup/config", s.authed(s.putBackupConfig))
	api.HandleFunc("POST /api/v1/databases", s.authed(s.postDatabases))
	api.HandleFunc("/api/v1/", s.authed(func(w http.ResponseWriter, r *http.Request, _ string) {
		writeError(w, http.StatusNotFound, "no such admin API endpoint: "+r.Method+" "+r.URL.Path)
	}))
	mux.Handle("/api/v1/", s.logged(api))
	return mux
}

// statusRecorder keeps the status code for the request log.
type statusRecorder struct {
	http.ResponseWriter
	code      int
	principal string
}

func (r *statusRecorder) WriteHeader(code int)        { r.code = code; r.ResponseWriter.WriteHeader(code) }
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// logged logs every admin API request: who, what, the outcome.
func (s *Server) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK, principal: "-"}
		h.ServeHTTP(rec, r)
		if r.URL.Path == "/api/v1/stream" {
			s.o.Log.Debug("admin api", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "duration", time.Since(start).Round(time.Millisecond))
			return
		}
		s.o.Log.Info("admin api", "method", r.Method, "path", r.URL.Path, "principal", rec.principal, "remote", r.RemoteAddr,
			"status", rec.code, "duration", time.Since(start).Round(time.Millisecond))
	})
}

func (s *Server) public(h func(http.ResponseWriter, *http.Request)) http.HandlerFunc { return h }

// authed runs h only for an authenticated operator; otherwise 401 and
// nothing else happens (the body is not even read).
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		who, how, err := s.authenticate(r)
		if errors.Is(err, errNotAdminNetwork) {
			writeError(w, http.StatusForbidden, err.Error())
			return
		}
		if err != nil {
			// Bearer, not Basic: a browser would pop its own password dialog.
			w.Header().Set("WWW-Authenticate", `Bearer realm="petrel"`)
			writeError(w, http.StatusUnauthorized, err.Error())
			return
		}
		if rec, ok := w.(*statusRecorder); ok {
			rec.principal = who + "/" + how
		}
		h(w, r, who+"@"+remoteHost(r))
	}
}

func remoteHost(r *http.Request) string {
	if h, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return h
	}
	return r.RemoteAddr
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError is every admin API error: {"error": "..."}.
func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// decodeBody reads a small JSON body into v, refusing unknown fields,
// trailing data and oversized bodies. An empty body leaves v as it is.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusUnsupportedMediaType, "send application/json")
		return false
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 4<<10))
	if err != nil {
		writeError(w, http.StatusRequestEntityTooLarge, "request body: "+err.Error())
		return false
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return true
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "bad request body: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "bad request body: more than one JSON value")
		return false
	}
	return true
}

// ops is the operations' handle for actor ("<principal>@<host>", as
// authed makes it).
func (s *Server) ops(actor string, out io.Writer) *ops.Cluster {
	c := &ops.Cluster{Etcd: s.o.Store.Client(), Name: s.o.Cluster, Out: out, Actor: "api:" + actor, API: s.o.API}
	// The API acts on Postgres as the role whose password the caller
	// gave: the operator, or the superuser (only from the admin
	// networks), over TLS verified against the cluster CA.
	asSuperuser := roleOf(actor) == Superuser
	c.ConnectLeaderDB = func(ctx context.Context, db string) (*pgx.Conn, error) {
		// The node's pinned CA, never the store's word for it.
		var ca []byte
		if s.o.CA != nil {
			ca = s.o.CA()
		}
		if ca == nil {
			return nil, errors.New("this node holds no cluster CA yet")
		}
		admin := ops.Admin{User: Operator, Password: string(s.auth().password), CAPEM: ca}
		if asSuperuser {
			admin.User, admin.Password = Superuser, s.superuserPassword()
			if admin.Password == "" {
				return nil, errors.New("this node holds no superuser password")
			}
		}
		return c.ConnectLeaderAs(ctx, admin, db)
	}
	c.ConnectLeader = func(ctx context.Context) (*pgx.Conn, error) { return c.ConnectLeaderDB(ctx, "postgres") }
	return c
}

// AttachBody is POST /api/v1/apps's body.
type AttachBody struct {
	App      string `json:"app"`
	Database string `json:"database"`
	User     string `json:"user"`
	// RootCert is the path the app finds the cluster CA at (an absolute
	// path on the app's side): the URLs then ask for verification.
	RootCert string `json:"root_cert"`
	// FallbackProxy (host:port) is used when no member publishes a leader
	// proxy address.
	FallbackProxy string `json:"fallback_proxy"`
}

func (s *Server) postApps(w http.ResponseWriter, r *http.Request, actor string) {
	var body AttachBody
	if !decodeBody(w, r, &body) {
		return
	}
	if body.App == "" {
		writeError(w, http.StatusBadRequest, "app: required")
		return
	}
	if body.RootCert != "" && (!strings.HasPrefix(body.RootCert, "/") || len(body.RootCert) > 1024 || strings.ContainsAny(body.RootCert, "\x00\n\r")) {
		writeError(w, http.StatusBadRequest, "root_cert: an absolute path")
		return
	}
	if body.FallbackProxy != "" {
		if _, port, err := net.SplitHostPort(body.FallbackProxy); err != nil || port == "" || len(body.FallbackProxy) > 300 || strings.ContainsAny(body.FallbackProxy, "/@?#") {
			writeError(w, http.StatusBadRequest, "fallback_proxy: host:port")
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	res, err := s.ops(actor, nil).Attach(ctx, ops.AttachRequest{App: body.App, Database: body.Database, User: body.User,
		RootCert: body.RootCert, FallbackProxy: body.FallbackProxy})
	switch {
	case errors.Is(err, ops.ErrBadRequest):
		writeError(w, http.StatusBadRequest, err.Error())
	case err != nil:
		writeError(w, http.StatusConflict, err.Error())
	default:
		regions := res.Regions
		if regions == nil {
			regions = []string{}
		}
		writeJSON(w, http.StatusCreated, map[string]any{"database": res.Database, "user": res.User, "proxy_url": res.ProxyURL, "region_urls": res.RegionURLs, "regions": regions})
	}
}

// ConfigBody is PUT /api/v1/config's body: settings to set (validated
// against the leader's pg_settings; none stored if any is refused) and
// settings to remove. With neither (an empty body or object), the stored
// settings are applied again: an interrupted rolling restart finishes.
type ConfigBody struct {
	Settings map[string]string `json:"settings"`
	Unset    []string          `json:"unset"`
}

func (s *Server) putConfig(w http.ResponseWriter, r *http.Request, actor string) {
	var body ConfigBody
	if !decodeBody(w, r, &body) {
		return
	}
	if len(body.Settings) > 0 && len(body.Unset) > 0 {
		writeError(w, http.StatusBadRequest, "settings and unset: one at a time")
		return
	}
	args := make([]string, 0, len(body.Settings))
	for k, v := range body.Settings {
		if k == "" || strings.ContainsAny(k, "=\n") {
			writeError(w, http.StatusBadRequest, "settings: bad name "+strconv.Quote(k))
			return
		}
		args = append(args, k+"="+v)
	}
	for _, k := range body.Unset {
		if k == "" || strings.ContainsAny(k, "=\n") {
			writeError(w, http.StatusBadRequest, "unset: bad name "+strconv.Quote(k))
			return
		}
	}
	if cur, busy := s.running(); busy {
		writeJSON(w, http.StatusConflict, map[string]any{"error": "an operation is already running on this node", "operation": cur})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	op := newOperation("config", actor)
	var rev int64
	var err error
	if len(body.Unset) > 0 {
		rev, err = s.ops(actor, op).UnsetSettings(ctx, body.Unset)
	} else {
		rev, err = s.ops(actor, op).SetSettings(ctx, args)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// Applying may need a rolling restart: in the background.
	if st, ok := s.startOperation(w, op, func(ctx context.Context, c *ops.Cluster) error { return c.RollOut(ctx, rev) }); ok {
		writeJSON(w, http.StatusAccepted, map[string]any{"revision": rev, "operation": st})
	}
}

func (s *Server) getView(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	writeJSON(w, http.StatusOK, s.hub.col.view(ctx))
}

func (s *Server) postToken(w http.ResponseWriter, r *http.Request, actor string) {
	user, _, ok := r.BasicAuth()
	if !ok {
		writeError(w, http.StatusBadRequest, "a token is issued for the password (HTTP Basic), not for another token")
		return
	}
	if user != Operator {
		writeError(w, http.StatusBadRequest, "tokens are issued to the operator only")
		return
	}
	tok, exp := s.auth().token()
	writeJSON(w, http.StatusOK, map[string]any{"token": tok, "expires": exp.UTC()})
}

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request, _ string) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	writeJSON(w, http.StatusOK, s.hub.col.view(ctx).Members)
}

func (s *Server) getEvents(w http.ResponseWriter, r *http.Request, _ string) {
	q := r.URL.Query()
	var after int64
	limit := 100
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeError(w, http.StatusBadRequest, "after must be an event id (a non-negative integer)")
			return
		}
		after = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > store.MaxEvents {
			writeError(w, http.StatusBadRequest, "limit must be between 1 and "+strconv.Itoa(store.MaxEvents))
			return
		}
		limit = n
	}
	evs, _, err := store.ListEvents(r.Context(), s.o.Store.Client(), s.o.Cluster, after, limit)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	if evs == nil {
		evs = []model.Event{}
	}
	writeJSON(w, http.StatusOK, evs)
}

// SwitchoverBody is POST /api/v1/switchover's body.
type SwitchoverBody struct {
	To                   string `json:"to"`
	AllowSecondaryRegion bool   `json:"allow_secondary_region"`
}

func (s *Server) postSwitchover(w http.ResponseWriter, r *http.Request, actor string) {
	var body SwitchoverBody
	if !decodeBody(w, r, &body) {
		return
	}
	if body.To != "" && !validID(body.To) {
		writeError(w, http.StatusBadRequest, "to: not a member id")
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(45 * time.Second))
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	var log strings.Builder
	from, to, err := s.ops(actor, &log).Switchover(ctx, ops.SwitchoverRequest{To: body.To, AllowSecondaryRegion: body.AllowSecondaryRegion})
	switch {
	case errors.Is(err, ops.ErrBadTarget):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, ops.ErrNoLeader):
		writeError(w, http.StatusServiceUnavailable, err.Error())
	case errors.Is(err, ops.ErrRefused):
		writeError(w, http.StatusConflict, err.Error())
	case err != nil:
		writeError(w, http.StatusGatewayTimeout, err.Error())
	default:
		writeJSON(w, http.StatusOK, map[string]string{"from": from, "to": to, "log": log.String()})
	}
}

// validID: member ids are short names (no key path separators).
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

func (s *Server) getConfig(w http.ResponseWriter, r *http.Request, actor string) {
	m, rev, err := s.ops(actor, nil).LoadSettings(r.Context())
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"settings": m, "revision": rev})
}
