package backup

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/model"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// What the admin API (internal/dashboard) has a member's archiver do for
// `petrel backup configure/prune/verify`: with the member's own store
// credentials, so the operator's machine needs neither etcd nor S3
// access. Each opens a store of its own (the round's is not shared
// across goroutines).

// ErrNoStore: no backup store is configured, or the store's view on
// this member is not current.
var ErrNoStore = errors.New("no backup store")

// openOwn opens the configured store for one admin request.
func (a *Archiver) openOwn(ctx context.Context) (backupstore.Store, model.BackupConfig, error) {
	cfg, ok, known, err := a.c.Source()
	switch {
	case err != nil:
		return nil, cfg, err
	case !known:
		return nil, cfg, fmt.Errorf("%w: the store's view is not current on this member", ErrNoStore)
	case !ok:
		return nil, cfg, fmt.Errorf("%w configured (petrel backup configure)", ErrNoStore)
	}
	st, err := a.c.Open(ctx, cfg, a.c.Creds)
	return st, cfg, err
}

// BackupConfig is the cluster's backup configuration as this member
// holds it (ok false: none).
func (a *Archiver) BackupConfig() (model.BackupConfig, bool, error) {
	cfg, ok, known, err := a.c.Source()
	if err == nil && !known {
		err = errors.New("the store's view is not current on this member")
	}
	return cfg, ok, err
}

// ConfigureStore checks c (valid: else ErrBadConfig; reachable with this
// member's credentials; empty or this cluster's) and stores it as the
// cluster's backup configuration in cli, recording an event for by.
func (a *Archiver) ConfigureStore(ctx context.Context, cli *clientv3.Client, c model.BackupConfig, by string) error {
	if err := ConfigureWith(ctx, cli, a.c.Cluster, a.c.Open, a.c.Creds, c); err != nil {
		return err
	}
	where := c.Path
	if c.Kind == "s3" {
		where = "s3://" + c.Bucket + "/" + c.Prefix
	}
	a.record(ctx, model.Event{Reason: fmt.Sprintf("backup store configured by %s: %s %s (schedule %ds)", by, c.Kind, where, c.ScheduleSec)})
	return nil
}

// PruneResult is a prune's outcome: the retention applied and the plan
// (what was, or with DryRun would be, deleted).
type PruneResult struct {
	Store  string    `json:"store"`
	Window string    `json:"window"` // a Go duration
	Min    int       `json:"min"`
	DryRun bool      `json:"dry_run"`
	Plan   PrunePlan `json:"plan"`
}

// PruneStore applies the retention (window and min when set, else the
// configuration's, else the defaults; refused values: ErrBadConfig) to
// the store now. Unless dryRun, what it deleted is recorded as an event
// for by, also when it failed part way (the result then holds the plan
// it was carrying out).
func (a *Archiver) PruneStore(ctx context.Context, window *time.Duration, min *int, dryRun bool, by string) (PruneResult, error) {
	var res PruneResult
	st, cfg, err := a.openOwn(ctx)
	if err != nil {
		return res, err
	}
	defer st.Close()
	r, err := RetentionOf(cfg, window, min)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrBadConfig, err)
	}
	res = PruneResult{Store: st.String(), Window: r.Window.String(), Min: r.Min, DryRun: dryRun}
	p, err := Prune(ctx, st, time.Now(), r, dryRun)
	res.Plan = p
	if !dryRun && (len(p.DeleteBackups) > 0 || len(p.DeleteWAL) > 0) {
		reason := fmt.Sprintf("pruned %d backups and %d WAL files (window %s, minimum %d) for %s", len(p.DeleteBackups), len(p.DeleteWAL), r.Window, r.Min, by)
		if err != nil {
			reason += ", then failed: " + err.Error()
		}
		a.record(ctx, model.Event{Reason: reason})
	}
	return res, err
}

// VerifyStore reads the whole archive back (Verify).
func (a *Archiver) VerifyStore(ctx context.Context) (Report, error) {
	st, _, err := a.openOwn(ctx)
	if err != nil {
		return Report{}, err
	}
	defer st.Close()
	return Verify(ctx, st)
}

// record notes ev (a backup event by this member); failing to is logged,
// not fatal (the work is done).
func (a *Archiver) record(ctx context.Context, ev model.Event) {
	if a.c.RecordEvent == nil {
		return
	}
	ev.Kind, ev.Node = model.EventBackup, a.c.Node
	ectx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := a.c.RecordEvent(ectx, ev); err != nil {
		a.c.Log.Warn("recording the backup event", "err", err)
	}
}
