#!/usr/bin/env bash
# What each relay hop adds: an origin, an edge on it and an edge on that
# edge (loopback), LISTENERS validated listeners on each at the default
# flush cadence, all fed by one timestamped source; ingest-to-listener
# latency per tier from tribune-load (the source's clock is in OpusTags).
# Usage: [FLUSH=200] bench/hops.sh [listeners-per-node] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
L=${1:-200}; SECS=${2:-30}; FLUSH=${FLUSH:-200}; BASE=${PORT:-18600}
scripts/install-deps.sh run
cargo build --release -q --bin tribune --bin tribune-load
DATA=$(mktemp -d)
PIDS=()
trap 'kill ${PIDS[@]+"${PIDS[@]}"} 2>/dev/null; rm -rf "$DATA"' EXIT
OPEN=(--flush-ms "$FLUSH" --per-ip-connections 0 --per-subnet-connections 0 --joins-per-ip 0)
serve() {
  local name=$1 port=$2; shift 2
  mkdir -p "$DATA/$name"
  target/release/tribune serve --listen 127.0.0.1:$port --data "$DATA/$name" "${OPEN[@]}" "$@" \
    >"$DATA/$name.out" 2>"$DATA/$name.err" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q "listening" "$DATA/$name.out" 2>/dev/null && break; sleep 0.1; done
}
serve origin $BASE
NODE=$(target/release/tribune token --data "$DATA/origin" --role node)
ADMIN=$(target/release/tribune token --data "$DATA/origin" --role admin)
serve edge1 $((BASE + 1)) --upstream http://127.0.0.1:$BASE --node-token "$NODE"
serve edge2 $((BASE + 2)) --upstream http://127.0.0.1:$((BASE + 1)) --node-token "$NODE"
api() { curl -sf -X POST -H "Authorization: Bearer $1" -H 'Content-Type: application/json' ${3:+-d "$3"} "http://127.0.0.1:$BASE$2"; }
SPACE=$(api "$ADMIN" /api/spaces '{"title":"hops"}')
ID=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
HOST=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["host_token"])')
api "$HOST" /api/spaces/$ID/start >/dev/null
target/release/tribune-load source "http://127.0.0.1:$BASE/spaces/$ID/source" --token "$HOST" \
  --seconds $((SECS + 60)) >"$DATA/source.log" 2>&1 &
PIDS+=($!)
sleep 3
i=0
for node in origin edge1 edge2; do
  target/release/tribune-load listen "http://127.0.0.1:$((BASE + i))/spaces/$ID/live.opus" \
    --listeners "$L" --ramp 200 --duration "$SECS" --bind 127.0.$((20 + i)).1 \
    --json "$DATA/$node.json" >/dev/null 2>&1 &
  PIDS+=($!)
  i=$((i + 1))
done
sleep $((SECS + L / 200 + 5))
echo "ingest-to-listener latency, flush $FLUSH ms, $L listeners per node:"
for node in origin edge1 edge2; do
  python3 -c "
import json; r = json.load(open('$DATA/$node.json')); l = r['latency_ms']
print(f'  $node: p50 {l[\"p50\"]} ms, p99 {l[\"p99\"]} ms ({l[\"samples\"]} pages), {r[\"passed\"]}/{r[\"listeners\"]} passed, stalls {r[\"stalls\"]}')"
done
