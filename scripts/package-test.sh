#!/usr/bin/env bash
# package-test.sh DEB: installs petrel's Debian package on a clean Debian
# root (a debootstrap chroot made from Debian's packages), checks what it
# installed (binaries, units, a 0600 secrets file, `petrel version`), then
# does what a host's operator does after installing: fills in
# /etc/petrel.toml and /etc/petrel/secrets.env and starts the node the way
# petrel-node.service does (its ExecStart, with the secrets file as its
# environment), against an etcd on loopback (the host's Debian etcd), until
# `petrel status --config /etc/petrel.toml` inside the root shows it
# leading and a TLS connection to its Postgres answers. Needs root.
#
# PETREL_DEBIAN_MIRROR (default: the host's first Debian source) and
# PETREL_DEBIAN_SUITE (default: bookworm) choose the root's Debian.
set -euo pipefail

say() { printf 'package-test: %s\n' "$*"; }
die() { printf 'package-test: FAIL: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 petrel_VERSION_amd64.deb"
deb="$(realpath "$1")"
[ -f "$deb" ] || die "no package $1 (make package builds it)"
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mounts)"
command -v etcd >/dev/null 2>&1 || die "no etcd (Debian's etcd-server; scripts/install-deps.sh installs it)"
if ! command -v debootstrap >/dev/null 2>&1; then
	say "installing debootstrap from Debian's packages"
	DEBIAN_FRONTEND=noninteractive apt-get install -y debootstrap >/dev/null
fi

suite="${PETREL_DEBIAN_SUITE:-bookworm}"
mirror="${PETREL_DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
	mirror="$(grep -hs '^URIs:' /etc/apt/sources.list.d/debian.sources | awk '{print $2; exit}')"
	[ -n "$mirror" ] || mirror="$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2; exit}')"
	[ -n "$mirror" ] || mirror="http://deb.debian.org/debian"
fi

work="$(mktemp -d /var/tmp/petrel-package-test.XXXXXX)"
root="$work/root"
etcd_pid=""
node_pid=""
cleanup() {
	set +e
	[ -n "$node_pid" ] && kill -TERM "$node_pid" 2>/dev/null && sleep 3
	# Every process still running inside the root is one this test started.
	for p in /proc/[0-9]*; do
		if [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ]; then
			kill -KILL "${p#/proc/}" 2>/dev/null
		fi
	done
	[ -n "$etcd_pid" ] && kill -KILL "$etcd_pid" 2>/dev/null
	for m in "$root/dev/pts" "$root/dev" "$root/proc"; do
		mountpoint -q "$m" && umount -l "$m"
	done
	if [ "${PETREL_KEEP:-0}" = 1 ]; then
		say "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT

say "debootstrap $suite from $mirror into $root"
if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
	tail -20 "$work/debootstrap.log" >&2
	die "debootstrap could not build a $suite root from $mirror (log above; set PETREL_DEBIAN_MIRROR to a reachable Debian mirror)"
fi
# No service starts inside the root (Debian's postgresql would start a
# cluster on 5432), and no default cluster is created.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
mkdir -p "$root/etc/postgresql-common/createcluster.d"
echo "create_main_cluster = false" >"$root/etc/postgresql-common/createcluster.d/petrel.conf"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"; }

say "apt-get install $(basename "$deb") (and its dependencies from $mirror)"
cp "$deb" "$root/tmp/petrel.deb"
in_root apt-get update >"$work/apt.log" 2>&1 || { tail -20 "$work/apt.log" >&2; die "apt-get update in the root"; }
if ! in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends /tmp/petrel.deb >>"$work/apt.log" 2>&1; then
	tail -30 "$work/apt.log" >&2
	die "installing the package"
fi

say "checking what the package installed"
for f in /usr/bin/petrel /usr/bin/petrel-node /usr/bin/petrel-watchdog; do
	[ -x "$root$f" ] || die "$f missing or not executable"
done
for u in petrel-node petrel-proxy petrel-edge; do
	unit="$root/lib/systemd/system/$u.service"
	[ -f "$unit" ] || die "$u.service missing"
	grep -q '^Restart=on-failure' "$unit" || die "$u.service: no Restart=on-failure"
	grep -q '^User=' "$unit" || die "$u.service: no User="
	grep -q '^LimitNOFILE=' "$unit" || die "$u.service: no LimitNOFILE="
done
[ "$(stat -c '%a %U' "$root/etc/petrel/secrets.env")" = "600 root" ] || die "/etc/petrel/secrets.env is $(stat -c '%a %U' "$root/etc/petrel/secrets.env"), want 600 root"
[ -f "$root/etc/petrel.toml" ] || die "/etc/petrel.toml missing"
in_root getent passwd petrel >/dev/null || die "no petrel system user"
ver="$(in_root petrel version)" || die "petrel version failed"
say "$ver"
case "$ver" in *"commit unknown"*) die "petrel version names no commit: $ver" ;; esac

port() { shuf -i 20000-32000 -n 1; }
cport="$(port)" pport="$(port)" pgport="$(port)" apiport="$(port)" proxyport="$(port)"
say "etcd on 127.0.0.1:$cport (the host's)"
etcd --name pkgtest --data-dir "$work/etcd" \
	--listen-client-urls "http://127.0.0.1:$cport" --advertise-client-urls "http://127.0.0.1:$cport" \
	--listen-peer-urls "http://127.0.0.1:$pport" --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
	--initial-cluster "pkgtest=http://127.0.0.1:$pport" >"$work/etcd.log" 2>&1 &
etcd_pid=$!
disown "$etcd_pid"

# The operator's edits: this host's id, addresses and etcd (plain http on
# loopback here, so the TLS and etcd-user lines go), and the passwords.
toml="$root/etc/petrel.toml"
sed -i \
	-e 's|^id *=.*|id             = "pkg1"|' \
	-e 's|^listen_host *=.*|listen_host    = "127.0.0.1"|' \
	-e 's|^advertise_host *=.*|advertise_host = "127.0.0.1"|' \
	-e "s|^pg_port *=.*|pg_port        = $pgport|" \
	-e "s|^api_port *=.*|api_port       = $apiport|" \
	-e "s|^proxy_port *=.*|proxy_port     = $proxyport|" \
	-e "s|^etcd *=.*|etcd           = [\"http://127.0.0.1:$cport\"]|" \
	-e 's/^etcd_ca_file/# etcd_ca_file/' -e 's/^etcd_cert_file/# etcd_cert_file/' \
	-e 's/^etcd_key_file/# etcd_key_file/' -e 's/^etcd_username/# etcd_username/' \
	"$toml"
su_pw="$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
cat >"$root/etc/petrel/secrets.env" <<EOF
SU_PASSWORD=$su_pw
REPL_PASSWORD=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
OPERATOR_PASSWORD=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
EOF

exec_start="$(sed -n 's/^ExecStart=//p' "$root/lib/systemd/system/petrel-node.service")"
[ -n "$exec_start" ] || die "petrel-node.service has no ExecStart"
say "starting the node as petrel-node.service does: $exec_start (secrets.env as its environment)"
# shellcheck disable=SC2016 # expanded inside the root
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
	/bin/sh -c 'set -a; . /etc/petrel/secrets.env; set +a; exec '"$exec_start" >"$work/node.log" 2>&1 &
node_pid=$!
disown "$node_pid"

# The walk-through's step 4: the first node logs the cluster CA's
# fingerprint; every host's /etc/petrel.toml pins it (the CLI refuses an
# unpinned CA read from etcd).
fp=""
for _ in $(seq 1 60); do
	fp="$(grep -o 'msg="created the cluster CA".*ca_fingerprint=[0-9a-f]*' "$work/node.log" | grep -o '[0-9a-f]*$' | head -1 || true)"
	[ -n "$fp" ] && break
	kill -0 "$node_pid" 2>/dev/null || break
	sleep 1
done
if [ -z "$fp" ]; then
	tail -30 "$work/node.log" >&2
	die "the node logged no ca_fingerprint"
fi
sed -i "s|^# *ca_fingerprint *=.*|ca_fingerprint = \"$fp\"|" "$toml"
grep -q "^ca_fingerprint = \"$fp\"" "$toml" || die "could not set ca_fingerprint in /etc/petrel.toml"
say "pinned the cluster CA in /etc/petrel.toml: ca_fingerprint = \"$fp\""

say "waiting for the node to lead (petrel status --config /etc/petrel.toml)"
ok=0
for _ in $(seq 1 120); do
	if ! kill -0 "$node_pid" 2>/dev/null; then
		tail -30 "$work/node.log" >&2
		die "the node exited"
	fi
	if in_root petrel status --config /etc/petrel.toml --json >"$work/status.out" 2>"$work/status.err" &&
		grep -q '"role": *"primary"' "$work/status.out"; then
		ok=1
		break
	fi
	sleep 1
done
if [ "$ok" != 1 ]; then
	tail -30 "$work/node.log" >&2
	echo "package-test: the last petrel status --config:" >&2
	cat "$work/status.out" "$work/status.err" >&2
	die "the node did not become primary within 120 s"
fi
in_root petrel status --config /etc/petrel.toml
out="$(in_root env PGPASSWORD="$su_pw" psql "host=127.0.0.1 port=$pgport user=postgres dbname=postgres sslmode=require connect_timeout=5" -Atc "SELECT 'tls=' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")" ||
	die "psql to the node's Postgres failed"
[ "$out" = "tls=true" ] || die "the connection to the node's Postgres is not TLS: $out"
say "ok: installed on a clean $suite root, the node leads and serves TLS"
