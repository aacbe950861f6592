// Package apps holds the SQL behind `petrel attach`, `detach`, `db` and
// `users`: least-privilege login roles for applications and the
// databases they own. Every function runs on a connection to the leader
// as the superuser (postgres) or the operator role (CREATEDB, without
// CREATEROLE: it creates, changes and drops app users through the
// superuser's functions in schema petrel, internal/pg's HardenRoles, which
// touch app users only).
//
// Passwords are sent only as SCRAM-SHA-256 verifiers computed here, so
// the plaintext never reaches the server or its logs.
package apps

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/pg"
)

var nameRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// reserved role names applications may not use.
var reserved = map[string]bool{"postgres": true, "replicator": true, "operator": true, "public": true}

// CheckName validates a database or role name.
func CheckName(kind, name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s name %q: use 1-63 of a-z, 0-9 and _, not starting with a digit", kind, name)
	}
	if kind == "user" && (reserved[name] || len(name) > 2 && name[:3] == "pg_") {
		return fmt.Errorf("user name %q is reserved", name)
	}
	return nil
}

func ident(s string) string { return pgx.Identifier{s}.Sanitize() }

func literal(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}

// RandomPassword returns 32 random URL-safe characters (crypto/rand).
func RandomPassword() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// RoleExists reports whether role name exists.
func RoleExists(ctx context.Context, c *pgx.Conn, name string) (bool, error) {
	var ok bool
	if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", name).Scan(&ok); err != nil {
		return false, fmt.Errorf("looking up role %s: %w", name, err)
	}
	return ok, nil
}

// DatabaseExists reports whether database name exists.
func DatabaseExists(ctx context.Context, c *pgx.Conn, name string) (bool, error) {
	var ok bool
	if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&ok); err != nil {
		return false, fmt.Errorf("looking up database %s: %w", name, err)
	}
	return ok, nil
}

// CreateUser creates a LOGIN role that is not superuser and cannot create
// databases, roles or replicate, with password set as a SCRAM verifier.
func CreateUser(ctx context.Context, c *pgx.Conn, user, password string) error {
	if err := CheckName("user", user); err != nil {
		return err
	}
	exists, err := RoleExists(ctx, c, user)
	if err != nil {
		return err
	}
	if exists {
		return fmt.Errorf("user %s already exists: choose another name, or remove it first (petrel detach / petrel users delete)", user)
	}
	v, err := pg.ScramVerifier(password)
	if err != nil {
		return err
	}
	// Never wrap the statement itself into the error: it holds the verifier.
	if err := roleOp(ctx, c, "SELECT petrel.create_user($1, $2)", fmt.Sprintf(
		"CREATE ROLE %s WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD %s",
		ident(user), literal(v)), user, v); err != nil {
		return fmt.Errorf("creating user %s: %w", user, err)
	}
	return nil
}

// roleOp runs a change to an app user: as the superuser the statement
// itself, as the operator (no CREATEROLE) the superuser's function, which
// checks again that user is an app user.
func roleOp(ctx context.Context, c *pgx.Conn, fn, stmt string, args ...any) error {
	super, err := isSuper(ctx, c)
	if err != nil {
		return err
	}
	if super {
		_, err = c.Exec(ctx, stmt)
	} else {
		_, err = c.Exec(ctx, fn, args...)
	}
	return err
}

// SetPassword gives app user a new password (a SCRAM verifier): only a
// login role that is not a superuser, cannot replicate and is not one of
// petrel's own (those go through `petrel secrets rotate`). Its sessions
// stay up; new ones need the new password.
func SetPassword(ctx context.Context, c *pgx.Conn, user, password string) error {
	if err := CheckName("user", user); err != nil {
		return fmt.Errorf("%w (petrel's own passwords: petrel secrets rotate)", err)
	}
	var super, repl, login bool
	err := c.QueryRow(ctx, "SELECT rolsuper, rolreplication, rolcanlogin FROM pg_roles WHERE rolname = $1", user).Scan(&super, &repl, &login)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("no user %s (see `petrel users list`)", user)
	}
	if err != nil {
		return fmt.Errorf("looking up user %s: %w", user, err)
	}
	if super || repl || !login {
		return fmt.Errorf("%s is not an app user (superuser, replication or no login): refusing to change its password", user)
	}
	v, err := pg.ScramVerifier(password)
	if err != nil {
		return err
	}
	// Never wrap the statement itself into the error: it holds the verifier.
	if err := roleOp(ctx, c, "SELECT petrel.set_password($1, $2)",
		fmt.Sprintf("ALTER ROLE %s WITH PASSWORD %s", ident(user), literal(v)), user, v); err != nil {
		return fmt.Errorf("setting %s's password: %w", user, err)
	}
	return nil
}

// isSuper reports whether the session user is a superuser.
func isSuper(ctx context.Context, c *pgx.Conn) (bool, error) {
	var s bool
	if err := c.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&s); err != nil {
		return false, fmt.Errorf("checking privileges: %w", err)
	}
	return s, nil
}

// actAs makes a non-superuser session (the operator) a member of role, as
// PostgreSQL requires to create a database owned by it or reassign its
// objects (petrel.act_as: app users only). A superuser needs nothing.
func actAs(ctx context.Context, c *pgx.Conn, role string) error {
	super, err := isSuper(ctx, c)
	if err != nil || super {
		return err
	}
	if _, err := c.Exec(ctx, "SELECT petrel.act_as($1)", role); err != nil {
		return fmt.Errorf("granting %s to the operator: %w", role, err)
	}
	return nil
}

// CreateDatabase creates db owned by owner (if missing), revokes CONNECT
// and TEMPORARY from PUBLIC and grants CONNECT and TEMPORARY to owner.
// In PostgreSQL 15 the public schema belongs to the database owner, so
// owner can create tables there and nobody else can.
func CreateDatabase(ctx context.Context, c *pgx.Conn, db, owner string) error {
	if err := CheckName("database", db); err != nil {
		return err
	}
	exists, err := DatabaseExists(ctx, c, db)
	if err != nil {
		return err
	}
	if err := actAs(ctx, c, owner); err != nil {
		return err
	}
	if !exists {
		if _, err := c.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s OWNER %s", ident(db), ident(owner))); err != nil {
			return fmt.Errorf("creating database %s: %w", db, err)
		}
	} else if _, err := c.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s OWNER TO %s", ident(db), ident(owner))); err != nil {
		return fmt.Errorf("giving database %s to %s: %w", db, owner, err)
	}
	for _, q := range []string{
		fmt.Sprintf("REVOKE CONNECT, TEMPORARY ON DATABASE %s FROM PUBLIC", ident(db)),
		fmt.Sprintf("GRANT CONNECT, TEMPORARY ON DATABASE %s TO %s", ident(db), ident(owner)),
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			return fmt.Errorf("setting privileges on database %s: %w", db, err)
		}
	}
	return nil
}

// Connector opens an admin connection to a database on the leader.
type Connector func(ctx context.Context, db string) (*pgx.Conn, error)

// DropUser removes user: its sessions are ended, the objects it owns in
// every database are reassigned to the admin (or dropped when dropDB names
// its database, which is dropped first), its privileges revoked, and the
// role dropped.
func DropUser(ctx context.Context, connect Connector, user, dropDB string) error {
	if err := CheckName("user", user); err != nil {
		return err
	}
	c, err := connect(ctx, "postgres")
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	exists, err := RoleExists(ctx, c, user)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("no user %s (see `petrel users list`)", user)
	}
	if err := actAs(ctx, c, user); err != nil {
		return err
	}
	if _, err := c.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", user); err != nil {
		return fmt.Errorf("ending %s's sessions: %w", user, err)
	}
	if dropDB != "" {
		if _, err := c.Exec(ctx, fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", ident(dropDB))); err != nil {
			return fmt.Errorf("dropping database %s: %w", dropDB, err)
		}
	}
	// Databases where the role owns objects or holds privileges, and the
	// ones it owns.
	rows, err := c.Query(ctx, `
SELECT DISTINCT d.datname::text FROM pg_database d
WHERE d.datallowconn AND (d.datdba = (SELECT oid FROM pg_roles WHERE rolname = $1)
   OR d.oid IN (SELECT dbid FROM pg_shdepend WHERE refclassid = 'pg_authid'::regclass
                AND refobjid = (SELECT oid FROM pg_roles WHERE rolname = $1)))
   OR d.datname = 'postgres'
ORDER BY 1`, user)
	if err != nil {
		return fmt.Errorf("finding %s's objects: %w", user, err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("finding %s's objects: %w", user, err)
	}
	for _, db := range dbs {
		dc := c
		if db != "postgres" {
			if dc, err = connect(ctx, db); err != nil {
				return err
			}
		}
		_, err := dc.Exec(ctx, fmt.Sprintf("REASSIGN OWNED BY %s TO current_user; DROP OWNED BY %s", ident(user), ident(user)))
		if dc != c {
			dc.Close(context.Background())
		}
		if err != nil {
			return fmt.Errorf("reassigning %s's objects in database %s: %w", user, db, err)
		}
	}
	if err := roleOp(ctx, c, "SELECT petrel.drop_user($1)", "DROP ROLE "+ident(user), user); err != nil {
		return fmt.Errorf("dropping user %s: %w", user, err)
	}
	return nil
}

// Database is one row of ListDatabases.
type Database struct {
	Name, Owner string
	Size        int64 // -1 when the session may not read it
}

// ListDatabases lists the non-template databases. pg_database_size needs
// CONNECT on the database (or pg_read_all_stats): the operator lacks it on
// an app's database it did not create (CONNECT is revoked from PUBLIC), so
// that size is -1 rather than the whole listing failing.
func ListDatabases(ctx context.Context, c *pgx.Conn) ([]Database, error) {
	rows, err := c.Query(ctx, `SELECT datname::text, pg_get_userbyid(datdba)::text,
  CASE WHEN has_database_privilege(oid, 'CONNECT') OR pg_has_role('pg_read_all_stats', 'USAGE')
       THEN pg_database_size(oid) ELSE -1 END
FROM pg_database WHERE NOT datistemplate ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("listing databases: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Database, error) {
		var d Database
		return d, r.Scan(&d.Name, &d.Owner, &d.Size)
	})
	if err != nil {
		return nil, fmt.Errorf("listing databases: %w", err)
	}
	return out, nil
}

// User is one row of ListUsers.
type User struct {
	Name       string
	Attributes []string
}

// ListUsers lists login roles (built-in pg_* roles excluded).
func ListUsers(ctx context.Context, c *pgx.Conn) ([]User, error) {
	rows, err := c.Query(ctx, `SELECT rolname::text, rolsuper, rolcreatedb, rolcreaterole, rolreplication
FROM pg_roles WHERE rolcanlogin AND rolname !~ '^pg_' ORDER BY 1`)
	if err != nil {
		return nil, fmt.Errorf("listing users: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (User, error) {
		var u User
		var super, cdb, crole, repl bool
		if err := r.Scan(&u.Name, &super, &cdb, &crole, &repl); err != nil {
			return u, err
		}
		for _, a := range []struct {
			on   bool
			name string
		}{{super, "superuser"}, {cdb, "createdb"}, {crole, "createrole"}, {repl, "replication"}} {
			if a.on {
				u.Attributes = append(u.Attributes, a.name)
			}
		}
		return u, nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing users: %w", err)
	}
	return out, nil
}

// ErrNoLeader is returned when the cluster has no leader to run DDL on.
var ErrNoLeader = errors.New("the cluster has no leader right now: check `petrel status` and try again")
