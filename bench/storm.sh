#!/usr/bin/env bash
# Hold the door: a node of capacity C, 10xC legitimate listeners arriving
# within 10 s, mixed with every attack class at once. During the storm a
# source reconnects and a host mints a speaker token on the reserved lane.
# Usage: bench/storm.sh [capacity] ; loopback only, bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
C=${1:-2000}; PORT=${PORT:-18190}; RPORT=$((PORT + 1))
scripts/install-deps.sh run
cargo build --release -q --bin tribune --bin tribune-load
DATA=$(mktemp -d); OUT=${OUT:-$DATA}
target/release/tribune serve --listen 127.0.0.1:$PORT --reserved-listen 127.0.0.1:$RPORT --data "$DATA" \
  --max-listeners "$C" --header-timeout-ms 5000 >"$DATA/stdout" 2>"$DATA/stderr" &
SERVER=$!
SOURCE=""
cleanup() { kill $SERVER ${SOURCE:-} 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 50); do grep -q "reserved lane" "$DATA/stdout" 2>/dev/null && break; sleep 0.1; done
ADMIN=$(target/release/tribune token --data "$DATA" --role admin)
R=http://127.0.0.1:$RPORT
api() { curl -sf -X POST -H "Authorization: Bearer $1" -H 'Content-Type: application/json' ${3:+-d "$3"} "$R$2"; }
SPACE=$(api "$ADMIN" /api/spaces '{"title":"storm"}')
ID=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
HOST=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["host_token"])')
api "$HOST" /api/spaces/$ID/start >/dev/null
source_start() {  # the program: 60 s of tone, 20 ms pages, on the reserved lane
  ffmpeg -nostdin -v error -re -f lavfi -i "sine=frequency=440:duration=$1" -c:a libopus -b:a 32k \
    -page_duration 20000 -content_type audio/ogg -f ogg "icecast://source:$HOST@127.0.0.1:$RPORT/spaces/$ID/source" 2>/dev/null &
  SOURCE=$!
}
source_start 70
sleep 2
# memory: sample the server's RSS every 0.5 s
( peak=0; while kill -0 $SERVER 2>/dev/null; do r=$(awk '/VmRSS/{print $2}' /proc/$SERVER/status 2>/dev/null || echo 0)
  [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" > "$DATA/peak_rss"; sleep 0.5; done ) &
RSS0=$(awk '/VmRSS/{print $2}' /proc/$SERVER/status)
target/release/tribune-load storm "http://127.0.0.1:$PORT/spaces/$ID/live.opus" \
  --legit $((C * 10)) --arrive-secs 10 --hold 20 --duration 40 --legit-ips 1000 --attack-ips 8 \
  --forged $((C)) --slowloris 500 --garbage $((C)) --churn $((C * 2)) --slow-readers 200 --retry-storm 200 \
  --json "$OUT/storm.json" > "$DATA/storm.txt" &
LOAD=$!
# mid-storm: the source drops and reconnects, a host mints a speaker token
sleep 5
kill $SOURCE 2>/dev/null; wait $SOURCE 2>/dev/null || true
T0=$(date +%s.%N); source_start 60
for _ in $(seq 200); do
  curl -sf "$R/api/spaces/$ID" | grep -q '"source_connected":true' && break; sleep 0.01; done
T1=$(date +%s.%N)
T2=$(date +%s.%N); api "$HOST" /api/spaces/$ID/tokens '{"role":"speaker","identity":"guest"}' >/dev/null; T3=$(date +%s.%N)
wait $LOAD || true
wait $SOURCE 2>/dev/null || true
api "$HOST" /api/spaces/$ID/end >/dev/null
cat "$DATA/storm.txt"
curl -sf "$R/spaces/$ID/replay.opus" -o "$DATA/replay.opus"
ERRORS=$(ffmpeg -nostdin -v error -i "$DATA/replay.opus" -f null - 2>&1 | wc -l)
DUR=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$DATA/replay.opus")
python3 - "$T0" "$T1" "$T2" "$T3" "$RSS0" "$(cat "$DATA/peak_rss" 2>/dev/null || echo 0)" "$ERRORS" "$DUR" <<'PY'
import sys
t0, t1, t2, t3, r0, peak, errors, dur = sys.argv[1:]
print(f"source reconnect during the storm: {float(t1)-float(t0):.3f} s to connected (ffmpeg start included)")
print(f"speaker token minted during the storm: {float(t3)-float(t2)*1:.3f} s")
print(f"server RSS: {int(r0)//1024} MiB before, peak {int(peak)//1024} MiB")
print(f"recording: {dur} s, ffmpeg decode errors: {errors}")
PY
