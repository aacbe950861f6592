package store

// Keys spells the etcd key paths of one cluster (see the package doc for
// who writes which). Code outside this package that must read the store
// directly (the CLI, status, the proxy's watch) takes its paths from here,
// so the schema has one owner.
type Keys struct{ prefix string }

// KeysFor returns the key paths of cluster.
func KeysFor(cluster string) Keys { return Keys{prefix: "/petrel/" + cluster + "/"} }

// Prefix is the cluster's whole key space.
func (k Keys) Prefix() string { return k.prefix }

// Leader is the leader key.
func (k Keys) Leader() string { return k.prefix + "leader" }

// Info is the cluster info key.
func (k Keys) Info() string { return k.prefix + "info" }

// Switchover is the planned switchover record.
func (k Keys) Switchover() string { return k.prefix + "switchover" }

// Cascade is the list of cascading regions.
func (k Keys) Cascade() string { return k.prefix + "cascade" }

// Members is the prefix of the members' records.
func (k Keys) Members() string { return k.prefix + "members/" }

// Member is one member's record.
func (k Keys) Member(id string) string { return k.prefix + "members/" + id }

// Events is the prefix of the cluster's event history (see RecordEvent).
// The store's cache does not hold it.
func (k Keys) Events() string { return k.prefix + "events/" }

// Nodes is the prefix of the registrations.
func (k Keys) Nodes() string { return k.prefix + "nodes/" }

// Edges is the prefix of the edges' records.
func (k Keys) Edges() string { return k.prefix + "edges/" }

// Config is the cluster-wide Postgres settings key.
func (k Keys) Config() string { return k.prefix + KeyConfig }

// Backup is where the cluster keeps its backups (model.BackupConfig).
func (k Keys) Backup() string { return k.prefix + "backup" }
