package engine

import (
	"fmt"
	"time"
)

// BackupInput is what DecideBackup looks at: the schedule, the backup
// catalog as the archiving member last read it, and this member's own
// attempts. Time is passed in (Now), never read.
type BackupInput struct {
	// Pushing: this member pushes WAL (DecideArchive's ArchivePush). Only
	// that member schedules backups, so at most one member takes them,
	// and the schedule follows every failover.
	Pushing bool
	Every   time.Duration // the schedule (0: no scheduled backups)
	// CatalogRead: the catalog was read since this member began pushing
	// (until then it does not know when the last backup was).
	CatalogRead bool
	// Newest is the start of the newest complete backup (zero: none).
	Newest time.Time
	// Running: a backup this member started has not finished.
	Running bool
	// LastAttempt is when this member last started one (zero: never).
	LastAttempt time.Time
	// SourceReady: a standby streams, or there is no other member
	// (ArchivePlan.BackupSource). While it is not, a due backup waits, up
	// to BackupRetry from WaitingSince (when it first waited), and then is
	// taken from the leader: an old backup is worse than a loaded leader.
	SourceReady  bool
	WaitingSince time.Time
	Now          time.Time
}

// BackupPlan is DecideBackup's answer.
type BackupPlan struct {
	Start bool
	// Waiting: due, but waiting for a streaming replica to take it from.
	Waiting bool
	Reason  string
}

// BackupRetry is the wait after a scheduled backup that did not finish
// before the next try (or Every, if shorter): a failing backup is
// retried, not hammered.
const BackupRetry = 10 * time.Minute

// DecideBackup says whether the archiving member starts a scheduled base
// backup now: one is due when the newest complete backup started Every
// ago or more (or there is none), none is running, and the last attempt is
// not too recent.
func DecideBackup(in BackupInput) BackupPlan {
	switch {
	case in.Every <= 0:
		return BackupPlan{Reason: "no backup schedule"}
	case !in.Pushing:
		return BackupPlan{Reason: "not the archiving member"}
	case in.Running:
		return BackupPlan{Reason: "a backup is running"}
	case !in.CatalogRead:
		return BackupPlan{Reason: "backup catalog not read yet"}
	}
	if !in.Newest.IsZero() && in.Now.Sub(in.Newest) < in.Every {
		return BackupPlan{Reason: fmt.Sprintf("next backup due in %v", in.Newest.Add(in.Every).Sub(in.Now).Round(time.Second))}
	}
	if retry := min(BackupRetry, in.Every); !in.LastAttempt.IsZero() && in.Now.Sub(in.LastAttempt) < retry {
		return BackupPlan{Reason: fmt.Sprintf("last attempt %v ago: retrying after %v", in.Now.Sub(in.LastAttempt).Round(time.Second), retry)}
	}
	if !in.SourceReady && (in.WaitingSince.IsZero() || in.Now.Sub(in.WaitingSince) < BackupRetry) {
		return BackupPlan{Waiting: true, Reason: "due: waiting for a streaming replica to back up from"}
	}
	if in.Newest.IsZero() {
		return BackupPlan{Start: true, Reason: "scheduled: no complete backup yet"}
	}
	return BackupPlan{Start: true, Reason: fmt.Sprintf("scheduled: the newest complete backup started %v ago (every %v)", in.Now.Sub(in.Newest).Round(time.Second), in.Every)}
}
