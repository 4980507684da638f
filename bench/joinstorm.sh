#!/usr/bin/env bash
# Join storm: JOINS listeners arriving at RAMP per second, each staying
# HOLD seconds (so the node holds about RAMP*HOLD at once, under one
# process's 20,000 open files), every one validated. Prints how many the
# node admitted per second (first to last 200) and time to first audio.
# Usage: [RAMP=20000] [HOLD=1] [WORKERS=2] bench/joinstorm.sh [joins]
# Loopback only; bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
JOINS=${1:-40000}; RAMP=${RAMP:-20000}; HOLD=${HOLD:-1}; PORT=${PORT:-18290}
scripts/install-deps.sh run
cargo build --release -q --bin tribune --bin tribune-load
DATA=$(mktemp -d)
PIDS=()
trap 'kill ${PIDS[@]+"${PIDS[@]}"} 2>/dev/null; rm -rf "$DATA"' EXIT
target/release/tribune serve --listen 127.0.0.1:$PORT --data "$DATA" --max-listeners 19000 \
  --per-ip-connections 0 --per-subnet-connections 0 --joins-per-ip 0 >"$DATA/stdout" 2>"$DATA/stderr" &
SPID=$!; PIDS+=($SPID)
for _ in $(seq 50); do grep -q "listening" "$DATA/stdout" 2>/dev/null && break; sleep 0.1; done
ADMIN=$(target/release/tribune token --data "$DATA" --role admin)
api() { curl -sf -X POST -H "Authorization: Bearer $1" -H 'Content-Type: application/json' ${3:+-d "$3"} "http://127.0.0.1:$PORT$2"; }
SPACE=$(api "$ADMIN" /api/spaces '{"title":"join storm"}')
ID=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
HOST=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["host_token"])')
api "$HOST" /api/spaces/$ID/start >/dev/null
target/release/tribune-load source "http://127.0.0.1:$PORT/spaces/$ID/source" --token "$HOST" \
  --seconds $((JOINS / RAMP + 25)) >"$DATA/source.log" 2>&1 &
PIDS+=($!)
sleep 2
C0=$(awk '{print $14+$15}' /proc/$SPID/stat)
target/release/tribune-load listen "http://127.0.0.1:$PORT/spaces/$ID/live.opus" \
  --listeners "$JOINS" --ramp "$RAMP" --duration "$HOLD" --workers "${WORKERS:-2}" \
  --bind 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 --json "${JSON_OUT:-/dev/null}" || true
C1=$(awk '{print $14+$15}' /proc/$SPID/stat)
echo "server CPU during the storm: $(python3 -c "print(($C1 - $C0) / 100)") s; peak RSS $(awk '/VmHWM/{print $2}' /proc/$SPID/status) KiB"
