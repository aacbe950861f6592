package engine

import (
	"fmt"
	"slices"
)

// ArchiveRole is what a node does with the WAL its Postgres hands to the
// archive spool (archive_mode = always: every member spools the segments
// it writes or receives, and keeps them until the archive holds them).
type ArchiveRole string

const (
	// ArchiveOff: no backup store configured; nothing is spooled.
	ArchiveOff ArchiveRole = "off"
	// ArchivePush: upload spooled files to the store (never overwriting
	// a different one), then drop them.
	ArchivePush ArchiveRole = "push"
	// ArchiveKeep: upload nothing; drop a spooled file only once the
	// store holds an identical copy, keep the rest (this member may lead
	// next and then pushes what the old leader never archived).
	ArchiveKeep ArchiveRole = "keep"
)

// ArchiveFacts are the archiver's own facts for DecideArchive.
type ArchiveFacts struct {
	Configured bool // the cluster has a backup store
	Spooled    int  // files waiting in the spool
	// CheckedTimeline is the newest timeline whose archive chain this
	// node has checked since it started (0: none).
	CheckedTimeline uint32
}

// ArchivePlan is DecideArchive's answer.
type ArchivePlan struct {
	Role ArchiveRole
	// CheckChain: the spool is drained on a timeline whose chain has not
	// been checked yet (a promotion, or this node's first round as the
	// archiving leader): verify the archive is continuous up to now.
	CheckChain bool
	// BackupSource (push only): a scheduled base backup need not load the
	// leader: a standby streams from it, or it has no other member.
	BackupSource bool
	Reason       string
}

// DecideArchive says whether this node archives. Only the leader pushes,
// and only while rule 1 lets its Postgres be writable (the key on its own
// lease with FenceMargin left, or a failsafe window): so at most one node
// pushes at a time, the archiver follows every failover, and a leader
// about to fence stops uploading first. Every other node keeps what it
// spooled until the archive has it, which is what closes the failover
// gap: a new leader still holds every old-timeline segment the old one
// did not archive, and pushes it.
func DecideArchive(o Observation, f ArchiveFacts, p Params) ArchivePlan {
	if !f.Configured {
		return ArchivePlan{Role: ArchiveOff, Reason: "no backup store configured"}
	}
	writable := o.Running && !o.InRecovery
	switch {
	case !o.LeaderMine:
		return ArchivePlan{Role: ArchiveKeep, Reason: "not the leader: keeping spooled WAL until the archive has it"}
	case !writable:
		return ArchivePlan{Role: ArchiveKeep, Reason: "leader not yet writable"}
	case o.LeaseLeft < p.FenceMargin && o.FailsafeLeft < p.FenceMargin:
		return ArchivePlan{Role: ArchiveKeep, Reason: fmt.Sprintf("leader lease nearly expired (%v left)", o.LeaseLeft)}
	}
	plan := ArchivePlan{Role: ArchivePush, Reason: "leader with its lease", BackupSource: len(o.Registered) <= 1}
	// Only a registered member's walsender counts: a clone's
	// pg_basebackup (-X stream) has one streaming too, but that member
	// cannot be backed up from yet.
	for _, sb := range o.Standbys {
		if sb.Streaming && slices.Contains(o.Registered, sb.ID) {
			plan.BackupSource = true
		}
	}
	if f.Spooled == 0 && o.Timeline > f.CheckedTimeline {
		plan.CheckChain = true
		plan.Reason = fmt.Sprintf("spool drained on timeline %d: checking the archive chain", o.Timeline)
	}
	return plan
}
