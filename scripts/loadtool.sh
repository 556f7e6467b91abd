#!/bin/sh
# Installs wrk, the HTTP load tool `splitter-bench envoy` drives Envoy with,
# from Debian's packages. Idempotent: does nothing when wrk is on PATH.
set -eu
if command -v wrk >/dev/null 2>&1; then
	command -v wrk
	exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
fi
# The package lists may be missing or stale on a fresh machine.
$SUDO apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
command -v wrk
