#!/usr/bin/env bash
# Installs what `attendance-bench … --compare redis` needs: redis-server from the distribution's
# package (Debian/Ubuntu), and only if it is not installed yet. The bench starts its own
# redis-server on a free loopback port in a temporary directory; it never uses a Redis that is
# already running on the machine (e.g. the package's own service on 6379).
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "redis-server is installed: $(redis-server --version)"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
$sudo apt-get update
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends redis-server
echo "installed: $(redis-server --version)"
