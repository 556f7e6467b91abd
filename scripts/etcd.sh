#!/usr/bin/env bash
# Builds the etcd server (tools/etcd: go.etcd.io/etcd/server/v3 at the
# release the product's client uses) into .venv/bin/etcd and prints the
# binary's absolute path on stdout. Idempotent: does nothing when
# .venv/bin/etcd already reports the version. The server has its own
# module, so its dependencies never enter splitter's go.mod; the module
# proxy is the only thing it needs. Progress and errors go to stderr, so
# `$(scripts/etcd.sh)` is just the path.
set -euo pipefail

want=3.7.3
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.venv/bin/etcd"
go=${GO:-go}

have_version() {
  # Captured first: grep -q stops reading at the first line, and etcd
  # writing the rest into a closed pipe would fail the pipeline.
  local out
  [ -x "$bin" ] && out=$("$bin" --version 2>/dev/null) && grep -q "^etcd Version: $want\$" <<<"$out"
}

if ! have_version; then
  mkdir -p "$root/.venv/bin"
  echo "etcd.sh: building etcd $want from tools/etcd into $bin" >&2
  (cd "$root/tools/etcd" && CGO_ENABLED=0 "$go" build -trimpath -o "$bin" .) >&2 || {
    echo "etcd.sh: building etcd failed (is the Go module proxy reachable?)" >&2
    exit 1
  }
  if ! have_version; then
    echo "etcd.sh: $bin does not report version $want:" >&2
    "$bin" --version >&2 || true
    exit 1
  fi
fi
echo "$bin"
