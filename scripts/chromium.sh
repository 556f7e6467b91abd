#!/usr/bin/env bash
# Installs Debian's chromium (and a font for legible screenshots) for the
# operator console's browser tests, and prints the browser's path on stdout.
# Idempotent: does nothing when $CHROMIUM_BIN or /usr/bin/chromium already
# runs. Installing needs root (apt-get); progress and errors go to stderr, so
# `$(scripts/chromium.sh)` is just the path.
set -euo pipefail

works() { [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }

if [ -n "${CHROMIUM_BIN:-}" ]; then
  if works "$CHROMIUM_BIN"; then
    echo "$CHROMIUM_BIN"
    exit 0
  fi
  echo "chromium.sh: CHROMIUM_BIN=$CHROMIUM_BIN does not run" >&2
  exit 1
fi

bin=/usr/bin/chromium
if ! works "$bin"; then
  if [ "$(id -u)" != 0 ]; then
    echo "chromium.sh: $bin is missing and installing it needs root: sudo apt-get install chromium fonts-dejavu-core (or set CHROMIUM_BIN)" >&2
    exit 1
  fi
  echo "chromium.sh: installing Debian's chromium" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || {
    echo "chromium.sh: apt-get update failed (are Debian's package servers reachable?)" >&2
    exit 1
  }
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2 || {
    echo "chromium.sh: apt-get install chromium failed" >&2
    exit 1
  }
  if ! works "$bin"; then
    echo "chromium.sh: $bin does not run after the install:" >&2
    "$bin" --version >&2 || true
    exit 1
  fi
fi
echo "$bin"
