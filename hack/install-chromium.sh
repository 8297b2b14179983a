#!/usr/bin/env bash
# Install Debian's Chromium and its chromedriver for the dashboard's browser test
# (tests/integration/test_dashboard.py drives it headless through chromedriver's WebDriver API).
set -euo pipefail
if command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
  exit 0
fi
echo "installing Debian's chromium and chromium-driver with apt-get (one time, about a minute)" >&2
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
command -v chromedriver
