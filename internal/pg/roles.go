package pg

import (
	"context"
	"fmt"
)

// The operator role manages app users without CREATEROLE. In PostgreSQL
// 15 a CREATEROLE role may grant itself any role but a superuser,
// pg_execute_server_program included, and so run programs as the postgres
// OS user (COPY ... PROGRAM): the operator is not the administrator. It
// gets these functions instead, owned by the superuser (SECURITY DEFINER,
// a fixed search_path) and executable by the operator alone, each of
// which touches only an app user: a valid name that is none of petrel's
// roles nor a pg_ one, a LOGIN role without SUPERUSER, CREATEDB,
// CREATEROLE, REPLICATION or BYPASSRLS, and a member of no role (so that
// acting as it gives the operator nothing more).
const rolesVersion = "petrel operator functions v1"

const rolesSQL = `
DO $d$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'petrel' AND nspowner <> 'postgres'::regrole) THEN
    RAISE EXCEPTION 'schema petrel in database postgres belongs to another role than postgres';
  END IF;
END $d$;
CREATE SCHEMA IF NOT EXISTS petrel AUTHORIZATION postgres;
REVOKE ALL ON SCHEMA petrel FROM PUBLIC;
GRANT USAGE ON SCHEMA petrel TO operator;

CREATE OR REPLACE FUNCTION petrel.check_app_user(u text, must_exist boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
DECLARE r record;
BEGIN
  IF u IS NULL OR u !~ '^[a-z_][a-z0-9_]{0,62}$' OR u IN ('postgres', 'replicator', 'operator', 'public')
     OR left(u, 3) = 'pg_' THEN
    RAISE EXCEPTION 'user name "%" is reserved or not an app user name', u USING ERRCODE = '42939';
  END IF;
  SELECT oid, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin
    INTO r FROM pg_roles WHERE rolname = u;
  IF NOT FOUND THEN
    IF must_exist THEN
      RAISE EXCEPTION 'no user %', u USING ERRCODE = '42704';
    END IF;
    RETURN;
  END IF;
  IF NOT must_exist THEN
    RAISE EXCEPTION 'role % already exists', u USING ERRCODE = '42710';
  END IF;
  IF r.rolsuper OR r.rolcreatedb OR r.rolcreaterole OR r.rolreplication OR r.rolbypassrls OR NOT r.rolcanlogin
     OR EXISTS (SELECT 1 FROM pg_auth_members WHERE member = r.oid) THEN
    RAISE EXCEPTION '% is not an app user (it has attributes or role memberships only the superuser gives): the operator may not manage it', u
      USING ERRCODE = '42501';
  END IF;
END $f$;

CREATE OR REPLACE FUNCTION petrel.create_user(u text, verifier text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  PERFORM petrel.check_app_user(u, false);
  IF verifier IS NULL OR left(verifier, 14) <> 'SCRAM-SHA-256$' THEN
    RAISE EXCEPTION 'the password must be a SCRAM-SHA-256 verifier' USING ERRCODE = '22023';
  END IF;
  EXECUTE format('CREATE ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT PASSWORD %L', u, verifier);
END $f$;

CREATE OR REPLACE FUNCTION petrel.set_password(u text, verifier text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  PERFORM petrel.check_app_user(u, true);
  IF verifier IS NULL OR left(verifier, 14) <> 'SCRAM-SHA-256$' THEN
    RAISE EXCEPTION 'the password must be a SCRAM-SHA-256 verifier' USING ERRCODE = '22023';
  END IF;
  EXECUTE format('ALTER ROLE %I WITH PASSWORD %L', u, verifier);
END $f$;

CREATE OR REPLACE FUNCTION petrel.act_as(u text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  PERFORM petrel.check_app_user(u, true);
  IF NOT pg_has_role('operator', u, 'MEMBER') THEN
    EXECUTE format('GRANT %I TO operator', u);
  END IF;
END $f$;

CREATE OR REPLACE FUNCTION petrel.drop_user(u text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
  PERFORM petrel.check_app_user(u, true);
  EXECUTE format('DROP ROLE %I', u);
END $f$;

REVOKE ALL ON FUNCTION petrel.check_app_user(text, boolean), petrel.create_user(text, text),
  petrel.set_password(text, text), petrel.act_as(text), petrel.drop_user(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION petrel.create_user(text, text), petrel.set_password(text, text),
  petrel.act_as(text), petrel.drop_user(text) TO operator;

ALTER ROLE operator NOCREATEROLE;
COMMENT ON SCHEMA petrel IS '` + rolesVersion + `';
`

// HardenRoles makes the operator role what petrel promises: no
// CREATEROLE, the superuser's app-user functions above instead, and none
// of the predefined roles that read or write the server's files or run
// programs (which an operator with CREATEROLE could have granted itself).
// It does nothing when that is already so, and nothing on a standby.
// Bootstrap calls it; so does the leader's agent, for clusters
// bootstrapped before.
func (s *Server) HardenRoles(ctx context.Context) error {
	var done bool
	err := s.queryRow(ctx, func(r rowScanner) error { return r.Scan(&done) }, `
SELECT pg_is_in_recovery() OR coalesce(obj_description(
  (SELECT oid FROM pg_namespace WHERE nspname = 'petrel'), 'pg_namespace') = $1
  AND NOT (SELECT rolcreaterole FROM pg_roles WHERE rolname = 'operator'), false)
OR NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'operator')`, rolesVersion)
	if err != nil {
		return fmt.Errorf("checking the operator role: %w", err)
	}
	if done {
		return nil
	}
	// One simple-protocol query: one transaction.
	sql := rolesSQL + `
DO $d$
DECLARE g text;
BEGIN
  FOR g IN SELECT b.rolname FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid
           WHERE m.member = (SELECT oid FROM pg_roles WHERE rolname = 'operator')
             AND (b.rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files')
                  OR b.rolsuper OR b.rolcreaterole OR b.rolreplication OR b.rolbypassrls) LOOP
    EXECUTE format('REVOKE %I FROM operator', g);
  END LOOP;
END $d$;`
	if err := s.Exec(ctx, sql); err != nil {
		return fmt.Errorf("hardening the operator role: %w", err)
	}
	s.log.Info("the operator role manages app users through petrel's functions (no CREATEROLE)")
	return nil
}
