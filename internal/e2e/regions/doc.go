// Package regions holds petrel's multi-region end-to-end tests: real
// Postgres and etcd, members in regions linked by netsim links (and one
// test with each member in its own network namespace), checking that only
// the primary region leads, that regional replicas survive partitions,
// region loss and failovers, and that cascading follows the leader.
package regions
