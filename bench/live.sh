#!/usr/bin/env bash
# Steady-state fan-out on one node: N real listeners (validated, player
# model) on a 32 kbps Opus program, against
#   SERVER=tribune (default) | floor (bench/floor: the least a server can do)
#   | icecast (Debian's Icecast 2.4, ~1 s burst).
# All three get the same source: `tribune-load source` (libopus, 32 kbps,
# 20 ms pages written in real time, TRIBUNE_EPOCH_MS in its OpusTags), so
# ingest-to-listener latency is measured for each (SOURCE=ffmpeg feeds
# ffmpeg's sine instead, as before; then only Tribune's latency is known).
# Usage: [SERVER=..] [SOURCE=load|ffmpeg] [WORKERS=k] [RAMP=2000] bench/live.sh [listeners] [seconds] [flush_ms]
# Loopback only; bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}; SECS=${2:-20}; FLUSH=${3:-200}; PORT=${PORT:-18090}; SERVER=${SERVER:-tribune}
scripts/install-deps.sh run
cargo build --release -q --bin tribune --bin tribune-load --bin tribune-floor
DATA=$(mktemp -d)
PIDS=()
trap 'kill ${PIDS[@]+"${PIDS[@]}"} 2>/dev/null; rm -rf "$DATA"' EXIT
SOURCE=${SOURCE:-load}; SRC_SECS=$((SECS * 2 + N / 500 + 10))
# Icecast writes each source page to every listener as it arrives: for an
# equal write cadence its source sends one page per flush; Tribune and the
# floor batch 20 ms pages themselves.
if [ "$SERVER" = icecast ]; then PAGE_MS=${PAGE_MS:-$FLUSH}; else PAGE_MS=${PAGE_MS:-20}; fi
OPUS=(-c:a libopus -b:a 32k -page_duration 20000 -content_type audio/ogg -f ogg)
# feed DEST USER PASSWORD: publishes the program to an Icecast-protocol URL
# (PUT), or to stdout when DEST is -; the source's own report goes to
# $DATA/source.log
feed() {
  local dest=$1 user=$2 pass=$3
  if [ "$SOURCE" = ffmpeg ]; then
    [ "$dest" = - ] || dest="icecast://$user:$pass@${dest#http://}"
    exec ffmpeg -nostdin -v error -re -f lavfi -i "sine=frequency=440:duration=$SRC_SECS" "${OPUS[@]}" "$dest"
  else
    exec target/release/tribune-load source "$dest" --user "$user" --password "$pass" \
      --seconds "$SRC_SECS" --bitrate 32000 --tone 440 --page-ms "$PAGE_MS"
  fi
}
case "$SERVER" in
  tribune)
    target/release/tribune serve --listen 127.0.0.1:$PORT --data "$DATA" --flush-ms "$FLUSH" \
      --max-listeners $((N + 100)) --per-ip-connections 0 --per-subnet-connections 0 --joins-per-ip 0 \
      >"$DATA/stdout" 2>"$DATA/stderr" &
    SPID=$!; PIDS+=($SPID)
    for _ in $(seq 50); do grep -q "listening" "$DATA/stdout" 2>/dev/null && break; sleep 0.1; done
    ADMIN=$(target/release/tribune token --data "$DATA" --role admin)
    api() { curl -sf -X POST -H "Authorization: Bearer $1" -H 'Content-Type: application/json' ${3:+-d "$3"} "http://127.0.0.1:$PORT$2"; }
    SPACE=$(api "$ADMIN" /api/spaces '{"title":"bench"}')
    ID=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    HOST=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["host_token"])')
    api "$HOST" /api/spaces/$ID/start >/dev/null
    feed "http://127.0.0.1:$PORT/spaces/$ID/source" source "$HOST" >"$DATA/source.log" 2>&1 &
    SRCPID=$!; PIDS+=($SRCPID)
    URL="http://127.0.0.1:$PORT/spaces/$ID/live.opus" ;;
  floor)
    mkfifo "$DATA/program.ogg"
    target/release/tribune-floor 127.0.0.1:$PORT "$FLUSH" 2 <"$DATA/program.ogg" >"$DATA/stdout" &
    SPID=$!; PIDS+=($SPID)
    feed - "" "" >"$DATA/program.ogg" 2>"$DATA/source.log" &
    SRCPID=$!; PIDS+=($SRCPID)
    URL="http://127.0.0.1:$PORT/live.opus" ;;
  icecast)
    source bench/icecast.sh
    start_icecast "$PORT" $((N + 100)) "$DATA"
    SPID=$ICECAST_PID; PIDS+=($SPID)
    feed "http://127.0.0.1:$PORT/live.opus" source hackme >"$DATA/source.log" 2>&1 &
    SRCPID=$!; PIDS+=($SRCPID)
    URL="http://127.0.0.1:$PORT/live.opus" ;;
  *) echo "SERVER must be tribune, floor or icecast" >&2; exit 2 ;;
esac
sleep 2
cpu() { awk '{print $14+$15}' /proc/$SPID/stat; }
rss() { awk '/VmRSS/{print $2}' /proc/$SPID/status; }
RSS0=$(rss)
RAMP=${RAMP:-2000}
target/release/tribune-load listen "$URL" \
  --listeners "$N" --ramp "$RAMP" --duration "$SECS" --bind 127.0.0.2,127.0.0.3,127.0.0.4 --workers "${WORKERS:-1}" \
  --json "${JSON_OUT:-/dev/null}" &
LOAD=$!
# steady state: from when the ramp is done until shortly before listeners leave
RAMP_SECS=$(python3 -c "print($N/$RAMP)")
sleep "$(python3 -c "print($RAMP_SECS + 2)")"
C0=$(cpu); T0=$(date +%s.%N)
sleep "$(python3 -c "print(max(1, $SECS - 4))")"
C1=$(cpu); T1=$(date +%s.%N); RSS1=$(rss)
wait $LOAD || true
# the source's own account (late writes inflate every server's latency alike)
if kill -0 "$SRCPID" 2>/dev/null; then
  kill -TERM "$SRCPID"; wait "$SRCPID" 2>/dev/null || true
  [ "$SOURCE" = ffmpeg ] || tail -1 "$DATA/source.log"
else
  echo "source exited early: $(tail -3 "$DATA/source.log")" >&2
fi
python3 - "$SERVER" "$N" "$C0" "$C1" "$T0" "$T1" "$RSS0" "$RSS1" "$FLUSH" "${SERVER_JSON:-}" "$SOURCE" <<'PY'
import json, sys
server, n, c0, c1, t0, t1, r0, r1, flush, out, source = sys.argv[1:]
n = int(n); secs = float(t1) - float(t0); cpu = (int(c1) - int(c0)) / 100.0
us = cpu / (n * secs) * 1e6; kib = (int(r1) - int(r0)) / n
print(f"{server}: flush {flush} ms, {n} listeners, steady {secs:.1f} s: "
      f"CPU {cpu:.2f} s = {us:.1f} us per listener-second; "
      f"RSS {int(r0)//1024} MiB idle -> {int(r1)//1024} MiB ({kib:.2f} KiB per listener)")
if out:
    json.dump({"server": server, "listeners": n, "flush_ms": int(flush), "cpu_us_per_listener_second": us,
               "rss_kib_per_listener": kib, "source": source}, open(out, "w"))
PY
