package flyreplay

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/petrel-db/petrel/internal/pgtest"
)

// A real PostgreSQL's read-only errors are recognised, and the
// middleware turns one into a replay.
func TestReadOnlyRealPostgres(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE ro (v int)"); err != nil {
		t.Fatal(err)
	}

	// BEGIN READ ONLY.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "INSERT INTO ro VALUES (1)")
	tx.Rollback(ctx)
	if !IsReadOnly(err) {
		t.Errorf("INSERT in BEGIN READ ONLY: IsReadOnly(%v) = false", err)
	}

	// Other errors are not read-only.
	if _, err := conn.Exec(ctx, "INSERT INTO missing VALUES (1)"); err == nil || IsReadOnly(err) {
		t.Errorf("INSERT into a missing table: IsReadOnly(%v) = true", err)
	}

	// default_transaction_read_only on the session (as on a fenced
	// leader), through a pool and the middleware.
	pcfg, err := pgxpool.ParseConfig(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	h := Config{Region: "ord", PrimaryRegion: "scl", Logger: quiet}.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := pool.Exec(r.Context(), "INSERT INTO ro VALUES (2)"); err != nil {
			panic(err)
		}
		w.WriteHeader(http.StatusCreated)
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/", nil))
	if rec.Code != 409 || rec.Header().Get(HeaderReplay) != "region=scl;state=captured_write" {
		t.Errorf("read-only session write: %d %q, want a replay", rec.Code, rec.Header().Get(HeaderReplay))
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM ro").Scan(&n); err != nil || n != 0 {
		t.Errorf("rows = %d, %v; want 0", n, err)
	}
}
