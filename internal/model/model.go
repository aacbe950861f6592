// Package model holds the data types shared by the agent, the store, the
// HTTP API and the CLI: what a member publishes about itself, what the
// cluster records in etcd, and the /status document.
//
// Nothing here performs I/O. Every type is JSON-encoded in etcd or over
// HTTP, so field names are part of petrel's compatibility surface.
package model

import "time"

// Roles, as served by GET /role and in Status.Role.
const (
	RolePrimary = "primary" // writable leader holding the lease
	RoleReplica = "replica" // streaming (or trying to) from the leader
	RoleFenced  = "fenced"  // Postgres stopped or demoted because leadership was lost or unproven
	RoleOffline = "offline" // Postgres not running (or the member is unreachable)
)

// Member is what a member publishes under /petrel/<cluster>/members/<id>,
// attached to its own session lease: it disappears when the agent dies.
// Only that member writes its key.
type Member struct {
	ID           string `json:"id"`
	Region       string `json:"region"`
	APIURL       string `json:"api_url"`       // http://host:port
	PostgresAddr string `json:"postgres_addr"` // host:port of the member's own Postgres
	ProxyAddr    string `json:"proxy_addr,omitempty"`
	// Version is the member's petrel (version@commit): members of two
	// versions run side by side during a rolling upgrade.
	Version string `json:"version,omitempty"`
	// Unknown keeps fields a newer petrel wrote (see Unknown).
	Unknown Unknown `json:"-"`
}

// Sync is the cluster's record of who may be promoted without losing an
// acknowledged commit, under /petrel/<cluster>/sync.
//
// Invariant: every commit the leader acknowledged is durable on Leader and
// on at least K of Members. So a
// candidate that has heard the final positions of len(Members)-K+1 of them
// (itself included) knows the highest of those holds every acknowledged
// commit. Only the leader writes this key, and only with a compare-and-swap
// on the revision it read. A member is added here before Postgres waits for
// it (a superset record only asks candidates to hear more members), and
// removed here only after it left synchronous_standby_names and the others
// flushed past that change; while Postgres waits for nobody the record
// names nobody (engine.syncActions).
type Sync struct {
	Leader  string   `json:"leader"`
	Members []string `json:"members"`
	K       int      `json:"k"`
	// Version is the petrel of the leader that wrote the record.
	Version string  `json:"version,omitempty"`
	Unknown Unknown `json:"-"`
}

// Switchover is a request for a planned leader change under
// /petrel/<cluster>/switchover, written by the CLI and consumed by the leader.
type Switchover struct {
	From        string    `json:"from"`         // the leader when requested
	To          string    `json:"to,omitempty"` // "" lets the leader choose
	RequestedAt time.Time `json:"requested_at"` // requests older than engine's SwitchoverTTL (30 s) are ignored
	// Set by the old leader once it has stopped: the LSN of its shutdown
	// checkpoint, which the target must have received before promoting.
	StoppedLSN uint64 `json:"stopped_lsn,omitempty"`
	Target     string `json:"target,omitempty"` // chosen target, set with StoppedLSN
	// AllowSecondaryRegion lets To be outside the primary region; the
	// primary region then moves to To's region when it takes over.
	AllowSecondaryRegion bool `json:"allow_secondary_region,omitempty"`
	// Version is the petrel that wrote the request (or completed it).
	Version string  `json:"version,omitempty"`
	Unknown Unknown `json:"-"`
}

// ClusterInfo is created once, by the member that initialized the cluster,
// under /petrel/<cluster>/info (create-only: its existence is the
// "initialized" guard).
type ClusterInfo struct {
	Name          string    `json:"name"`
	PrimaryRegion string    `json:"primary_region"`
	InitializedBy string    `json:"initialized_by"`
	InitializedAt time.Time `json:"initialized_at"`
	SystemID      string    `json:"system_id,omitempty"`
	// RestoredFrom says which backup and target a restored cluster
	// started from (petrel restore, petrel node --restore-from).
	RestoredFrom string `json:"restored_from,omitempty"`
	// Version is the petrel that created (or last completed) the record.
	Version string  `json:"version,omitempty"`
	Unknown Unknown `json:"-"`
}

// Status is the GET /status document of one member.
type Status struct {
	ID           string  `json:"id"`
	Region       string  `json:"region"`
	Role         string  `json:"role"`  // as GET /role
	State        string  `json:"state"` // what the agent is doing: running, starting, cloning, rewinding, promoting, fenced, stopped, ...
	Timeline     uint32  `json:"timeline"`
	LSN          string  `json:"lsn"`        // primary: current WAL; replica: last received
	ReplayLSN    string  `json:"replay_lsn"` // replica: last replayed
	LagBytes     int64   `json:"lag_bytes"`  // behind the leader's current LSN, as last seen
	LagSeconds   float64 `json:"lag_seconds"`
	Leader       string  `json:"leader"` // the leader's id ("" when none)
	Sync         bool    `json:"sync"`   // listed in the cluster's sync record
	PostgresAddr string  `json:"postgres_addr"`
	APIURL       string  `json:"api_url"`
	// Streaming is true for a replica whose WAL receiver is streaming.
	Streaming bool `json:"streaming"`
	// Upstream is the member this replica's primary_conninfo names ("" for
	// none, "?" when the agent does not know yet). Election candidates only
	// trust positions of replicas that follow nobody.
	Upstream string `json:"upstream"`
	// LSNNum and ReceiveLSNNum are the numeric forms candidates compare.
	LSNNum uint64 `json:"lsn_num"`
	// SyncMode is the leader's view: "sync" (a standby is synchronous),
	// "async-degraded" (no standby in sync, writes continue, no automatic
	// failover), "blocked" (strict mode, writes wait), "off".
	SyncState string   `json:"sync_state,omitempty"`
	Problems  []string `json:"problems,omitempty"`
	// ReadOnly: petrel turned new transactions read-only on this member
	// (its disk is nearly full); Problems says why.
	ReadOnly bool `json:"read_only,omitempty"`
	// PendingRestart: a cluster setting changed that needs a Postgres
	// restart on this member (pg_settings.pending_restart).
	PendingRestart bool `json:"pending_restart,omitempty"`
	// ConfigRev is the etcd revision of /petrel/<c>/config this member has
	// applied (written, reloaded, and its pending restarts known).
	ConfigRev int64 `json:"config_rev,omitempty"`
	// Version is the member's petrel (version@commit).
	Version string `json:"version,omitempty"`
	// Archive is this member's WAL archiving (nil: not set up).
	Archive *ArchiveStatus `json:"archive,omitempty"`
}

// ArchiveStatus is one member's WAL archiving, in /status.
type ArchiveStatus struct {
	Role         string    `json:"role"` // off, push (the leader), keep (holds its spool until archived)
	Store        string    `json:"store,omitempty"`
	Spooled      int       `json:"spooled"` // WAL files waiting in the spool
	LastArchived string    `json:"last_archived,omitempty"`
	LastAt       time.Time `json:"last_archived_at,omitzero"`
	// Uploading is the file being uploaded and for how long: a hung
	// upload shows here (and in petrel_archive_upload_running_seconds).
	Uploading    string    `json:"uploading,omitempty"`
	UploadingFor float64   `json:"uploading_for_s,omitempty"`
	LastFailure  string    `json:"last_failure,omitempty"`
	FailureAt    time.Time `json:"last_failure_at,omitzero"`
	// Chain is the last chain check ("timeline 2: 14 segments ..., no
	// gap" or the gaps per timeline); ChainOK false when it found a gap.
	Chain   string `json:"chain,omitempty"`
	ChainOK bool   `json:"chain_ok,omitempty"`
	// RestoreFrom is the earliest point a restore can reach: the start of
	// the oldest complete base backup in the store (re-read every few
	// minutes; zero: no backup). The latest is LastAt.
	RestoreFrom time.Time `json:"restore_from,omitzero"`
	// LastBackup is the start of the newest complete base backup;
	// BackupSince, when a scheduled backup this member runs started.
	LastBackup  time.Time `json:"last_backup,omitzero"`
	BackupSince time.Time `json:"backup_running_since,omitzero"`
}

// FailsafeRequest is a leader's ask, sent while it cannot reach the
// store, that a member promise not to take over for one lease TTL
// (POST /failsafe). TTLMs is the leader's lease TTL: the promise lasts at
// least that long, whatever the member's own setting. MAC is hex
// HMAC-SHA256 (internal/peerauth, a key derived from the cluster secret)
// over the leader, the target member, the nonce, the send time and the
// TTL, so only a member of the cluster can ask, only the member asked
// accepts it, and only once.
type FailsafeRequest struct {
	Leader     string `json:"leader"`
	Target     string `json:"target"`
	Nonce      string `json:"nonce"`
	SentUnixMs int64  `json:"sent_unix_ms"`
	TTLMs      int64  `json:"ttl_ms"`
	MAC        string `json:"mac"`
}

// FailsafeReply answers a FailsafeRequest: OK is the promise; Reason says
// why not.
type FailsafeReply struct {
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
	// OtherLeader: the member knows of, or is, another leader.
	OtherLeader bool `json:"other_leader,omitempty"`
}

// Event is one entry of the cluster's history, under
// /petrel/<cluster>/events/ (store.RecordEvent keeps the newest
// store.MaxEvents). Written by whoever carried the action out: an agent
// (failover, fencing, rejoin, clone, ...) or an operator command (config,
// attach, removal). ID is the etcd revision it was written at: unique and
// increasing across the cluster, so a reader resumes after the last ID
// it saw.
type Event struct {
	ID       int64     `json:"id"`
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"`             // failover, switchover, fence, rejoin, clone, member-join, config, ...
	Node     string    `json:"node"`             // the member (or "cli"/"api") that acted
	Region   string    `json:"region,omitempty"` // the acting member's region
	Timeline uint32    `json:"timeline,omitempty"`
	LSN      string    `json:"lsn,omitempty"`
	// From and To name the old and new leader of a leader change, or the
	// member an action was about (To: a clone's source, a removed member).
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Event kinds.
const (
	EventBootstrap     = "bootstrap"
	EventFailover      = "failover"
	EventSwitchover    = "switchover"
	EventHandOver      = "hand-over" // the old leader stopped for a switchover
	EventPromote       = "promote"
	EventFence         = "fence"
	EventReleaseLeader = "release-leader"
	EventRevokeLeader  = "revoke-leader"
	EventRejoin        = "rejoin"
	EventClone         = "clone"
	EventReadOnly      = "read-only"
	EventMemberJoin    = "member-join"
	EventMemberLeave   = "member-leave"
	EventMemberRemoved = "member-removed"
	EventConfig        = "config"
	EventRestart       = "restart"
	EventSwitchoverReq = "switchover-requested"
	EventApps          = "apps"    // attach, detach, users, databases
	EventSecrets       = "secrets" // a password rotated (`petrel secrets rotate`)
	EventBackup        = "backup"  // a base backup taken (scheduled or `backup create`) or failed, a prune
)

// BackupConfig says where a cluster keeps its backups and WAL archive,
// under /petrel/<cluster>/backup (written by `petrel up` and `petrel
// backup configure`). It holds no credentials: those come from each
// node's secrets file or environment (config.LoadBackupSecrets).
type BackupConfig struct {
	Kind     string `json:"kind"`               // "file" or "s3"
	Path     string `json:"path,omitempty"`     // file: the directory (on every node that archives: a shared mount, or `petrel up`'s host)
	Endpoint string `json:"endpoint,omitempty"` // s3: URL of an S3-compatible service ("" = AWS)
	Bucket   string `json:"bucket,omitempty"`   // s3
	Prefix   string `json:"prefix,omitempty"`   // key prefix inside the bucket or directory
	Region   string `json:"region,omitempty"`   // s3
	// ArchiveTimeoutSec is Postgres' archive_timeout: a partly filled
	// segment is switched and archived after this many seconds (0: 60).
	ArchiveTimeoutSec int `json:"archive_timeout_s,omitempty"`
	// RetentionWindowSec and RetentionMin are `petrel backup prune`'s
	// defaults: keep what restores any point of the last this many
	// seconds, and at least this many backups (0: 7 days, 2).
	RetentionWindowSec int64 `json:"retention_window_s,omitempty"`
	RetentionMin       int   `json:"retention_min,omitempty"`
	// ScheduleSec: the archiving member (the leader) takes a base backup
	// this often, from the freshest streaming replica (0: only `petrel
	// backup create`). Each scheduled backup that completes is followed
	// by a prune with the retention above (or its defaults).
	ScheduleSec int64 `json:"schedule_s,omitempty"`
}
