package backup

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/petrel-db/petrel/internal/backupstore"
	"github.com/petrel-db/petrel/internal/model"
)

// Retention is how long and how many base backups the store keeps.
type Retention struct {
	// Window: every point in time from now-Window to now stays
	// restorable (the newest backup ending at or before the window's
	// start is kept, and everything newer).
	Window time.Duration
	// Min complete backups are kept whatever their age (at least 1).
	Min int
}

// Default retention when neither flags nor the configuration say.
const (
	DefaultRetentionWindow = 7 * 24 * time.Hour
	DefaultRetentionMin    = 2
)

// RetentionOf is the retention prune applies: window and min when set
// (flags), else the configuration's, else the defaults.
func RetentionOf(c model.BackupConfig, window *time.Duration, min *int) (Retention, error) {
	r := Retention{Window: DefaultRetentionWindow, Min: DefaultRetentionMin}
	if c.RetentionWindowSec > 0 {
		r.Window = time.Duration(c.RetentionWindowSec) * time.Second
	}
	if c.RetentionMin > 0 {
		r.Min = c.RetentionMin
	}
	if window != nil {
		r.Window = *window
	}
	if min != nil {
		r.Min = *min
	}
	if r.Window < 0 || r.Min < 1 {
		return r, fmt.Errorf("retention window %s and minimum %d: want a window >= 0 and a minimum >= 1", r.Window, r.Min)
	}
	return r, nil
}

// PrunePlan is what retention deletes and keeps.
type PrunePlan struct {
	Keep          []string `json:"keep"`                     // complete backups kept, oldest first
	DeleteBackups []string `json:"delete_backups,omitempty"` // backup ids (complete or not) to delete
	DeleteWAL     []string `json:"delete_wal,omitempty"`     // archived WAL file names to delete, in name order
	// KeepFrom is the oldest kept backup's start segment: every WAL file
	// from its number on (any timeline) is kept, and every history file.
	KeepFrom string `json:"keep_from,omitempty"`
}

// PlanRetention is the retention rule. bs are the store's backups
// (Status "complete" for those with a manifest; others are failed or
// incomplete, their StartTime the time of their newest object), wal the
// archived WAL file names. It never deletes a kept backup, a history
// file, a WAL file from the oldest kept backup's start segment on (on any
// timeline), nor a complete backup newer than the oldest kept one; a
// failed backup may go once a complete one started after it. With no
// complete backup nothing is deleted.
func PlanRetention(now time.Time, bs []Backup, wal []string, r Retention) PrunePlan {
	var p PrunePlan
	var complete []Backup
	for _, b := range bs {
		if b.Status == "complete" {
			if _, ok := ParseSegment(b.StartSeg); ok {
				complete = append(complete, b)
			}
		}
	}
	if len(complete) == 0 {
		return p
	}
	sort.SliceStable(complete, func(i, j int) bool { return complete[i].StartTime.Before(complete[j].StartTime) })
	minKeep := r.Min
	if minKeep < 1 {
		minKeep = 1
	}
	// oldest: the index of the oldest kept backup. The Min newest...
	oldest := len(complete) - minKeep
	if oldest < 0 {
		oldest = 0
	}
	// ...and the newest one ending at or before the window's start (it
	// restores the window's first moments), or all when none does.
	cutoff := now.Add(-r.Window)
	anchor := 0
	for i, b := range complete {
		if !b.EndTime.After(cutoff) {
			anchor = i
		}
	}
	if anchor < oldest {
		oldest = anchor
	}
	for i, b := range complete {
		if i < oldest {
			p.DeleteBackups = append(p.DeleteBackups, b.ID)
		} else {
			p.Keep = append(p.Keep, b.ID)
		}
	}
	newest := complete[len(complete)-1].StartTime
	for _, b := range bs {
		if b.Status != "complete" && b.StartTime.Before(newest) {
			p.DeleteBackups = append(p.DeleteBackups, b.ID)
		}
	}
	start, _ := ParseSegment(complete[oldest].StartSeg)
	p.KeepFrom = start.Name()
	for _, name := range wal {
		if !ValidWALName(name) || strings.HasSuffix(name, ".history") {
			continue
		}
		if s, ok := ParseSegment(name[:24]); ok && s.No < start.No {
			p.DeleteWAL = append(p.DeleteWAL, name)
		}
	}
	sort.Strings(p.DeleteWAL)
	return p
}

// ListAllBackups lists the store's backups, complete (from their
// manifests) and not (a backup directory without a manifest: Status
// "incomplete", StartTime its newest object's time).
func ListAllBackups(ctx context.Context, st backupstore.Store) ([]Backup, error) {
	bs, err := ListBackups(ctx, st)
	if err != nil {
		return nil, err
	}
	have := map[string]bool{}
	for _, b := range bs {
		have[b.ID] = true
	}
	objs, err := st.List(ctx, "base/")
	if err != nil {
		return nil, err
	}
	partial := map[string]time.Time{}
	for _, o := range objs {
		id, _, ok := strings.Cut(strings.TrimPrefix(o.Key, "base/"), "/")
		if !ok || have[id] {
			continue
		}
		if t, seen := partial[id]; !seen || o.ModTime.After(t) {
			partial[id] = o.ModTime
		}
	}
	for id, t := range partial {
		bs = append(bs, Backup{ID: id, StartTime: t, Status: "incomplete"})
	}
	return bs, nil
}

// Prune applies retention r to st as of now: it plans (PlanRetention)
// and, unless dryRun, deletes the plan's backups (manifest first, so an
// interrupted prune leaves an incomplete backup the next one removes)
// and then its WAL files.
func Prune(ctx context.Context, st backupstore.Store, now time.Time, r Retention, dryRun bool) (PrunePlan, error) {
	bs, err := ListAllBackups(ctx, st)
	if err != nil {
		return PrunePlan{}, err
	}
	l, err := ListWAL(ctx, st)
	if err != nil {
		return PrunePlan{}, err
	}
	p := PlanRetention(now, bs, sortedNames(l), r)
	if dryRun {
		return p, nil
	}
	for _, id := range p.DeleteBackups {
		if err := st.Delete(ctx, manifestKey(id)); err != nil {
			return p, fmt.Errorf("pruning backup %s: %w", id, err)
		}
		objs, err := st.List(ctx, "base/"+id+"/")
		if err != nil {
			return p, fmt.Errorf("pruning backup %s: %w", id, err)
		}
		for _, o := range objs {
			if err := st.Delete(ctx, o.Key); err != nil {
				return p, fmt.Errorf("pruning backup %s: %w", id, err)
			}
		}
	}
	for _, name := range p.DeleteWAL {
		if err := st.Delete(ctx, WALKey(name)); err != nil {
			return p, fmt.Errorf("pruning WAL %s: %w", name, err)
		}
	}
	return p, nil
}
