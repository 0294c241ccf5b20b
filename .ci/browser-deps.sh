#!/usr/bin/env bash
# Install Debian's Chromium for the browser test (tests/app/test_browser.py) unless it is there.
# Idempotent; exits non-zero with a message when the install fails or leaves no browser.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "chromium already installed: $("$CHROMIUM" --version 2>/dev/null | tail -n 1)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi

echo "installing chromium with apt-get (about a minute)"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y chromium

if [ ! -x "$CHROMIUM" ]; then
    echo "error: apt-get finished but $CHROMIUM is missing" >&2
    exit 1
fi
echo "installed: $("$CHROMIUM" --version 2>/dev/null | tail -n 1)"
