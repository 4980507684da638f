#!/usr/bin/env bash
# Installs what Tribune's scripts and tests use (Debian packages, and the
# browser driver from npm). Usage: scripts/install-deps.sh [run|test|bench]
set -euo pipefail
cd "$(dirname "$0")/.."
want=(ffmpeg libopus-dev pkg-config) # a source and decoder for tests; libopus for the stage mixer (opus crate)
# npm fetches hls.js (web/package-lock.json), which the binary embeds for the
# listener page; node and npm already here (not necessarily from Debian) stay
command -v node >/dev/null || want+=(nodejs)
command -v npm >/dev/null || want+=(npm)
if [ "${1:-run}" = test ] || [ "${1:-run}" = bench ]; then
  want+=(chromium mpv)               # the web page in a real browser; another real player
  want+=(postgresql redis-server)    # shared state between nodes (started by the tests, data in temp dirs)
  want+=(iproute2 nftables nginx)    # the fleet topology in network namespaces; the HLS tier's cache
fi
if [ "${1:-run}" = bench ]; then
  want+=(firefox-esr pulseaudio)     # bench/browser-listen.sh: Firefox, and a null sound sink it can play into
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
# hls.js, as pinned; server/build.rs embeds it (a build without it still works, without hls.js)
if [ ! -f web/node_modules/hls.js/dist/hls.light.min.mjs ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
  (cd web && npm ci --no-audit --no-fund --silent)
fi
if [ "${1:-run}" != run ] && [ ! -d web/e2e/node_modules/playwright-core ]; then
  (cd web/e2e && npm ci --no-audit --no-fund --silent)
fi
