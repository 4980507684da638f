#!/usr/bin/env bash
# A crowd behind one address (a carrier-grade NAT, an office): N listeners
# from the single address 127.9.9.9 joining at RAMP per second, with the
# default per-address limits (64 connections, 10 joins/s). Run twice: as
# plain players (no pass: the per-address cap holds them at 64), and as the
# web page joins (`--pass`: the admission call's pass raises the address's
# allowance). Every byte validated, each listener stays SECS seconds.
# Usage: [RAMP=5] [SECS=20] bench/crowd.sh [listeners]
# Loopback only; bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}; RAMP=${RAMP:-5}; SECS=${SECS:-20}; PORT=${PORT:-18390}
scripts/install-deps.sh run
cargo build --release -q --bin tribune --bin tribune-load
DATA=$(mktemp -d)
PIDS=()
trap 'kill ${PIDS[@]+"${PIDS[@]}"} 2>/dev/null; rm -rf "$DATA"' EXIT
target/release/tribune serve --listen 127.0.0.1:$PORT --data "$DATA" >"$DATA/stdout" 2>"$DATA/stderr" &
PIDS+=($!)
for _ in $(seq 50); do grep -q "listening" "$DATA/stdout" 2>/dev/null && break; sleep 0.1; done
ADMIN=$(target/release/tribune token --data "$DATA" --role admin)
api() { curl -sf -X POST -H "Authorization: Bearer $1" -H 'Content-Type: application/json' ${3:+-d "$3"} "http://127.0.0.1:$PORT$2"; }
SPACE=$(api "$ADMIN" /api/spaces '{"title":"crowd"}')
ID=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
HOST=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["host_token"])')
api "$HOST" /api/spaces/$ID/start >/dev/null
RUN=$((N / RAMP + SECS))
target/release/tribune-load source "http://127.0.0.1:$PORT/spaces/$ID/source" --token "$HOST" \
  --seconds $((2 * RUN + 30)) >"$DATA/source.log" 2>&1 &
PIDS+=($!)
sleep 2
for mode in plain pass; do
  flag=(); [ $mode = pass ] && flag=(--pass)
  echo "== $N listeners from 127.9.9.9 at $RAMP/s, $mode"
  target/release/tribune-load listen "http://127.0.0.1:$PORT/spaces/$ID/live.opus" \
    --listeners "$N" --ramp "$RAMP" --duration "$SECS" --bind 127.9.9.9 "${flag[@]}" \
    --json "${OUT:-/tmp}/crowd-$mode.json" || true
  sleep 3
done
