package ops

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/petrel-db/petrel/internal/apps"
	"github.com/petrel-db/petrel/internal/model"
)

// AttachRequest is an app to give its own database and login user.
type AttachRequest struct {
	App      string
	Database string // default: the app name, - as _
	User     string // default: the app name, - as _
	// RootCert is the path clients find the cluster CA at ("": the URLs
	// ask for no verification).
	RootCert string
	// FallbackProxy is a leader proxy address to use when no member
	// publishes one (cluster.json's database_url host).
	FallbackProxy string
}

// AttachResult is what an app needs: its URLs. The password is in them
// and nowhere else.
type AttachResult struct {
	Database, User string
	// ProxyURL goes through a leader proxy (always the writable leader);
	// "" when no member runs one.
	ProxyURL string
	// RegionURLs are each region's nearest member, direct (read-only on
	// replicas).
	RegionURLs map[string]string
	Regions    []string // RegionURLs' keys, in topology order
}

// ErrBadRequest marks invalid parameters (names).
var ErrBadRequest = errors.New("bad request")

// DefaultName is the database and user name for an app name.
func DefaultName(app string) string { return strings.ReplaceAll(strings.ToLower(app), "-", "_") }

// Attach creates req's user (random password) and database owned by it,
// on the leader, with ConnectLeader.
func (c *Cluster) Attach(ctx context.Context, req AttachRequest) (AttachResult, error) {
	var res AttachResult
	if req.App == "" {
		return res, fmt.Errorf("%w: an app name is required", ErrBadRequest)
	}
	if req.Database == "" {
		req.Database = DefaultName(req.App)
	}
	if req.User == "" {
		req.User = DefaultName(req.App)
	}
	if err := apps.CheckName("database", req.Database); err != nil {
		return res, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if err := apps.CheckName("user", req.User); err != nil {
		return res, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	if c.ConnectLeader == nil {
		return res, errors.New("attaching needs a connection to the leader")
	}
	t, err := c.Topology(ctx)
	if err != nil {
		return res, err
	}
	conn, err := c.ConnectLeader(ctx)
	if err != nil {
		return res, err
	}
	defer conn.Close(context.Background())
	pw, err := apps.RandomPassword()
	if err != nil {
		return res, err
	}
	if err := apps.CreateUser(ctx, conn, req.User, pw); err != nil {
		return res, err
	}
	if err := apps.CreateDatabase(ctx, conn, req.Database, req.User); err != nil {
		return res, fmt.Errorf("%w (user %s was created; `petrel detach --app %s` removes it)", err, req.User, req.App)
	}
	c.record(ctx, model.Event{Kind: model.EventApps, Reason: fmt.Sprintf("attached app %s: database %s owned by user %s", req.App, req.Database, req.User)})
	mk := func(host, sslmode string) string {
		u := url.URL{Scheme: "postgres", User: url.UserPassword(req.User, pw), Host: host, Path: "/" + req.Database}
		if req.RootCert != "" {
			u.RawQuery = "sslmode=" + sslmode + "&sslrootcert=" + url.QueryEscape(req.RootCert)
		}
		return u.String()
	}
	res = AttachResult{Database: req.Database, User: req.User, RegionURLs: map[string]string{}}
	if proxy := proxyAddr(t, req.FallbackProxy); proxy != "" {
		// verify-ca: the certificate names the leader, not the proxy host.
		res.ProxyURL = mk(proxy, "verify-ca")
	}
	for _, r := range t.Regions() {
		if m, ok := t.RegionMember(r); ok {
			res.RegionURLs[r] = mk(m.PostgresAddr, "verify-full")
			res.Regions = append(res.Regions, r)
		}
	}
	return res, nil
}

// proxyAddr is the leader's proxy address, else any member's, else the
// fallback.
func proxyAddr(t Topology, fallback string) string {
	if m, ok := t.Members[t.Leader]; ok && m.ProxyAddr != "" {
		return m.ProxyAddr
	}
	for _, id := range t.IDs() {
		if a := t.Members[id].ProxyAddr; a != "" {
			return a
		}
	}
	return fallback
}
