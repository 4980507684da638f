#!/usr/bin/env bash
# The same storm as bench/storm.sh against Icecast 2.4 with the same limits
# (clients = C, 5 s header timeout, ~1 s burst), for a side-by-side.
# Usage: bench/storm-icecast.sh [capacity] ; loopback only, bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-2000}; PORT=${PORT:-18290}
source bench/icecast.sh
scripts/install-deps.sh run
cargo build --release -q --bin tribune-load
DATA=$(mktemp -d); OUT=${OUT:-$DATA}
start_icecast "$PORT" "$C" "$DATA"
SOURCE=""
cleanup() { kill ${SOURCE:-} "$ICECAST_PID" 2>/dev/null || true; }
trap cleanup EXIT
source_start() {
  ffmpeg -nostdin -v error -re -f lavfi -i "sine=frequency=440:duration=$1" -c:a libopus -b:a 32k \
    -page_duration 20000 -content_type audio/ogg -f ogg "icecast://source:hackme@127.0.0.1:$PORT/live.opus" 2>/dev/null &
  SOURCE=$!
}
mounted() { curl -s "http://127.0.0.1:$PORT/status-json.xsl" | grep -q 'live.opus'; }
source_start 70
for _ in $(seq 50); do mounted && break; sleep 0.1; done
( peak=0; while kill -0 "$ICECAST_PID" 2>/dev/null; do r=$(awk '/VmRSS/{print $2}' /proc/$ICECAST_PID/status 2>/dev/null || echo 0)
  [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" > "$DATA/peak_rss"; sleep 0.5; done ) &
RSS0=$(awk '/VmRSS/{print $2}' /proc/$ICECAST_PID/status)
target/release/tribune-load storm "http://127.0.0.1:$PORT/live.opus" \
  --legit $((C * 10)) --arrive-secs 10 --hold 20 --duration 40 --legit-ips 1000 --attack-ips 8 \
  --forged $((C)) --slowloris 500 --garbage $((C)) --churn $((C * 2)) --slow-readers 200 --retry-storm 200 \
  --json "$OUT/storm-icecast.json" > "$DATA/storm.txt" &
LOAD=$!
sleep 5
kill $SOURCE 2>/dev/null; wait $SOURCE 2>/dev/null || true
for _ in $(seq 100); do mounted || break; sleep 0.05; done
T0=$(date +%s.%N); source_start 60
for _ in $(seq 400); do mounted && break; sleep 0.01; done
T1=$(date +%s.%N)
wait $LOAD || true
cat "$DATA/storm.txt"
python3 - "$T0" "$T1" "$RSS0" "$(cat "$DATA/peak_rss" 2>/dev/null || echo 0)" <<'PY'
import sys
t0, t1, r0, peak = sys.argv[1:]
print(f"icecast source reconnect during the storm: {float(t1)-float(t0):.3f} s to mounted (ffmpeg start included)")
print(f"icecast RSS: {int(r0)//1024} MiB before, peak {int(peak)//1024} MiB")
PY
