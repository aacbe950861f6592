#!/bin/sh
# After installing: the petrel system user (petrel proxy and petrel edge run
# as it; the node agent runs as root and Postgres as postgres), the
# secrets file kept at 0600 root, and systemd told about the units. No
# service is enabled or started: /etc/petrel.toml must be filled in first.
set -e
if ! getent passwd petrel >/dev/null; then
	adduser --system --group --home /var/lib/petrel --no-create-home --quiet petrel
fi
chown root:root /etc/petrel/secrets.env
chmod 0600 /etc/petrel/secrets.env
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
echo "petrel: edit /etc/petrel.toml and /etc/petrel/secrets.env, then: systemctl enable --now petrel-node"
