#!/usr/bin/env bash
# Builds Envoy Gateway's envoy-gateway binary (tools/gateway: the module
# github.com/envoyproxy/gateway at the pinned release) into
# .venv/bin/envoy-gateway and prints the binary's absolute path on stdout.
# Idempotent: does nothing when .venv/bin/envoy-gateway already reports the
# version. Envoy Gateway has its own module, so its Kubernetes dependencies
# never enter splitter's go.mod; the module proxy is the only thing it
# needs. A cold build takes minutes (about 3.5 min of 2 cores) and the
# binary is about 170 MB (symbols stripped). Progress and errors go to
# stderr, so `$(scripts/gateway.sh)` is just the path.
set -euo pipefail

want=v1.9.1
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.venv/bin/envoy-gateway"
go=${GO:-go}
pkg=github.com/envoyproxy/gateway

have_version() {
  # Captured first: grep -q stops reading at the first line, and the
  # binary writing the rest into a closed pipe would fail the pipeline.
  local out
  [ -x "$bin" ] && out=$("$bin" version 2>/dev/null) && grep -q "^ENVOY_GATEWAY_VERSION: $want\$" <<<"$out"
}

if ! have_version; then
  mkdir -p "$root/.venv/bin"
  echo "gateway.sh: building envoy-gateway $want from tools/gateway into $bin (a few minutes the first time)" >&2
  # The release's own build stamps the version with -X; so does this one,
  # which is what have_version reads back. Written to a temporary name
  # first: an interrupted build leaves no half binary at $bin.
  (cd "$root/tools/gateway" && CGO_ENABLED=0 "$go" build -trimpath \
    -ldflags "-s -w -X $pkg/internal/cmd/version.envoyGatewayVersion=$want" \
    -o "$bin.tmp" "$pkg/cmd/envoy-gateway") >&2 && mv -f "$bin.tmp" "$bin" || {
    rm -f "$bin.tmp"
    echo "gateway.sh: building envoy-gateway failed (is the Go module proxy reachable?)" >&2
    exit 1
  }
  if ! have_version; then
    echo "gateway.sh: $bin does not report version $want:" >&2
    "$bin" version >&2 || true
    exit 1
  fi
fi
echo "$bin"
