// Package regiondsn gives an application the PostgreSQL connection string
// to use in the region it runs in, for a petrel cluster whose writer lives
// in one region and whose read replicas live in many.
//
// It is the well-known snippet for Fly's multi-region Postgres
//
//	if ENV['FLY_REGION'] != ENV['PRIMARY_REGION']
//	  uri = URI.parse(ENV['DATABASE_URL']); uri.host = "#{ENV['FLY_REGION']}.#{uri.host}"; uri.port = 5433
//	end
//
// done properly: the URL is parsed rather than pasted together, multi-host
// URLs work, credentials, database and parameters are kept, a per-region
// variable (what `petrel attach` prints) wins over the naming convention,
// target_session_attrs=read-write is dropped for a replica (it would refuse
// it), and a missing or malformed setting is an error, not a silent
// connection to the wrong place.
//
// The environment:
//
//	DATABASE_URL            the leader's URL (petrel's leader proxy, or the
//	                        primary's address): always writable.
//	PRIMARY_REGION          the cluster's primary region (e.g. scl).
//	PETREL_REGION           the region the app runs in; FLY_REGION is read
//	                        when it is unset.
//	DATABASE_URL_<REGION>   optional, per region (upper case, '-' as '_'):
//	                        that region's nearest replica, as a full URL
//	                        (used as is) or as host[:port] (put into
//	                        DATABASE_URL in place of its hosts).
//	PETREL_DIRECT_PORT      the members' direct Postgres port for the naming
//	                        convention (default 5433, petrel node's default).
//
// The rule: with no region, no primary region, or the app in the primary
// region, DATABASE_URL. Elsewhere, DATABASE_URL_<REGION> when set, else
// DATABASE_URL with its host h replaced by "<region>.h" on the direct
// port: name each region's replicas that way in your DNS (as Fly's
// <region>.<app>.internal does).
//
// Reads from the replica URL see the region's replica, a little behind the
// leader (see `petrel status` for each region's lag); writes there fail
// with "cannot execute ... in a read-only transaction", so send writes to
// Leader().
package regiondsn

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// DefaultDirectPort is petrel node's default Postgres port.
const DefaultDirectPort = 5433

// Source says where a Result's URL came from.
type Source string

// Sources.
const (
	SourcePrimary    Source = "primary"    // DATABASE_URL: the app is in the primary region (or none is known)
	SourceRegionVar  Source = "region-var" // DATABASE_URL_<REGION>
	SourceConvention Source = "convention" // <region>.<host> on the direct port
)

// Result is the connection string for the app's region.
type Result struct {
	URL           string // what to connect with for reads in this region
	Leader        string // DATABASE_URL: where writes go
	Region        string // the app's region ("" when unknown)
	PrimaryRegion string
	Source        Source
}

// Lookup reads a variable, like os.LookupEnv.
type Lookup func(string) (string, bool)

// FromEnv resolves the process environment.
func FromEnv() (Result, error) { return Resolve(os.LookupEnv) }

// URL is FromEnv().URL.
func URL() (string, error) {
	r, err := FromEnv()
	return r.URL, err
}

// RegionVar is the per-region variable for region: DATABASE_URL_<REGION>.
func RegionVar(region string) string {
	return "DATABASE_URL_" + strings.ToUpper(strings.ReplaceAll(region, "-", "_"))
}

func get(env Lookup, k string) string {
	v, _ := env(k)
	return strings.TrimSpace(v)
}

// Resolve applies the rule above to the variables env gives.
func Resolve(env Lookup) (Result, error) {
	leader := get(env, "DATABASE_URL")
	if leader == "" {
		return Result{}, errors.New("regiondsn: DATABASE_URL is not set")
	}
	if _, err := parse(leader); err != nil {
		return Result{}, fmt.Errorf("regiondsn: DATABASE_URL: %w", err)
	}
	r := Result{Leader: leader, PrimaryRegion: get(env, "PRIMARY_REGION"), Region: get(env, "PETREL_REGION")}
	if r.Region == "" {
		r.Region = get(env, "FLY_REGION")
	}
	if r.Region == "" || r.PrimaryRegion == "" || r.Region == r.PrimaryRegion {
		r.URL, r.Source = leader, SourcePrimary
		return r, nil
	}
	if v := get(env, RegionVar(r.Region)); v != "" {
		u, err := regionURL(leader, v)
		if err != nil {
			return Result{}, fmt.Errorf("regiondsn: %s: %w", RegionVar(r.Region), err)
		}
		r.URL, r.Source = u, SourceRegionVar
		return r, nil
	}
	port := DefaultDirectPort
	if v := get(env, "PETREL_DIRECT_PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return Result{}, fmt.Errorf("regiondsn: PETREL_DIRECT_PORT %q is not a port", v)
		}
		port = p
	}
	u, err := conventionURL(leader, r.Region, port)
	if err != nil {
		return Result{}, fmt.Errorf("regiondsn: %w", err)
	}
	r.URL, r.Source = u, SourceConvention
	return r, nil
}

// parse accepts postgres:// and postgresql:// URLs, with one or more
// comma-separated hosts.
func parse(s string) (*url.URL, error) {
	scheme, _, ok := strings.Cut(s, "://")
	if !ok || (scheme != "postgres" && scheme != "postgresql") {
		return nil, errors.New("want a postgres:// URL")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if u.Host == "" {
		return nil, errors.New("the URL names no host")
	}
	return u, nil
}

// regionURL is v when it is a URL, else the leader URL pointed at v
// (host or host:port).
func regionURL(leader, v string) (string, error) {
	if strings.Contains(v, "://") {
		if _, err := parse(v); err != nil {
			return "", err
		}
		return v, nil
	}
	if strings.ContainsAny(v, "/@?") {
		return "", fmt.Errorf("%q: want a postgres:// URL or host[:port]", v)
	}
	return withHost(leader, v)
}

// conventionURL points the leader URL at <region>.<host>:port, host being
// the first host of the leader URL.
func conventionURL(leader, region string, port int) (string, error) {
	u, err := parse(leader)
	if err != nil {
		return "", err
	}
	first, _, _ := strings.Cut(u.Host, ",")
	host := first
	if h, _, err := net.SplitHostPort(first); err == nil {
		host = h
	}
	if net.ParseIP(strings.Trim(host, "[]")) != nil {
		return "", fmt.Errorf("DATABASE_URL's host %s is an IP address: there is no <region>.<host> name to derive; set %s", host, RegionVar(region))
	}
	return withHost(leader, net.JoinHostPort(region+"."+host, strconv.Itoa(port)))
}

// withHost replaces the leader URL's host list with hostport and makes
// it fit a read replica.
func withHost(leader, hostport string) (string, error) {
	u, err := parse(leader)
	if err != nil {
		return "", err
	}
	u.Host = hostport
	q := u.Query()
	switch q.Get("target_session_attrs") {
	case "read-write", "primary":
		q.Del("target_session_attrs")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
