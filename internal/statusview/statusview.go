// Package statusview gathers the GET /status documents of a cluster's
// members and prints them as a table (like `fly status`). It is used by
// `petrel status` and `petrel up`.
//
// Members to ask come either from a local cluster file (see
// internal/localworld) or from the member keys in etcd
// (/petrel/<cluster>/members/<id>, see MembersFromEtcd). A member that does
// not answer is shown with role "offline" and state "unreachable" rather
// than left out, so that a dead member is visible.
package statusview

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/petrel-db/petrel/internal/api"
	"github.com/petrel-db/petrel/internal/store"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/petrel-db/petrel/internal/model"
)

// Target is a member to ask for its status.
type Target struct {
	ID     string
	Region string
	APIURL string // https://host:port
}

// TargetsFromMembers converts member records to targets, keeping order.
func TargetsFromMembers(ms []model.Member) []Target {
	ts := make([]Target, 0, len(ms))
	for _, m := range ms {
		ts = append(ts, Target{ID: m.ID, Region: m.Region, APIURL: m.APIURL})
	}
	return ts
}

// RequestTimeout bounds each member's GET /status.
const RequestTimeout = time.Second

// Collect GETs every target's /status concurrently through c (which
// checks each answer comes from that member, over TLS) and returns one
// Status per target, in the targets' order. An unreachable member (or
// one that answers with an error, or with another node's certificate)
// becomes Role "offline", State "unreachable", with the reason in
// Problems.
func Collect(ctx context.Context, c *api.Client, targets []Target) []model.Status {
	out := make([]model.Status, len(targets))
	var wg sync.WaitGroup
	for i, t := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := fetch(ctx, c, t)
			if err != nil {
				st = model.Status{
					ID:       t.ID,
					Region:   t.Region,
					Role:     model.RoleOffline,
					State:    "unreachable",
					APIURL:   t.APIURL,
					Problems: []string{err.Error()},
				}
			}
			if st.ID == "" {
				st.ID = t.ID
			}
			if st.Region == "" {
				st.Region = t.Region
			}
			if st.APIURL == "" {
				st.APIURL = t.APIURL
			}
			out[i] = st
		}()
	}
	wg.Wait()
	return out
}

func fetch(ctx context.Context, c *api.Client, t Target) (model.Status, error) {
	var st model.Status
	if t.APIURL == "" {
		return st, errors.New("no API URL known")
	}
	if c == nil {
		return st, errors.New("no API client (cluster CA) to ask with")
	}
	ctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	body, err := c.Get(ctx, t.APIURL, t.ID, "/status", 1<<20)
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("GET /status: bad JSON: %w", err)
	}
	return st, nil
}

// Primary returns the first member reporting role primary (a second one
// would be a bug; the table makes it visible).
func Primary(sts []model.Status) (model.Status, bool) {
	for _, s := range sts {
		if s.Role == model.RolePrimary {
			return s, true
		}
	}
	return model.Status{}, false
}

// Table prints sts as aligned columns: ID REGION ROLE STATE LAG TIMELINE.
// LAG is shown for replicas as "<bytes> / <seconds>s" and "-" otherwise.
func Table(w io.Writer, sts []model.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "ID\tREGION\tROLE\tSTATE\tLAG\tTIMELINE\tVERSION")
	for _, s := range sts {
		lag := "-"
		if s.Role == model.RoleReplica {
			lag = fmt.Sprintf("%s / %.1fs", HumanBytes(s.LagBytes), s.LagSeconds)
			if s.LagBytes < 0 {
				lag = "unknown" // the member could not ask the leader
			}
		}
		tl := "-"
		if s.Timeline > 0 {
			tl = strconv.FormatUint(uint64(s.Timeline), 10)
		}
		state := dash(s.State)
		if s.PendingRestart {
			state += " (pending restart)"
		}
		if s.ReadOnly {
			state += " (READ-ONLY: disk nearly full)"
		}
		switch {
		case s.Role == model.RolePrimary && s.SyncState != "":
			// Whether an automatic failover could happen right now.
			state += " (" + map[string]string{
				"sync":           "sync standby: " + syncList(sts),
				"async-degraded": "no sync standby: writes go on, no automatic failover",
				"blocked":        "no sync standby: writes wait (strict)",
				"off":            "async",
			}[s.SyncState] + ")"
		case s.Role == model.RoleReplica && s.Sync:
			state += " (sync)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(s.ID), dash(s.Region), dash(s.Role), state, lag, tl, dash(s.Version))
	}
	tw.Flush()
}

// Archive prints one line per member that archives WAL: its role, the
// last archived segment and its age, the spool, the last failure, and the
// recoverability window (oldest base backup's start .. last archived).
func Archive(w io.Writer, sts []model.Status, now time.Time) {
	first := true
	for _, s := range sts {
		a := s.Archive
		if a == nil || a.Role == "" || a.Role == "off" {
			continue
		}
		if first {
			fmt.Fprintln(w, "Archive:")
			first = false
		}
		last := "none yet"
		if a.LastArchived != "" {
			last = fmt.Sprintf("%s (%s ago)", a.LastArchived, now.Sub(a.LastAt).Round(time.Second))
		}
		line := fmt.Sprintf("  %s %s: last %s, spooled %d", s.ID, a.Role, last, a.Spooled)
		if !a.RestoreFrom.IsZero() && !a.LastAt.IsZero() {
			line += fmt.Sprintf(", restorable %s .. %s", a.RestoreFrom.UTC().Format(time.RFC3339), a.LastAt.UTC().Format(time.RFC3339))
		}
		if a.Uploading != "" {
			line += fmt.Sprintf(", uploading %s for %.0fs", a.Uploading, a.UploadingFor)
		}
		switch {
		case !a.BackupSince.IsZero():
			line += fmt.Sprintf(", base backup running for %s", now.Sub(a.BackupSince).Round(time.Second))
		case !a.LastBackup.IsZero():
			line += fmt.Sprintf(", last base backup %s ago", now.Sub(a.LastBackup).Round(time.Second))
		}
		if a.LastFailure != "" {
			line += fmt.Sprintf(", last failure %s: %s", a.FailureAt.UTC().Format(time.RFC3339), a.LastFailure)
		}
		fmt.Fprintln(w, line)
	}
}

func syncList(sts []model.Status) string {
	var ids []string
	for _, s := range sts {
		if s.Sync && s.Role == model.RoleReplica {
			ids = append(ids, s.ID)
		}
	}
	if len(ids) == 0 {
		return "yes"
	}
	return strings.Join(ids, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// HumanBytes formats n with binary units: "0 B", "512 B", "1.5 KiB", "3.0 MiB".
func HumanBytes(n int64) string {
	neg := n < 0
	if neg {
		n = -n
	}
	sign := ""
	if neg {
		sign = "-"
	}
	if n < 1024 {
		return fmt.Sprintf("%s%d B", sign, n)
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	f := float64(n) / 1024
	u := 0
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	return fmt.Sprintf("%s%.1f %s", sign, f, units[u])
}

// MembersFromEtcd reads the member records under /petrel/<cluster>/members/,
// sorted by ID. Members appear there only while their agent is alive (the
// keys are attached to the agent's session lease).
func MembersFromEtcd(ctx context.Context, cli *clientv3.Client, cluster string) ([]model.Member, error) {
	if cluster == "" {
		return nil, errors.New("no cluster name given")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	prefix := store.KeysFor(cluster).Members()
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("reading %s from etcd %s: %w", prefix, strings.Join(cli.Endpoints(), ","), err)
	}
	ms := make([]model.Member, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var m model.Member
		if err := json.Unmarshal(kv.Value, &m); err != nil {
			return nil, fmt.Errorf("etcd key %s: bad member record: %w", kv.Key, err)
		}
		if m.ID == "" {
			m.ID = strings.TrimPrefix(string(kv.Key), prefix)
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	return ms, nil
}
