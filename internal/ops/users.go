package ops

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/petrel-db/petrel/internal/apps"
	"github.com/petrel-db/petrel/internal/model"
)

// withLeader runs fn on an admin connection to the leader's postgres
// database.
func (c *Cluster) withLeader(ctx context.Context, fn func(*pgx.Conn) error) error {
	if c.ConnectLeader == nil {
		return errors.New("this operation needs a connection to the leader")
	}
	conn, err := c.ConnectLeader(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return fn(conn)
}

// badName wraps a refused name as ErrBadRequest.
func badName(kind, name string) error {
	if err := apps.CheckName(kind, name); err != nil {
		return fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return nil
}

// Users lists the login users.
func (c *Cluster) Users(ctx context.Context) (us []apps.User, err error) {
	err = c.withLeader(ctx, func(conn *pgx.Conn) error {
		us, err = apps.ListUsers(ctx, conn)
		return err
	})
	return us, err
}

// CreateUser creates a least-privilege login user with a random password,
// which it returns (and which is shown nowhere else).
func (c *Cluster) CreateUser(ctx context.Context, name string) (password string, err error) {
	if err := badName("user", name); err != nil {
		return "", err
	}
	if password, err = apps.RandomPassword(); err != nil {
		return "", err
	}
	err = c.withLeader(ctx, func(conn *pgx.Conn) error { return apps.CreateUser(ctx, conn, name, password) })
	if err != nil {
		return "", err
	}
	c.record(ctx, model.Event{Kind: model.EventApps, Reason: "created user " + name})
	return password, nil
}

// SetUserPassword gives an app user a new password (random when password
// is empty) and returns it. petrel's own roles are refused (apps).
func (c *Cluster) SetUserPassword(ctx context.Context, name, password string) (string, error) {
	if err := apps.CheckName("user", name); err != nil {
		return "", fmt.Errorf("%w: %v (petrel's own passwords: petrel secrets rotate)", ErrBadRequest, err)
	}
	if password == "" {
		var err error
		if password, err = apps.RandomPassword(); err != nil {
			return "", err
		}
	} else if err := CheckNewPassword(password); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if err := c.withLeader(ctx, func(conn *pgx.Conn) error { return apps.SetPassword(ctx, conn, name, password) }); err != nil {
		return "", err
	}
	c.record(ctx, model.Event{Kind: model.EventApps, Reason: "new password for user " + name})
	return password, nil
}

// DeleteUser removes a user; the objects it owns are reassigned to the
// admin, and dropDB (when not empty) is dropped.
func (c *Cluster) DeleteUser(ctx context.Context, name, dropDB string) error {
	if err := badName("user", name); err != nil {
		return err
	}
	if dropDB != "" {
		if err := badName("database", dropDB); err != nil {
			return err
		}
	}
	if c.ConnectLeaderDB == nil {
		return errors.New("deleting a user needs connections to the leader's databases")
	}
	if err := apps.DropUser(ctx, c.ConnectLeaderDB, name, dropDB); err != nil {
		return err
	}
	reason := "deleted user " + name
	if dropDB != "" {
		reason += " and database " + dropDB
	}
	c.record(ctx, model.Event{Kind: model.EventApps, Reason: reason})
	return nil
}

// DetachRequest is an app to remove: its user, and its database when
// DropDatabase (else the database is kept, owned by the admin).
type DetachRequest struct {
	App          string
	User         string // default: the app name, - as _
	Database     string // default: the app name, - as _
	DropDatabase bool
}

// Detach removes req's user (and database with DropDatabase); it returns
// the user and the database it names.
func (c *Cluster) Detach(ctx context.Context, req DetachRequest) (user, db string, err error) {
	if req.App == "" && req.User == "" {
		return "", "", fmt.Errorf("%w: an app (or a user) is required", ErrBadRequest)
	}
	user, db = req.User, req.Database
	if user == "" {
		user = DefaultName(req.App)
	}
	if db == "" && req.App != "" {
		db = DefaultName(req.App)
	}
	drop := ""
	if req.DropDatabase {
		if db == "" {
			return "", "", fmt.Errorf("%w: dropping the database needs the app or the database", ErrBadRequest)
		}
		drop = db
	}
	return user, db, c.DeleteUser(ctx, user, drop)
}

// Databases lists the databases.
func (c *Cluster) Databases(ctx context.Context) (dbs []apps.Database, err error) {
	err = c.withLeader(ctx, func(conn *pgx.Conn) error {
		dbs, err = apps.ListDatabases(ctx, conn)
		return err
	})
	return dbs, err
}

// CreateDatabase creates name, owned by owner (an existing user: CONNECT
// is then revoked from PUBLIC), or by the admin when owner is empty.
func (c *Cluster) CreateDatabase(ctx context.Context, name, owner string) error {
	if err := badName("database", name); err != nil {
		return err
	}
	if owner != "" {
		if err := badName("user", owner); err != nil {
			return err
		}
	}
	err := c.withLeader(ctx, func(conn *pgx.Conn) error {
		if owner != "" {
			return apps.CreateDatabase(ctx, conn, name, owner)
		}
		if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("creating database %s: %w", name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	c.record(ctx, model.Event{Kind: model.EventApps, Reason: "created database " + name})
	return nil
}
