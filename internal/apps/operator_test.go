package apps

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/pgtest"
)

func connectAs(ctx context.Context, t *testing.T, srv *pgtest.Server, user, password, db string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s sslmode=disable connect_timeout=5", srv.Port, db))
	if err != nil {
		t.Fatal(err)
	}
	cfg.User, cfg.Password = user, password
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connecting as %s: %v", user, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// TestOperatorCannotRunCode: the operator (OPERATOR_PASSWORD, not a
// superuser) manages app users and databases on a real server, but cannot
// give itself what runs programs or reads the server's files as the
// postgres OS user (in PostgreSQL 15 a CREATEROLE role can grant itself
// pg_execute_server_program), nor act as any role but an app user. And a
// cluster bootstrapped when the operator had CREATEROLE loses it.
func TestOperatorCannotRunCode(t *testing.T) {
	srv := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	su := connectAs(ctx, t, srv, "postgres", pgtest.Secrets.Superuser, "postgres")
	op := connectAs(ctx, t, srv, "operator", pgtest.Secrets.Operator, "postgres")

	// A role only the superuser could have made dangerous: acting as it
	// would give the operator pg_execute_server_program.
	if _, err := su.Exec(ctx, "CREATE ROLE tainted LOGIN; GRANT pg_execute_server_program TO tainted"); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"GRANT pg_execute_server_program TO operator",
		"GRANT pg_write_server_files TO operator",
		"GRANT pg_read_server_files TO operator",
		"CREATE ROLE sneaky LOGIN IN ROLE pg_execute_server_program",
		"CREATE ROLE sneaky LOGIN",
		"ALTER ROLE operator CREATEROLE",
		"GRANT tainted TO operator",
		"SELECT petrel.act_as('tainted')",
		"SELECT petrel.act_as('postgres')",
		"SELECT petrel.act_as('replicator')",
		"SELECT petrel.act_as('pg_execute_server_program')",
		"SELECT petrel.set_password('replicator', 'SCRAM-SHA-256$4096:x')",
		"SELECT petrel.set_password('tainted', 'SCRAM-SHA-256$4096:x')",
		"SELECT petrel.drop_user('tainted')",
		"SELECT petrel.create_user('evil\"; ALTER ROLE operator SUPERUSER; --', 'SCRAM-SHA-256$4096:x')",
		"SELECT petrel.create_user('plain', 'a plaintext password')",
		"SELECT petrel.check_app_user('tainted', true)",
	} {
		if _, err := op.Exec(ctx, q); err == nil {
			t.Errorf("the operator ran %q", q)
		}
	}
	if _, err := op.Exec(ctx, "CREATE TEMP TABLE probe (l text); COPY probe FROM PROGRAM 'id'"); err == nil {
		t.Fatal("the operator ran a program on the server")
	} else if !strings.Contains(err.Error(), "pg_execute_server_program") {
		t.Errorf("COPY FROM PROGRAM refused for another reason: %v", err)
	}
	var attrs string
	if err := su.QueryRow(ctx, `SELECT rolsuper::text || rolcreaterole::text || (SELECT count(*) FROM pg_auth_members m
JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid AND b.rolname <> 'app1')::text FROM pg_roles r WHERE rolname = 'operator'`).Scan(&attrs); err != nil || attrs != "falsefalse0" {
		t.Errorf("the operator's superuser, createrole, memberships: %q %v", attrs, err)
	}

	// What the operator is for still works, through the functions.
	pw, _ := RandomPassword()
	if err := CreateUser(ctx, op, "app1", pw); err != nil {
		t.Fatal(err)
	}
	if err := CreateDatabase(ctx, op, "app1db", "app1"); err != nil {
		t.Fatal(err)
	}
	pw2, _ := RandomPassword()
	if err := SetPassword(ctx, op, "app1", pw2); err != nil {
		t.Fatal(err)
	}
	app := connectAs(ctx, t, srv, "app1", pw2, "app1db")
	if _, err := app.Exec(ctx, "CREATE TABLE notes (x int)"); err != nil {
		t.Fatal(err)
	}
	app.Close(ctx)
	if err := SetPassword(ctx, op, "tainted", pw2); err == nil {
		t.Error("the operator changed the password of a role with a membership the superuser gave")
	}
	connect := func(ctx context.Context, db string) (*pgx.Conn, error) {
		return pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d dbname=%s user=operator password=%s sslmode=disable", srv.Port, db, pgtest.Secrets.Operator))
	}
	if err := DropUser(ctx, connect, "app1", "app1db"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := RoleExists(ctx, su, "app1"); ok {
		t.Fatal("app1 still exists")
	}

	// A cluster from before: the operator had CREATEROLE and may have
	// granted itself pg_execute_server_program. HardenRoles takes both away.
	if _, err := su.Exec(ctx, `ALTER ROLE operator CREATEROLE; GRANT pg_execute_server_program TO operator;
DROP SCHEMA petrel CASCADE`); err != nil {
		t.Fatal(err)
	}
	if err := srv.HardenRoles(ctx); err != nil {
		t.Fatal(err)
	}
	if err := su.QueryRow(ctx, `SELECT rolsuper::text || rolcreaterole::text || (SELECT count(*) FROM pg_auth_members m
WHERE m.member = r.oid)::text FROM pg_roles r WHERE rolname = 'operator'`).Scan(&attrs); err != nil || attrs != "falsefalse0" {
		t.Errorf("after HardenRoles, the operator's superuser, createrole, memberships: %q %v", attrs, err)
	}
	if err := CreateUser(ctx, op, "app2", pw); err != nil {
		t.Fatalf("after HardenRoles: %v", err)
	}
}
