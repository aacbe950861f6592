// Package sim is a deterministic simulation of whole petrel clusters, in
// the spirit of etcd-io/raft's rafttest: N nodes, each running the real
// engine.Decide behind a copy of internal/agent's observe/exec glue, over
// a simulated store (leases, revisions, compare-and-swap transactions as
// internal/store makes them), simulated Postgres servers (timelines, WAL
// positions, streaming, synchronous acknowledgements), a network that can
// be partitioned, and a virtual clock advanced in 100 ms ticks by a
// scheduler whose only source of randomness is a seed.
//
// Two safety invariants are checked at every instant (Cluster.check):
//
//  1. never two members whose Postgres is writable and could acknowledge
//     a commit;
//  2. never a Postgres that becomes writable without every commit a client
//     was told is durable.
//
// The tests drive it two ways: scenario files (testdata/*.txt, datadriven,
// see scenario_test.go) that read like the fault-injection suite's
// stories, and a randomized run over thousands of seeds with random fault
// schedules (property_test.go). Nothing here uses the wall clock,
// goroutines or global randomness: a seed replays exactly.
//
// What is simplified: actions take no time; store requests either
// succeed at once or fail at once (no lost replies); received, flushed
// and replayed WAL positions are one number; a stopped server's control
// file is its end of WAL.
package sim
