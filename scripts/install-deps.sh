#!/usr/bin/env bash
# Installs what petrel needs to build, test and run, idempotently:
#   - Go (checked, not installed: expected in /usr/local/go/bin)
#   - PostgreSQL server binaries (initdb, pg_ctl, pg_rewind, pg_basebackup),
#     from Debian's packages when missing (needs root)
#   - the `postgres` OS user (a root agent runs Postgres as that user)
#   - etcd-server (the separate-hosts test and the etcd-cluster test run
#     Debian's etcd; `petrel up` embeds its own), iproute2 (network
#     namespaces), haproxy (bench/proxy's comparison)
#   - python3 and psql (the edge tests' non-Go app, internal/e2e/testdata/pyapp.py)
#   - chromium (the dashboard's headless-browser test, internal/e2e TestDashboard)
#   - the Go modules (go mod download)
# Each package is installed on its own whenever its command is missing,
# whatever else is present. Debian's packages may start a system cluster on
# 5432 and etcd and haproxy services: they are stopped and disabled (set
# PETREL_KEEP_SYSTEM_PG=1 to leave the PostgreSQL cluster alone).
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

# --- Debian packages, each installed on its own when its command is missing ---
apt_updated=0
# apt_install PKG... installs from Debian's packages (root with apt-get), or
# fails naming the packages and the command to run.
apt_install() {
	if ! is_root; then
		die "missing: $*. Install as root, e.g.:
    sudo apt-get update && sudo apt-get install -y $*
or run this script as root."
	fi
	command -v apt-get >/dev/null 2>&1 || die "missing: $* and no apt-get: install them with your package manager"
	export DEBIAN_FRONTEND=noninteractive
	if [ "$apt_updated" = 0 ]; then
		say "apt-get update"
		apt-get update
		apt_updated=1
	fi
	say "installing $* from Debian's packages"
	apt-get install -y "$@"
	hash -r
}

# disable_service NAME: petrel runs its own etcd, Postgres and proxies; a
# package's service left running would hold ports and run for nothing.
disable_service() {
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl disable --now "$1" >/dev/null 2>&1 || true
	elif command -v service >/dev/null 2>&1; then
		service "$1" stop >/dev/null 2>&1 || true
	fi
	if command -v update-rc.d >/dev/null 2>&1; then
		update-rc.d "$1" disable >/dev/null 2>&1 || true
	fi
}

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
	say "PostgreSQL server binaries missing ($missing)"
	# Ask postgresql-common not to create (and start) a default cluster.
	if is_root && [ ! -e /etc/postgresql-common/createcluster.d/petrel.conf ]; then
		mkdir -p /etc/postgresql-common/createcluster.d
		echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/petrel.conf
	fi
	apt_install postgresql postgresql-contrib
	missing="$(pg_missing)"
	[ -z "$missing" ] || die "still missing after apt-get install: $missing"
fi
say "PostgreSQL binaries: $(pg_config --bindir) ($(pg_config --version))"

# --- etcd (the separate-hosts test and the etcd-cluster test run Debian's etcd) ---
if ! command -v etcd >/dev/null 2>&1; then
	apt_install etcd-server
	disable_service etcd
fi
command -v etcd >/dev/null 2>&1 || die "etcd still missing after installing etcd-server"

# --- iproute2 (network namespaces: the separate-hosts test) ---------------------
if ! command -v ip >/dev/null 2>&1; then
	apt_install iproute2
fi

# --- HAProxy (bench/proxy compares the leader proxy with it) -------------------
# Only a benchmark needs it, so without root it is a note, not a failure.
if ! command -v haproxy >/dev/null 2>&1; then
	if is_root; then
		apt_install haproxy
		disable_service haproxy
	else
		say "note: haproxy not installed (only bench/proxy needs it): sudo apt-get install haproxy"
	fi
fi

# --- python3 and psql (internal/e2e/testdata/pyapp.py, a non-Go app behind the edge) ---
if ! command -v python3 >/dev/null 2>&1; then
	apt_install python3
fi
if ! command -v psql >/dev/null 2>&1; then
	apt_install postgresql-client
fi

# --- chromium (the dashboard test drives it headless over the DevTools protocol) ---
if ! command -v chromium >/dev/null 2>&1; then
	apt_install chromium
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
	disable_service postgresql
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
say "downloading Go modules (go mod download, $(go version); the first run fetches them all, about a minute)"
go mod download
say "ok"
