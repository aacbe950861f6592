#!/bin/sh
# Before removing (not upgrading: the running agent keeps running until
# its unit is restarted, one host at a time, see the README's rolling
# upgrade): stop and disable the services; the node hands leadership over.
set -e
case "$1" in
remove | deconfigure)
	if [ -d /run/systemd/system ]; then
		systemctl stop petrel-edge petrel-proxy petrel-node >/dev/null 2>&1 || true
		systemctl disable petrel-edge petrel-proxy petrel-node >/dev/null 2>&1 || true
	fi
	;;
esac
