package adminclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/backup"
	"github.com/petrel-db/petrel/internal/model"
)

// Operation is a long operation running in a member's background (a
// rolling restart, applying settings), as GET /api/v1/operation shows it.
type Operation struct {
	ID      int64      `json:"id"`
	Kind    string     `json:"kind"`
	Actor   string     `json:"actor"`
	Started time.Time  `json:"started"`
	Ended   *time.Time `json:"ended,omitempty"`
	State   string     `json:"state"` // running, done, failed
	Error   string     `json:"error,omitempty"`
	Log     []string   `json:"log"`
}

// SwitchoverResult is a switchover carried out: the old and new leader
// and the progress lines.
type SwitchoverResult struct {
	From string `json:"from"`
	To   string `json:"to"`
	Log  string `json:"log"`
}

// Switchover asks for a planned switchover (to "" lets the leader choose)
// and returns once there is a new leader (POST /api/v1/switchover).
func (c *Client) Switchover(ctx context.Context, to string, allowSecondaryRegion bool) (SwitchoverResult, error) {
	var res SwitchoverResult
	err := c.do(ctx, http.MethodPost, "/api/v1/switchover", map[string]any{"to": to, "allow_secondary_region": allowSecondaryRegion}, &res)
	return res, err
}

// RollingRestart starts a rolling restart on the member in use (POST
// /api/v1/restart); follow it with Wait.
func (c *Client) RollingRestart(ctx context.Context) (Operation, error) {
	var op Operation
	err := c.do(ctx, http.MethodPost, "/api/v1/restart", struct{}{}, &op)
	return op, err
}

// Operation is the member's running or last operation.
func (c *Client) Operation(ctx context.Context) (Operation, error) {
	var op Operation
	err := c.do(ctx, http.MethodGet, "/api/v1/operation", nil, &op)
	return op, err
}

// Wait polls the member in use (the one that started it: an operation
// is that member's) until operation id ends (or ctx does), handing each
// new log line to line; a failed operation is an error. The member may
// be briefly unreachable: Wait gives up after 30 s without an answer.
func (c *Client) Wait(ctx context.Context, id int64, line func(string)) (Operation, error) {
	shown := 0
	lastOK := time.Now()
	for {
		var op Operation
		err := c.doHere(ctx, http.MethodGet, "/api/v1/operation", &op)
		var apiErr *Error
		if err != nil && !errors.As(err, &apiErr) && ctx.Err() == nil && time.Since(lastOK) < 30*time.Second {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue // not an answer: ask again
		}
		if err != nil {
			return op, err
		}
		lastOK = time.Now()
		if op.ID != id {
			return op, fmt.Errorf("operation %d is gone from %s (it runs %d %s now): was its agent restarted?", id, c.Member(), op.ID, op.Kind)
		}
		// The log keeps the last 200 lines: lines before those are lost.
		if shown > len(op.Log) {
			shown = 0
		}
		for _, l := range op.Log[shown:] {
			if line != nil {
				line(l)
			}
		}
		shown = len(op.Log)
		switch op.State {
		case "done":
			return op, nil
		case "failed":
			return op, errors.New(op.Error)
		}
		select {
		case <-ctx.Done():
			return op, fmt.Errorf("operation %d (%s) still running on %s: %w", op.ID, op.Kind, c.Member(), ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Config is the stored cluster-wide settings and their revision.
func (c *Client) Config(ctx context.Context) (map[string]string, int64, error) {
	var res struct {
		Settings map[string]string `json:"settings"`
		Revision int64             `json:"revision"`
	}
	err := c.do(ctx, http.MethodGet, "/api/v1/config", nil, &res)
	return res.Settings, res.Revision, err
}

// ConfigChange is PUT /api/v1/config's answer: the stored revision and
// the operation applying it (a rolling restart when one is needed).
type ConfigChange struct {
	Revision  int64     `json:"revision"`
	Operation Operation `json:"operation"`
}

// SetConfig validates and stores settings and removes unset (both empty:
// apply the stored settings again, finishing an interrupted rolling
// restart), then starts applying them on the member in use.
func (c *Client) SetConfig(ctx context.Context, settings map[string]string, unset []string) (ConfigChange, error) {
	var res ConfigChange
	body := map[string]any{"settings": settings}
	if len(unset) > 0 {
		body["unset"] = unset
	}
	err := c.do(ctx, http.MethodPut, "/api/v1/config", body, &res)
	return res, err
}

// Status is every registered member's /status, as the member in use
// gathers it (unreachable members as offline).
func (c *Client) Status(ctx context.Context) ([]model.Status, error) {
	var sts []model.Status
	err := c.do(ctx, http.MethodGet, "/api/v1/status", nil, &sts)
	return sts, err
}

// Events lists the events with an ID above after, oldest first; with
// limit > 0 the newest limit of them.
func (c *Client) Events(ctx context.Context, after int64, limit int) ([]model.Event, error) {
	q := query("after", positive(after), "limit", positive(int64(limit)))
	var evs []model.Event
	err := c.do(ctx, http.MethodGet, "/api/v1/events"+q, nil, &evs)
	return evs, err
}

func positive(n int64) string {
	if n <= 0 {
		return ""
	}
	return strconv.FormatInt(n, 10)
}

// AttachRequest is POST /api/v1/apps's body.
type AttachRequest struct {
	App      string `json:"app"`
	Database string `json:"database,omitempty"`
	User     string `json:"user,omitempty"`
	// RootCert is where the app finds the cluster CA: the URLs then ask
	// for verification.
	RootCert string `json:"root_cert,omitempty"`
	// FallbackProxy is a leader proxy address for when no member
	// publishes one.
	FallbackProxy string `json:"fallback_proxy,omitempty"`
}

// AttachResult is an attached app's URLs (the password is in them).
type AttachResult struct {
	Database   string            `json:"database"`
	User       string            `json:"user"`
	ProxyURL   string            `json:"proxy_url"`
	RegionURLs map[string]string `json:"region_urls"`
	Regions    []string          `json:"regions"` // RegionURLs' keys, primary region first
}

// Attach creates an app's database and user.
func (c *Client) Attach(ctx context.Context, req AttachRequest) (AttachResult, error) {
	var res AttachResult
	err := c.do(ctx, http.MethodPost, "/api/v1/apps", req, &res)
	return res, err
}

// DetachResult is what a detach removed.
type DetachResult struct {
	User            string `json:"user"`
	Database        string `json:"database"`
	DatabaseDropped bool   `json:"database_dropped"`
	// Owner owns the kept database now (the role the API acted as).
	Owner string `json:"owner"`
}

// Detach removes an app's user (user, database: "" for the app's
// defaults) and, with dropDatabase, its database.
func (c *Client) Detach(ctx context.Context, app, user, database string, dropDatabase bool) (DetachResult, error) {
	var res DetachResult
	q := query("user", user, "database", database, "drop_database", strconv.FormatBool(dropDatabase))
	err := c.do(ctx, http.MethodDelete, "/api/v1/apps/"+url.PathEscape(app)+q, nil, &res)
	return res, err
}

// User is a login user.
type User struct {
	Name       string   `json:"name"`
	Attributes []string `json:"attributes"`
}

// Users lists the login users.
func (c *Client) Users(ctx context.Context) ([]User, error) {
	var res struct {
		Users []User `json:"users"`
	}
	err := c.do(ctx, http.MethodGet, "/api/v1/users", nil, &res)
	return res.Users, err
}

// CreateUser creates a least-privilege login user and returns its
// random password.
func (c *Client) CreateUser(ctx context.Context, name string) (string, error) {
	var res struct {
		Password string `json:"password"`
	}
	err := c.do(ctx, http.MethodPost, "/api/v1/users", map[string]string{"name": name}, &res)
	return res.Password, err
}

// DeleteUser drops a user (its objects go to the role the API acts as).
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/users/"+url.PathEscape(name), nil, nil)
}

// SetUserPassword gives an app user password (random when "") and
// returns it.
func (c *Client) SetUserPassword(ctx context.Context, name, password string) (string, error) {
	var res struct {
		Password string `json:"password"`
	}
	var body any = struct{}{}
	if password != "" {
		body = map[string]string{"password": password}
	}
	err := c.do(ctx, http.MethodPost, "/api/v1/users/"+url.PathEscape(name)+"/password", body, &res)
	return res.Password, err
}

// Database is a database (Size -1: the role the API acts as may not read
// it).
type Database struct {
	Name  string `json:"name"`
	Owner string `json:"owner"`
	Size  int64  `json:"size_bytes"`
}

// Databases lists the databases.
func (c *Client) Databases(ctx context.Context) ([]Database, error) {
	var res struct {
		Databases []Database `json:"databases"`
	}
	err := c.do(ctx, http.MethodGet, "/api/v1/databases", nil, &res)
	return res.Databases, err
}

// CreateDatabase creates a database owned by owner ("": the role the API
// acts as).
func (c *Client) CreateDatabase(ctx context.Context, name, owner string) error {
	return c.do(ctx, http.MethodPost, "/api/v1/databases", map[string]string{"name": name, "owner": owner}, nil)
}

// Backups is the backup catalog.
func (c *Client) Backups(ctx context.Context) ([]backup.Backup, error) {
	var res struct {
		Backups []backup.Backup `json:"backups"`
	}
	err := c.do(ctx, http.MethodGet, "/api/v1/backups", nil, &res)
	return res.Backups, err
}

// BackupConfig is the cluster's backup configuration (ErrNotFound: none).
func (c *Client) BackupConfig(ctx context.Context) (model.BackupConfig, error) {
	var res struct {
		Config model.BackupConfig `json:"config"`
	}
	err := c.do(ctx, http.MethodGet, "/api/v1/backup/config", nil, &res)
	return res.Config, err
}

// ConfigureBackups sets the backup configuration; the member checks the
// store with its own credentials first.
func (c *Client) ConfigureBackups(ctx context.Context, cfg model.BackupConfig) error {
	return c.do(ctx, http.MethodPut, "/api/v1/backup/config", cfg, nil)
}

// PruneBackups applies retention (window and min when not nil, else the
// configuration's). A prune that failed part way returns its result (the
// plan it was carrying out) with the error.
func (c *Client) PruneBackups(ctx context.Context, window *time.Duration, min *int, dryRun bool) (backup.PruneResult, error) {
	body := map[string]any{"dry_run": dryRun}
	if window != nil {
		body["window"] = window.String()
	}
	if min != nil {
		body["min"] = *min
	}
	var res backup.PruneResult
	err := c.do(ctx, http.MethodPost, "/api/v1/backups/prune", body, &res)
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusConflict {
		var partial struct {
			Result *backup.PruneResult `json:"result"`
		}
		if json.Unmarshal(e.Body, &partial) == nil && partial.Result != nil {
			res = *partial.Result
		}
	}
	return res, err
}

// VerifyBackups has a member read the whole archive back (it may take
// long: give the client a long RequestTimeout).
func (c *Client) VerifyBackups(ctx context.Context) (backup.Report, error) {
	var r backup.Report
	err := c.do(ctx, http.MethodGet, "/api/v1/backups/verify", nil, &r)
	return r, err
}

// BackupRequest is POST /api/v1/backups' answer: the member that takes
// the backup and the request's number there.
type BackupRequest struct {
	Member  string `json:"member"`
	Request uint64 `json:"request"`
}

// RequestBackup asks the archiving member (the leader) for a base backup
// now: the member in use first, then the leader a refusal names, then
// the others. The client then stays on the member that took it (follow
// it with RunningBackup).
func (c *Client) RequestBackup(ctx context.Context) (BackupRequest, error) {
	var res BackupRequest
	err := c.do(ctx, http.MethodPost, "/api/v1/backups", nil, &res)
	tried := map[int]bool{}
	for range len(c.members) + 1 {
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusConflict {
			return res, err
		}
		c.mu.Lock()
		tried[c.cur] = true
		c.mu.Unlock()
		next := -1
		if i := strings.LastIndex(e.Message, "(ask "); i >= 0 {
			next = c.index(strings.TrimSuffix(e.Message[i+len("(ask "):], ")"))
		}
		for i := 0; (next < 0 || tried[next]) && i < len(c.members); i++ {
			next = i
		}
		if next < 0 || tried[next] {
			return res, err
		}
		c.mu.Lock()
		c.cur = next
		c.mu.Unlock()
		err = c.do(ctx, http.MethodPost, "/api/v1/backups", nil, &res)
	}
	return res, err
}

// index is the member id's index in the client's members (-1: none).
func (c *Client) index(id string) int {
	for i, m := range c.members {
		if id != "" && m.ID == id {
			return i
		}
	}
	return -1
}

// RunningBackup is the base backups of the member in use (the one running and
// how far it got, how the last ended): only that member is asked.
func (c *Client) RunningBackup(ctx context.Context) (backup.BackupState, error) {
	var s backup.BackupState
	err := c.doHere(ctx, http.MethodGet, "/api/v1/backups/running", &s)
	return s, err
}
