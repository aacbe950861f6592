#!/bin/sh
# After removing: systemd forgets the units. Data (/var/lib/petrel) and
# configuration stay (dpkg --purge removes the configuration files).
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
