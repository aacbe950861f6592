// Package e2e holds end-to-end tests of petrel: real `petrel node`
// processes, real PostgreSQL, real etcd, on loopback.
package e2e
