#!/usr/bin/env bash
# Join storm: JOINS listeners arriving at RAMP per second, each staying
# HOLD seconds (so the node holds about RAMP*HOLD at once, under one
# process's 20,000 open files), every one validated. Prints how many the
# server admitted per second (first to last 200), time to first audio, and
# the server's CPU per admitted join.
#   SERVER=tribune (default) | floor (bench/floor: accept, write headers and
#   burst, one write per flush; the least a server can do per join)
#   | both (the floor, then Tribune, and the ratio of their CPU per join;
#   RAMP defaults to 8000 here: at 20,000/s on two shared cores the floor's
#   one accept thread leaves joins unanswered and a faster Tribune holds
#   RAMP*HOLD > --max-listeners at once, so its waiting room answers 503:
#   neither compares like with like)
# Usage: [SERVER=..] [RAMP=20000] [HOLD=1] [WORKERS=2] bench/joinstorm.sh [joins]
# Loopback only; bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SERVER:-}" = both ] && export RAMP=${RAMP:-8000}
JOINS=${1:-40000}; RAMP=${RAMP:-20000}; HOLD=${HOLD:-1}; PORT=${PORT:-18290}; SERVER=${SERVER:-tribune}
scripts/install-deps.sh run
cargo build --release -q --bin tribune --bin tribune-load --bin tribune-floor
if [ "$SERVER" = both ]; then
  FLOOR_OUT=$(SERVER=floor "$0" "$JOINS" | tee /dev/stderr)
  sleep 3
  TRIBUNE_OUT=$(SERVER=tribune "$0" "$JOINS" | tee /dev/stderr)
  per() { echo "$1" | awk -v k="$2" '$0 ~ k {print $NF}' | tail -1; }
  python3 -c "
f, t = float('$(per "$FLOOR_OUT" ', per admitted join')'), float('$(per "$TRIBUNE_OUT" ', per admitted join')')
fa, ta = float('$(per "$FLOOR_OUT" 'above idle')'), float('$(per "$TRIBUNE_OUT" 'above idle')')
print(f'CPU per admitted join: floor {f:.1f} us, tribune {t:.1f} us, ratio {t/f:.2f}x')
print(f'above each server\'s idle work: floor {fa:.1f} us, tribune {ta:.1f} us, ratio {ta/fa:.2f}x')"
  exit 0
fi
DATA=$(mktemp -d)
PIDS=()
trap 'kill ${PIDS[@]+"${PIDS[@]}"} 2>/dev/null; rm -rf "$DATA"' EXIT
SRC_SECS=$((JOINS / RAMP + 25))
case "$SERVER" in
  tribune)
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
      --seconds "$SRC_SECS" >"$DATA/source.log" 2>&1 &
    PIDS+=($!)
    URL="http://127.0.0.1:$PORT/spaces/$ID/live.opus" ;;
  floor)
    mkfifo "$DATA/program.ogg"
    target/release/tribune-floor 127.0.0.1:$PORT 200 2 <"$DATA/program.ogg" >"$DATA/stdout" &
    SPID=$!; PIDS+=($SPID)
    target/release/tribune-load source - --seconds "$SRC_SECS" >"$DATA/program.ogg" 2>"$DATA/source.log" &
    PIDS+=($!)
    URL="http://127.0.0.1:$PORT/live.opus" ;;
  *) echo "SERVER must be tribune, floor or both" >&2; exit 2 ;;
esac
sleep 2
JSON=${JSON_OUT:-$DATA/load.json}
# the server's own work with nobody joining (a live space: Tribune packages
# HLS and encodes AAC whether or not anyone joins; the floor only reads its
# input), measured over 4 s just before the storm
I0=$(awk '{print $14+$15}' /proc/$SPID/stat); sleep 4; I1=$(awk '{print $14+$15}' /proc/$SPID/stat)
C0=$(awk '{print $14+$15}' /proc/$SPID/stat); T0=$(date +%s.%N)
target/release/tribune-load listen "$URL" \
  --listeners "$JOINS" --ramp "$RAMP" --duration "$HOLD" --workers "${WORKERS:-2}" \
  --bind 127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5 --json "$JSON" || true
C1=$(awk '{print $14+$15}' /proc/$SPID/stat); T1=$(date +%s.%N)
ADMITTED=$(python3 -c "import json; print(json.load(open('$JSON'))['statuses'].get('200', 0))" 2>/dev/null || echo 0)
python3 -c "import json; print('  answers by status:', json.load(open('$JSON'))['statuses'])" 2>/dev/null || true
python3 - "$C0" "$C1" "$ADMITTED" "$SERVER" "$I0" "$I1" "$T0" "$T1" <<'PY'
import sys
c0, c1, admitted, server = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
i0, i1, t0, t1 = map(float, sys.argv[5:9])
cpu = (c1 - c0) / 100
idle_rate = (i1 - i0) / 100 / 4  # cores
above = cpu - idle_rate * (t1 - t0)
per = cpu / admitted * 1e6 if admitted else float("nan")
per_above = above / admitted * 1e6 if admitted else float("nan")
print(f"{server}: idle {idle_rate * 100:.1f}% of a core; storm {t1 - t0:.1f} s, server CPU {cpu:.2f} s, "
      f"{admitted} admitted, per admitted join {per:.1f}")
print(f"{server}: above idle per admitted join {per_above:.1f}")
PY
echo "peak RSS $(awk '/VmHWM/{print $2}' /proc/$SPID/status) KiB"
