#!/usr/bin/env bash
# Install Debian's prometheus for the integration tests. The package also enables a system
# service on machines with systemd; the tests start their own instance on a free loopback port.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then exit 0; fi
echo "installing Debian's prometheus with apt-get (one time, under a minute)" >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# Debian's postinst may start a daemon on :9090 (no systemd here usually); the tests never use it.
command -v prometheus
