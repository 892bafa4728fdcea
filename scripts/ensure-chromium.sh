#!/usr/bin/env bash
# Make sure Debian's chromium is installed (the browser tests drive it through Playwright).
# Idempotent and quiet: does nothing when /usr/bin/chromium is already there.
set -euo pipefail

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: $CHROMIUM is missing and apt-get is not available;" \
         "install chromium yourself (the browser tests need it)" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "ensure-chromium: $CHROMIUM is missing and this is not root and there is no sudo;" \
         "run as root: apt-get install chromium" >&2
    exit 1
fi

echo "ensure-chromium: installing chromium with apt-get (once)" >&2
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

if [ ! -x "$CHROMIUM" ]; then
    echo "ensure-chromium: apt-get finished but $CHROMIUM is still missing" >&2
    exit 1
fi
