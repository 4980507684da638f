#!/usr/bin/env bash
# A listener's first second in real browsers: N fresh loads of the listener
# page of a live space (fed at 32 kbps by `tribune-load source`, 440 Hz) in
# headless Chromium, and Firefox ESR when BROWSERS includes it; each load is
# a new browser process with a fresh profile, listening SECONDS. Reports
# first sound p50/p95, stalls (count, total ms) and distance behind live
# p50/p95 (web/e2e/listen.mjs says exactly what each measures).
# Usage: [PARALLEL=4] [BROWSERS="chromium firefox"] [PLAYER=element]
#        bench/browser-listen.sh N [SECONDS]   (defaults: 20 loads, 60 s each)
# Firefox needs a sound server to open an audio output: the script starts a
# PulseAudio with a null sink (installed by scripts/install-deps.sh bench).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20}
SECONDS_EACH=${2:-60}
PARALLEL=${PARALLEL:-4}
BROWSERS=${BROWSERS:-chromium firefox}
scripts/install-deps.sh bench
cargo build --release -q --bin tribune --bin tribune-load
DATA=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$DATA"; }
trap cleanup EXIT
target/release/tribune serve --listen 127.0.0.1:0 --data "$DATA" >"$DATA/stdout" 2>"$DATA/stderr" &
PIDS+=($!)
BASE=""
for _ in $(seq 100); do
  BASE=$(sed -n 's/^tribune listening on \(http:\/\/[^ ]*\).*/\1/p' "$DATA/stdout" 2>/dev/null | head -1)
  [ -n "$BASE" ] && break
  sleep 0.1
done
[ -n "$BASE" ] || { cat "$DATA/stderr" >&2; echo "tribune did not start" >&2; exit 1; }
ADMIN=$(target/release/tribune token --data "$DATA" --role admin)
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
SPACE=$(curl -sf -X POST -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' -d '{"title":"Browser listen bench"}' "$BASE/api/spaces")
ID=$(echo "$SPACE" | field id)
HOST=$(echo "$SPACE" | field host_token)
curl -sf -X POST -H "Authorization: Bearer $HOST" "$BASE/api/spaces/$ID/start" >/dev/null
TOTAL=$(( (N / PARALLEL + 2) * (SECONDS_EACH + 30) * 2 + 60 ))
target/release/tribune-load source "$BASE/spaces/$ID/source" --token "$HOST" --seconds "$TOTAL" --bitrate 32000 --tone 440 >"$DATA/source.log" 2>&1 &
PIDS+=($!)
sleep 3
echo "machine: $(nproc) vCPU $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/^Mem:/{print $2}') GiB; tribune at $BASE, space $ID"
status=0
for b in $BROWSERS; do
  NODE=(node)
  if [ "$b" = firefox ]; then
    if ! command -v firefox-esr >/dev/null; then echo "firefox: firefox-esr is not installed (scripts/install-deps.sh bench installs it)"; continue; fi
    export XDG_RUNTIME_DIR="$DATA/xdg"; mkdir -p "$XDG_RUNTIME_DIR"; chmod 700 "$XDG_RUNTIME_DIR"
    pulseaudio -n --daemonize=no --exit-idle-time=-1 --load="module-null-sink sink_name=bench" \
      --load="module-native-protocol-unix" >"$DATA/pulse.log" 2>&1 &
    PIDS+=($!)
    sleep 1
    node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' 2>/dev/null || NODE=(node --experimental-websocket)
  fi
  echo "$b: $N loads x ${SECONDS_EACH} s, $PARALLEL at a time; load average before $(cut -d' ' -f1-3 /proc/loadavg)"
  "${NODE[@]}" web/e2e/listen.mjs "$BASE/spaces/$ID" --browser "$b" --loads "$N" --seconds "$SECONDS_EACH" \
    --parallel "$PARALLEL" ${PLAYER:+--player "$PLAYER"} | tee "$DATA/$b.jsonl" || status=$?
  echo "$b: load average after $(cut -d' ' -f1-3 /proc/loadavg)"
done
exit $status
