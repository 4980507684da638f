#!/usr/bin/env bash
# Installs the system packages Tribune's scripts and tests use (Debian).
# Usage: scripts/install-deps.sh [run|test]
set -euo pipefail
want=(ffmpeg)                      # a source to publish with, and the test listener/decoder
if [ "${1:-run}" = test ]; then
  want+=(ca-certificates)
fi
missing=()
for p in "${want[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
