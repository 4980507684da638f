#!/usr/bin/env bash
# Steps floor, Tribune and Icecast through listener levels at the same
# flush cadence and writes a table and a chart (docs/fanout.svg).
# Every run is fed by the same source (`tribune-load source`, see bench/live.sh),
# so the table has ingest-to-listener latency for all three servers.
# Usage: bench/levels.sh [levels...]   (default: 1000 5000 10000 19000)
set -euo pipefail
cd "$(dirname "$0")/.."
LEVELS=("${@:-1000 5000 10000 19000}"); [ $# -eq 0 ] && LEVELS=(1000 5000 10000 19000)
OUT=${OUT:-bench/results}; mkdir -p "$OUT"
for n in "${LEVELS[@]}"; do
  for server in floor tribune icecast; do
    workers=1; [ "$n" -gt 9000 ] && workers=2
    echo "== $server $n"
    SERVER=$server WORKERS=$workers JSON_OUT="$OUT/load-$server-$n.json" SERVER_JSON="$OUT/server-$server-$n.json" \
      bench/live.sh "$n" 20 200 | tail -1 || echo "$server $n: run failed"
    sleep 3   # let the previous server's port and sockets go
  done
done
python3 bench/chart.py "$OUT" docs/fanout.svg
