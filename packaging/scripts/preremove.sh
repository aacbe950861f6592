#!/bin/sh
# Before removing: stop the services (the node hands leadership over).
set -e
if [ -d /run/systemd/system ]; then
	systemctl stop petrel-edge petrel-proxy petrel-node >/dev/null 2>&1 || true
	systemctl disable petrel-edge petrel-proxy petrel-node >/dev/null 2>&1 || true
fi
