#!/usr/bin/env bash
# Installs what petrel needs to build, test and run, idempotently:
#   - Go (checked, not installed: expected in /usr/local/go/bin)
#   - PostgreSQL server binaries (initdb, pg_ctl, pg_rewind, pg_basebackup),
#     from Debian's packages when missing (needs root)
#   - the `postgres` OS user (a root agent runs Postgres as that user)
#   - python3 and psql (the edge tests' non-Go app, internal/e2e/testdata/pyapp.py)
#   - the Go modules (go mod download)
# Debian's packages may start a system cluster on 5432; it is stopped and
# set to manual start (set PETREL_KEEP_SYSTEM_PG=1 to leave it alone).
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

say() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# --- Go ---------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
	die "Go is not installed: install Go 1.26+ from https://go.dev/dl/ into /usr/local/go (so /usr/local/go/bin/go exists)"
fi

# --- PostgreSQL ----------------------------------------------------------------
pg_tools=(initdb pg_ctl pg_rewind pg_basebackup pg_controldata postgres)

pg_missing() {
	local bindir
	bindir="$(pg_config --bindir 2>/dev/null || true)"
	if [ -z "$bindir" ]; then
		echo "pg_config"
		return
	fi
	local t missing=()
	for t in "${pg_tools[@]}"; do
		[ -x "$bindir/$t" ] || missing+=("$bindir/$t")
	done
	echo "${missing[*]:-}"
}

missing="$(pg_missing)"
if [ -n "$missing" ]; then
	if ! is_root; then
		die "PostgreSQL server binaries missing ($missing). Install them as root, e.g.:
    sudo apt-get update && sudo apt-get install -y postgresql postgresql-contrib haproxy etcd-server iproute2
or run this script as root."
	fi
	command -v apt-get >/dev/null 2>&1 || die "PostgreSQL missing ($missing) and no apt-get: install the PostgreSQL server (initdb, pg_ctl, pg_rewind, pg_basebackup, pg_config) with your package manager"
	say "installing PostgreSQL from Debian's packages"
	# Ask postgresql-common not to create (and start) a default cluster.
	if [ ! -e /etc/postgresql-common/createcluster.d/petrel.conf ]; then
		mkdir -p /etc/postgresql-common/createcluster.d
		echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/petrel.conf
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y postgresql postgresql-contrib haproxy etcd-server iproute2
	hash -r
	missing="$(pg_missing)"
	[ -z "$missing" ] || die "still missing after apt-get install: $missing"
fi
say "PostgreSQL binaries: $(pg_config --bindir) ($(pg_config --version))"

# --- HAProxy (bench/proxy compares the leader proxy with it) -------------------
if ! command -v haproxy >/dev/null 2>&1; then
	if is_root && command -v apt-get >/dev/null 2>&1; then
		say "installing HAProxy from Debian's packages (for bench/proxy)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy || say "note: could not install haproxy; bench/proxy needs it"
	else
		say "note: haproxy not installed (only bench/proxy needs it): apt-get install haproxy"
	fi
fi

# --- etcd and iproute2 (the multi-host test runs an external etcd in network namespaces) ---
if ! command -v etcd >/dev/null 2>&1 || ! command -v ip >/dev/null 2>&1; then
	if is_root && command -v apt-get >/dev/null 2>&1; then
		say "installing etcd-server and iproute2 from Debian's packages (for the network-namespace test)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y etcd-server iproute2 || say "note: could not install etcd-server/iproute2; internal/e2e/regions' TestSeparateHosts is skipped without them"
		# petrel runs its own etcd; do not leave Debian's service running.
		if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
			systemctl disable --now etcd >/dev/null 2>&1 || true
		fi
	else
		say "note: etcd or ip missing (only the network-namespace test needs them): apt-get install etcd-server iproute2"
	fi
fi

# --- python3 and psql (internal/e2e/testdata/pyapp.py, a non-Go app behind the edge) ---
if ! command -v python3 >/dev/null 2>&1 || ! command -v psql >/dev/null 2>&1; then
	if is_root && command -v apt-get >/dev/null 2>&1; then
		say "installing python3 and postgresql-client from Debian's packages (for the edge tests' Python app)"
		DEBIAN_FRONTEND=noninteractive apt-get install -y python3 postgresql-client || say "note: could not install python3/postgresql-client; the Python app tests are skipped without them"
	else
		say "note: python3 or psql missing (only the Python app tests need them): apt-get install python3 postgresql-client"
	fi
fi

# --- the distribution's own cluster ---------------------------------------------
if is_root && [ "${PETREL_KEEP_SYSTEM_PG:-0}" != 1 ] && command -v pg_lsclusters >/dev/null 2>&1; then
	# columns: Ver Cluster Port Status Owner Data-directory Log-file
	while read -r ver name port status _; do
		[ -n "${ver:-}" ] || continue
		if [ "$status" = online ] || [[ "$status" == online,* ]]; then
			say "stopping the system PostgreSQL cluster $ver/$name (port $port)"
			pg_ctlcluster "$ver" "$name" stop || true
		fi
		conf="/etc/postgresql/$ver/$name/start.conf"
		if [ -f "$conf" ] && ! grep -qx manual "$conf"; then
			say "setting $ver/$name to manual start ($conf)"
			sed -i 's/^\(auto\|disabled\)$/manual/' "$conf" || true
		fi
	done < <(pg_lsclusters -h 2>/dev/null || true)
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl disable --now postgresql >/dev/null 2>&1 || true
	elif command -v service >/dev/null 2>&1; then
		service postgresql stop >/dev/null 2>&1 || true
	fi
fi

# --- the postgres OS user --------------------------------------------------------
if ! id postgres >/dev/null 2>&1; then
	if is_root; then
		say "creating the postgres OS user"
		getent group postgres >/dev/null 2>&1 || groupadd --system postgres
		useradd --system --gid postgres --home-dir /var/lib/postgresql --create-home --shell /bin/bash postgres
	else
		say "note: no postgres OS user (only needed when petrel runs as root)"
	fi
fi

# --- Go modules ------------------------------------------------------------------------
say "go mod download ($(go version))"
go mod download
say "ok"
