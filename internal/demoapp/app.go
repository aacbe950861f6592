package demoapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/petrel-db/petrel/pkg/flyreplay"
)

const (
	table          = "petrel_demo_notes"
	createTableSQL = `CREATE TABLE IF NOT EXISTS ` + table + ` (
	id bigserial PRIMARY KEY,
	body text NOT NULL,
	region text NOT NULL,
	instance text NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now())`

	// lastWriteCookie records where this browser's last write went.
	lastWriteCookie = "petrel_demo_last_write"
	maxBody         = 2000
	dbTimeout       = 5 * time.Second
)

// Run serves the demo app on cfg.Listen until ctx ends.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return errors.New("demo app: DATABASE_URL is not a valid connection string") // the error would quote it
	}
	defer pool.Close()
	a := newApp(cfg, pool, log)
	if a.fr.InPrimaryRegion() {
		tctx, cancel := context.WithTimeout(ctx, dbTimeout)
		if err := a.ensureTable(tctx); err != nil {
			log.Warn("creating the notes table failed; retrying on the next request", "err", err)
		}
		cancel()
	}
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("demo app: %w", err)
	}
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 10 * time.Second}
	log.Info("demo app listening", "addr", l.Addr().String(), "region", cfg.Region, "primary_region", cfg.PrimaryRegion,
		"instance", cfg.Instance, "eager_replay", cfg.EagerReplay)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("demo app: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

type app struct {
	cfg Config
	db  *pgxpool.Pool
	fr  flyreplay.Config
	log *slog.Logger

	tableMu sync.Mutex
	tableOK bool // the primary region created the table
}

func newApp(cfg Config, db *pgxpool.Pool, log *slog.Logger) *app {
	return &app{
		cfg: cfg,
		db:  db,
		fr: flyreplay.Config{Region: cfg.Region, PrimaryRegion: cfg.PrimaryRegion,
			ReplayWriteMethods: cfg.EagerReplay, Logger: log},
		log: log,
	}
}

// handler routes the app. The HTML handlers panic on database errors, as
// a Rails app raises them: the flyreplay middleware turns a read-only one
// into a replay, recoverPanics the rest into a 500. The API handlers
// return their errors (flyreplay Wrap).
func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	html := func(h http.HandlerFunc) http.Handler { return a.recoverPanics(a.fr.Middleware(h)) }
	mux.Handle("GET /{$}", html(a.index))
	mux.Handle("POST /notes", html(a.addNote))
	mux.Handle("POST /notes/{id}/delete", html(a.deleteNote))
	mux.Handle("GET /api/notes", a.fr.Wrap(a.apiList))
	mux.Handle("POST /api/notes", a.fr.Wrap(a.apiAdd))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Who answered, for people and tests behind the edge.
		w.Header().Set("Petrel-Region", a.cfg.Region)
		w.Header().Set("Petrel-Instance", a.cfg.Instance)
		mux.ServeHTTP(w, r)
	})
}

// recoverPanics answers a panicking handler with a 500 page instead of
// net/http's dropped connection (http.ErrAbortHandler still aborts).
func (a *app) recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", v)
			http.Error(w, fmt.Sprintf("error: %v", v), http.StatusInternalServerError)
		}()
		next.ServeHTTP(w, r)
	})
}

// ensureTable creates the table in the primary region, once it works.
// Other regions wait for it to replicate.
func (a *app) ensureTable(ctx context.Context) error {
	if !a.fr.InPrimaryRegion() {
		return nil
	}
	a.tableMu.Lock()
	defer a.tableMu.Unlock()
	if a.tableOK {
		return nil
	}
	if _, err := a.db.Exec(ctx, createTableSQL); err != nil {
		return fmt.Errorf("creating table %s: %w", table, err)
	}
	a.tableOK = true
	return nil
}

func isUndefinedTable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42P01"
}

// writeFailed handles a failed write in a handler that has written
// nothing. A replica without the table yet cannot have taken the write
// either: the primary region creates the table, so it is replayed there
// like a read-only error. Anything else is returned for the caller to
// raise.
func (a *app) writeFailed(w http.ResponseWriter, r *http.Request, err error) error {
	if isUndefinedTable(err) && a.fr.Replay(w, r, flyreplay.StateCapturedWrite) {
		return nil
	}
	return err
}

// note is one row, as the API shows it.
type note struct {
	ID       int64     `json:"id"`
	Body     string    `json:"body"`
	Region   string    `json:"region"`
	Instance string    `json:"instance"`
	Created  time.Time `json:"created_at"`
}

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

func listNotes(ctx context.Context, q querier, limit int) ([]note, error) {
	sql := `SELECT id, body, region, instance, created_at FROM ` + table + ` ORDER BY id`
	if limit > 0 {
		sql = `SELECT id, body, region, instance, created_at FROM ` + table + ` ORDER BY id DESC LIMIT ` + strconv.Itoa(limit)
	}
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return nil, err
	}
	notes, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (note, error) {
		var n note
		err := row.Scan(&n.ID, &n.Body, &n.Region, &n.Instance, &n.Created)
		return n, err
	})
	if notes == nil {
		notes = []note{}
	}
	return notes, err
}

// insert adds a note as written by this instance. One statement: it
// commits or fails as a whole, so a request replayed after a failure
// writes exactly once.
func (a *app) insert(ctx context.Context, body string) (int64, error) {
	var id int64
	err := a.db.QueryRow(ctx, `INSERT INTO `+table+` (body, region, instance) VALUES ($1, $2, $3) RETURNING id`,
		body, a.cfg.Region, a.cfg.Instance).Scan(&id)
	return id, err
}

func checkBody(s string) (string, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return "", errors.New("the note is empty")
	case len([]rune(s)) > maxBody:
		return "", fmt.Errorf("the note is longer than %d characters", maxBody)
	}
	return s, nil
}

// setLastWrite remembers in the browser where its last write went.
func (a *app) setLastWrite(w http.ResponseWriter, what string) {
	v := url.Values{"region": {a.cfg.Region}, "instance": {a.cfg.Instance},
		"at": {time.Now().UTC().Format(time.RFC3339Nano)}, "what": {what}}
	http.SetCookie(w, &http.Cookie{Name: lastWriteCookie, Value: v.Encode(), Path: "/",
		MaxAge: 86400, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// lastWrite is the cookie setLastWrite set.
type lastWrite struct {
	Region, Instance, What string
	At                     time.Time
}

func readLastWrite(r *http.Request) *lastWrite {
	c, err := r.Cookie(lastWriteCookie)
	if err != nil {
		return nil
	}
	v, err := url.ParseQuery(c.Value)
	if err != nil || v.Get("region") == "" {
		return nil
	}
	at, _ := time.Parse(time.RFC3339Nano, v.Get("at"))
	return &lastWrite{Region: v.Get("region"), Instance: v.Get("instance"), What: v.Get("what"), At: at}
}

func (a *app) addNote(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	body, err := checkBody(r.PostFormValue("body"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	if err := a.ensureTable(ctx); err != nil {
		panic(err)
	}
	id, err := a.insert(ctx, body)
	if err != nil {
		if err = a.writeFailed(w, r, err); err != nil {
			panic(err) // read-only: the middleware replays it in the primary region
		}
		return
	}
	a.setLastWrite(w, fmt.Sprintf("added note %d", id))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (a *app) deleteNote(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil {
		http.Error(w, "bad note id", http.StatusBadRequest)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	if err := a.ensureTable(ctx); err != nil {
		panic(err)
	}
	if _, err := a.db.Exec(ctx, `DELETE FROM `+table+` WHERE id = $1`, id); err != nil {
		if err = a.writeFailed(w, r, err); err != nil {
			panic(err)
		}
		return
	}
	a.setLastWrite(w, fmt.Sprintf("deleted note %d", id))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

const waitingForTable = "waiting for the primary region to create the table"

func (a *app) apiList(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	if err := a.ensureTable(ctx); err != nil {
		return err
	}
	notes, err := listNotes(ctx, a.db, 0)
	if isUndefinedTable(err) {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": waitingForTable})
		return nil
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, notes)
	return nil
}

func (a *app) apiAdd(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	var raw string
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/json" {
		var in struct {
			Body string `json:"body"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad JSON: " + err.Error()})
			return nil
		}
		raw = in.Body
	} else {
		raw = r.PostFormValue("body")
	}
	body, err := checkBody(raw)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), dbTimeout)
	defer cancel()
	if err := a.ensureTable(ctx); err != nil {
		return err
	}
	id, err := a.insert(ctx, body)
	if err != nil {
		return a.writeFailed(w, r, err) // a read-only error: Wrap replays it
	}
	a.setLastWrite(w, fmt.Sprintf("added note %d", id))
	writeJSON(w, http.StatusCreated, map[string]any{"id": id, "region": a.cfg.Region, "instance": a.cfg.Instance})
	return nil
}

// regionName is what a ?region= value may look like.
var regionName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)
