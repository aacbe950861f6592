package pg

import (
	"fmt"
	"net"
	"strings"
)

// Access says who may reach Postgres over TCP; pg_hba.conf is rendered
// from it (renderHBA). The unix socket (trust) is the agent's own.
type Access struct {
	// LoopbackPlaintext accepts connections without TLS from 127.0.0.0/8
	// and ::1: the local world (`petrel up`) and tests, whose clients all
	// run on this host. Off by default.
	LoopbackPlaintext bool
	// PlaintextNetworks accept connections without TLS (a trusted private
	// network, e.g. WireGuard). None by default. Replication always needs
	// TLS.
	PlaintextNetworks []string
	// AdminNetworks may log in as the superuser over TCP; default
	// loopback. Members may too (pg_rewind connects as the superuser).
	AdminNetworks []string
	// ReplicationNetworks may open replication connections (as the
	// replication role only, with TLS) besides the members' addresses.
	ReplicationNetworks []string
}

// Loopback are the loopback networks.
var Loopback = []string{"127.0.0.0/8", "::1/128"}

// peerCIDR turns a member's host into a pg_hba address: an IP becomes a
// single-address network; a name stays a name (Postgres resolves it, and
// checks the reverse lookup).
func peerCIDR(h string) string {
	h = strings.Trim(h, "[]")
	if ip := net.ParseIP(h); ip != nil {
		if ip.To4() != nil {
			return ip.String() + "/32"
		}
		return ip.String() + "/128"
	}
	return h
}

// renderHBA is pg_hba.conf. Postgres takes the first line whose type,
// database, user and address match, so each role's lines end with a
// reject: the superuser only from admin networks and members; replication
// only for the replication role, from members and replication networks,
// always over TLS; everyone else from anywhere over TLS, and without TLS
// only from the plaintext networks. Without TLS on the server (no
// certificate yet: only a bare pg.Server, never an agent's) "hostssl"
// could never match, so the same lines are written as "host".
func renderHBA(a Access, peers []string, tls bool) string {
	ssl := "hostssl"
	if !tls {
		ssl = "host"
	}
	admin := a.AdminNetworks
	if len(admin) == 0 {
		admin = Loopback
	}
	plain := append([]string(nil), a.PlaintextNetworks...)
	if a.LoopbackPlaintext {
		plain = append(plain, Loopback...)
	}
	isPlain := map[string]bool{}
	for _, n := range plain {
		isPlain[n] = true
	}
	var b strings.Builder
	line := func(typ, db, user, addr, method string) {
		fmt.Fprintf(&b, "%-8s %-12s %-11s %-40s %s\n", typ, db, user, addr, method)
	}
	b.WriteString("# Written by petrel from its access settings and the members' addresses; do not edit.\n")
	b.WriteString("# TYPE  DATABASE     USER        ADDRESS                                  METHOD\n")
	line("local", "all", "all", "", "trust")
	b.WriteString("# Replication: the replication role, from members and replication networks, over TLS.\n")
	for _, p := range peers {
		line(ssl, "replication", "replicator", peerCIDR(p), "scram-sha-256")
	}
	for _, n := range a.ReplicationNetworks {
		line(ssl, "replication", "replicator", n, "scram-sha-256")
	}
	line("host", "replication", "all", "0.0.0.0/0", "reject")
	line("host", "replication", "all", "::/0", "reject")
	b.WriteString("# The superuser: from admin networks and members (pg_rewind), over TLS unless the network is a plaintext one.\n")
	for _, n := range admin {
		if isPlain[n] {
			line("host", "all", "postgres", n, "scram-sha-256")
		} else {
			line(ssl, "all", "postgres", n, "scram-sha-256")
		}
	}
	for _, p := range peers {
		line(ssl, "all", "postgres", peerCIDR(p), "scram-sha-256")
	}
	line("host", "all", "postgres", "0.0.0.0/0", "reject")
	line("host", "all", "postgres", "::/0", "reject")
	b.WriteString("# Everyone else: over TLS from anywhere, without it only from plaintext networks.\n")
	line(ssl, "all", "all", "0.0.0.0/0", "scram-sha-256")
	line(ssl, "all", "all", "::/0", "scram-sha-256")
	for _, n := range plain {
		line("host", "all", "all", n, "scram-sha-256")
	}
	return b.String()
}

// CheckNetworks checks that every entry is a CIDR network.
func CheckNetworks(what string, nets []string) error {
	for _, n := range nets {
		if _, _, err := net.ParseCIDR(n); err != nil {
			return fmt.Errorf("%s: %q is not a network (like 10.0.0.0/8): %w", what, n, err)
		}
	}
	return nil
}
