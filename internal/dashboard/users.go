package dashboard

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/ops"
)

// The admin API's users, databases and detach: the same operations as
// `petrel users`, `petrel db` and `petrel detach` (internal/ops), acting
// on the leader as the operator role.

// opTimeout bounds one of these operations (each is a few statements).
const opTimeout = 30 * time.Second

// opError answers err: 400 for refused parameters, 409 otherwise (the
// cluster refused: no leader, an existing name, a missing owner, ...).
func opError(w http.ResponseWriter, err error) {
	if errors.Is(err, ops.ErrBadRequest) {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	writeError(w, http.StatusConflict, err.Error())
}

// UserJSON is a login user in GET /api/v1/users.
type UserJSON struct {
	Name       string   `json:"name"`
	Attributes []string `json:"attributes"`
}

func (s *Server) getUsers(w http.ResponseWriter, r *http.Request, actor string) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	us, err := s.ops(actor, nil).Users(ctx)
	if err != nil {
		opError(w, err)
		return
	}
	out := make([]UserJSON, 0, len(us))
	for _, u := range us {
		out = append(out, UserJSON{Name: u.Name, Attributes: u.Attributes})
	}
	writeJSON(w, http.StatusOK, map[string]any{"users": out})
}

// UserBody is POST /api/v1/users' body: the user to create.
type UserBody struct {
	Name string `json:"name"`
}

func (s *Server) postUsers(w http.ResponseWriter, r *http.Request, actor string) {
	var body UserBody
	if !decodeBody(w, r, &body) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	pw, err := s.ops(actor, nil).CreateUser(ctx, body.Name)
	if err != nil {
		opError(w, err)
		return
	}
	// The password is in this answer and nowhere else.
	writeJSON(w, http.StatusCreated, map[string]any{"name": body.Name, "password": pw})
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, actor string) {
	name := r.PathValue("name")
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	if err := s.ops(actor, nil).DeleteUser(ctx, name, ""); err != nil {
		opError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": name})
}

// DatabaseJSON is a database in GET /api/v1/databases (size -1: the
// operator may not read it).
type DatabaseJSON struct {
	Name  string `json:"name"`
	Owner string `json:"owner"`
	Size  int64  `json:"size_bytes"`
}

func (s *Server) getDatabases(w http.ResponseWriter, r *http.Request, actor string) {
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	dbs, err := s.ops(actor, nil).Databases(ctx)
	if err != nil {
		opError(w, err)
		return
	}
	out := make([]DatabaseJSON, 0, len(dbs))
	for _, d := range dbs {
		out = append(out, DatabaseJSON{Name: d.Name, Owner: d.Owner, Size: d.Size})
	}
	writeJSON(w, http.StatusOK, map[string]any{"databases": out})
}

// DatabaseBody is POST /api/v1/databases' body: the database and its
// owner (an existing user; empty: the operator).
type DatabaseBody struct {
	Name  string `json:"name"`
	Owner string `json:"owner"`
}

func (s *Server) postDatabases(w http.ResponseWriter, r *http.Request, actor string) {
	var body DatabaseBody
	if !decodeBody(w, r, &body) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	if err := s.ops(actor, nil).CreateDatabase(ctx, body.Name, body.Owner); err != nil {
		opError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]any{"name": body.Name, "owner": body.Owner})
}

// PasswordBody is POST /api/v1/users/{name}/password's body: the new
// password ("" or no body: a random one).
type PasswordBody struct {
	Password string `json:"password"`
}

// postUserPassword gives an app user a new password; the answer holds it
// (the only place it is shown).
func (s *Server) postUserPassword(w http.ResponseWriter, r *http.Request, actor string) {
	var body PasswordBody
	if !decodeBody(w, r, &body) {
		return
	}
	name := r.PathValue("name")
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	pw, err := s.ops(actor, nil).SetUserPassword(ctx, name, body.Password)
	if err != nil {
		opError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": name, "password": pw})
}

// deleteApp detaches an app: DELETE /api/v1/apps/{app}[?drop_database=true][&user=U][&database=D].
func (s *Server) deleteApp(w http.ResponseWriter, r *http.Request, actor string) {
	drop := false
	switch v := r.URL.Query().Get("drop_database"); v {
	case "", "false":
	case "true":
		drop = true
	default:
		writeError(w, http.StatusBadRequest, "drop_database: true or false")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), opTimeout)
	defer cancel()
	q := r.URL.Query()
	user, db, err := s.ops(actor, nil).Detach(ctx, ops.DetachRequest{App: r.PathValue("app"), User: q.Get("user"), Database: q.Get("database"), DropDatabase: drop})
	if err != nil {
		opError(w, err)
		return
	}
	// A kept database now belongs to the role the API acted as.
	writeJSON(w, http.StatusOK, map[string]any{"user": user, "database": db, "database_dropped": drop, "owner": roleOf(actor)})
}

// roleOf is the Postgres role the API acts as for actor (see ops).
func roleOf(actor string) string {
	if strings.HasPrefix(actor, Superuser+"@") {
		return Superuser
	}
	return Operator
}
