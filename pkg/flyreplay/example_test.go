package flyreplay_test

import (
	"net/http"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/petrel-db/petrel/pkg/flyreplay"
)

// An app in every region, on its region's replica: a write outside the
// primary region fails read-only and is replayed there by the edge.
func ExampleConfig_Wrap() {
	var db *pgxpool.Pool // pgxpool.New(ctx, regional DATABASE_URL)
	fr := flyreplay.ConfigFromEnv()
	http.Handle("POST /notes", fr.Wrap(func(w http.ResponseWriter, r *http.Request) error {
		if _, err := db.Exec(r.Context(), "INSERT INTO notes (body) VALUES ($1)", r.FormValue("body")); err != nil {
			return err // read-only on a replica: 409 + fly-replay: region=<primary>;state=captured_write
		}
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return nil
	}))
}
