#!/usr/bin/env bash
# The HLS tier through one cache: a node, a source (`tribune-load source`,
# 32 kbps Opus, real time), Debian's nginx with deploy/nginx/tribune-hls.conf
# in front, and N LL-HLS listeners (`tribune-load hls`: blocking reloads,
# parts, every fMP4 box validated, a player buffer) through nginx, for each
# audience given in turn against the same node and cache. For each it
# prints what listeners experienced and what the origin paid:
#   listeners passed / stalls / faults, time to first audio and latency
#   (from PROGRAM-DATE-TIME) p50/p95, origin requests per second (the
#   node's own count of HLS requests), requests that passed nginx's front
#   cache layer (its access log: requests with an upstream), hit ratio, nginx's and the node's CPU per listener-second
#   (/proc/PID/stat over the steady state: after the ramp, before anyone
#   leaves), and the load average beside it.
# Usage: [SECS=60] [RAMP=500] [PER_WORKER=3000] [NGINX_WORKERS=2] [PLAIN=1]
#        [RENDITION=opus|aac] bench/hls-cache.sh [listeners ...]
#        (default: 1000 5000; PLAIN=1: whole segments, no blocking reloads)
# Every process here is capped at 20,000 open files: listeners are split
# over worker processes of PER_WORKER and spread over 127.31.0.x source
# addresses. Loopback only; bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
AUDIENCES=("$@"); [ ${#AUDIENCES[@]} -gt 0 ] || AUDIENCES=(1000 5000)
SECS=${SECS:-60}; RAMP=${RAMP:-500}; PER_WORKER=${PER_WORKER:-3000}
NGINX_WORKERS=${NGINX_WORKERS:-2}; PORT=${PORT:-18600}; CACHE_PORT=$((PORT + 1))
for n in "${AUDIENCES[@]}"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] && [ "$n" -le 40000 ] || { echo "listeners: 1..40000, not $n" >&2; exit 2; }
  python3 -c "import sys; sys.exit(0 if $SECS - $n / $RAMP >= 16 else 1)" ||
    { echo "SECS=$SECS leaves no steady state for $n listeners at RAMP=$RAMP" >&2; exit 2; }
done
command -v /usr/sbin/nginx >/dev/null || scripts/install-deps.sh test
scripts/install-deps.sh run
cargo build --release -q --bin tribune --bin tribune-load
DATA=$(mktemp -d)
PIDS=()
trap 'kill ${PIDS[@]+"${PIDS[@]}"} 2>/dev/null; sleep 0.5; [ -n "${KEEP:-}" ] || rm -rf "$DATA"' EXIT

# the node: no per-address caps (every cache connection comes from 127.0.0.1)
mkdir -p "$DATA/node"
target/release/tribune serve --listen 127.0.0.1:$PORT --data "$DATA/node" \
  --per-ip-connections 0 --per-subnet-connections 0 --joins-per-ip 0 \
  >"$DATA/node.out" 2>"$DATA/node.err" &
SPID=$!; PIDS+=($SPID)
for _ in $(seq 100); do grep -q "listening" "$DATA/node.out" 2>/dev/null && break; sleep 0.1; done
ADMIN=$(target/release/tribune token --data "$DATA/node" --role admin)
api() { curl -sf -X POST -H "Authorization: Bearer $1" -H 'Content-Type: application/json' ${3:+-d "$3"} "http://127.0.0.1:$PORT$2"; }
SPACE=$(api "$ADMIN" /api/spaces '{"title":"hls bench"}')
ID=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
HOST=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["host_token"])')
api "$HOST" /api/spaces/$ID/start >/dev/null
SRC_SECS=0
for n in "${AUDIENCES[@]}"; do SRC_SECS=$((SRC_SECS + n / RAMP + SECS + 40)); done
target/release/tribune-load source "http://127.0.0.1:$PORT/spaces/$ID/source" --token "$HOST" \
  --seconds $((SRC_SECS + 30)) --bitrate 32000 --tone 440 >"$DATA/source.log" 2>&1 &
SRCPID=$!; PIDS+=($SRCPID)

# nginx: the shipped site file, on its own port, cache and logs in $DATA
mkdir -p "$DATA/nginx"
sed -e "s#/var/cache/nginx/tribune-hls#$DATA/nginx/cache#" \
    -e "s#listen 8088 #listen 127.0.0.1:$CACHE_PORT #" \
    -e "s#127.0.0.1:8089#127.0.0.1:$((PORT + 2))#g" \
    deploy/nginx/tribune-hls.conf >"$DATA/nginx/tribune-hls.conf"
grep -q "listen 127.0.0.1:$CACHE_PORT " "$DATA/nginx/tribune-hls.conf" ||
  { echo "deploy/nginx/tribune-hls.conf no longer listens on 8088: update this script" >&2; exit 1; }
D="$DATA/nginx"
# as root, nginx's workers would run as nobody, who cannot enter $DATA
USER_LINE=""; [ "$(id -u)" != 0 ] || USER_LINE="user root;"
cat >"$D/nginx.conf" <<EOF
daemon off;
$USER_LINE
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile 20000;
pid $D/nginx.pid;
error_log $D/error.log warn;
events { worker_connections 19000; }
http {
  log_format hls '\$msec \$status \$upstream_cache_status \$upstream_status \$request_uri';
  access_log $D/access.log hls buffer=256k flush=1s;
  client_body_temp_path $D/body; proxy_temp_path $D/proxy; fastcgi_temp_path $D/fastcgi;
  uwsgi_temp_path $D/uwsgi; scgi_temp_path $D/scgi;
  upstream tribune { server 127.0.0.1:$PORT; keepalive 64; }
  include $D/tribune-hls.conf;
}
EOF
/usr/sbin/nginx -p "$D" -c "$D/nginx.conf" -e "$D/error.log" &
NGINX_PID=$!; PIDS+=($NGINX_PID)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$CACHE_PORT/" && break; sleep 0.1; done
URL="http://127.0.0.1:$CACHE_PORT/spaces/$ID/hls/master.m3u8"
# wait for the first parts (a blocking reload for part 1.0); plain players
# start three segments back, so for them wait until there are three
FIRST_MSN=1; [ -z "${PLAIN:-}" ] || FIRST_MSN=3
for i in $(seq 60); do
  curl -sf -m 12 -o /dev/null "http://127.0.0.1:$CACHE_PORT/spaces/$ID/hls/opus/media.m3u8?_HLS_msn=$FIRST_MSN&_HLS_part=0" && break
  [ "$i" -lt 60 ] || { echo "no HLS parts after 30 s ($DATA): $(tail -3 "$DATA/source.log")" >&2; exit 1; }
  sleep 0.5
done

ticks() { awk '{s += $14 + $15} END {print s + 0}' "$@"; }
nginx_cpu() { ticks /proc/$NGINX_PID/stat $(for p in $(pgrep -P $NGINX_PID); do echo /proc/$p/stat; done); }
node_cpu() { ticks /proc/$SPID/stat; }
node_hls() { curl -s "http://127.0.0.1:$PORT/metrics" | awk '$1 ~ /^tribune_hls_requests_total/ {s += $NF} END {print s + 0}'; }
BINDS=$(python3 -c "print(','.join(f'127.31.{i // 250}.{i % 250 + 1}' for i in range(16)))")
MODE=(); [ -z "${PLAIN:-}" ] || MODE=(--plain)
[ -z "${RENDITION:-}" ] || MODE+=(--rendition "$RENDITION")
echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); nginx $(/usr/sbin/nginx -v 2>&1 | sed 's#.*/##'), $NGINX_WORKERS workers"
echo "space $ID through $URL; ${SECS} s per listener, ramp ${RAMP}/s"
for N in "${AUDIENCES[@]}"; do
  WORKERS=$(( (N + PER_WORKER - 1) / PER_WORKER ))
  echo "== $N HLS listeners (${MODE[*]:-LL-HLS}) through nginx, $WORKERS load process(es)"
  target/release/tribune-load hls "$URL" --listeners "$N" --ramp "$RAMP" --duration "$SECS" \
    --workers "$WORKERS" --bind "$BINDS" "${MODE[@]}" --json "$DATA/load-$N.json" >"$DATA/load-$N.out" 2>&1 &
  LOAD=$!
  RAMP_SECS=$(python3 -c "print($N / $RAMP)")
  WINDOW=$(python3 -c "print(round($SECS - $RAMP_SECS - 8, 1))")
  sleep "$(python3 -c "print($RAMP_SECS + 4)")"
  G0=$(nginx_cpu); N0=$(node_cpu); R0=$(node_hls); T0=$(date +%s.%N)
  sleep "$WINDOW"
  G1=$(nginx_cpu); N1=$(node_cpu); R1=$(node_hls); T1=$(date +%s.%N)
  LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
  wait $LOAD || true
  sleep 1.5 # nginx's log buffer is flushed every second
  python3 - "$N" "$DATA/load-$N.json" "$D/access.log" "$T0" "$T1" "$G0" "$G1" "$N0" "$N1" "$R0" "$R1" "$LOADAVG" <<'PY'
import json, sys
n, report, log = int(sys.argv[1]), sys.argv[2], sys.argv[3]
t0, t1, g0, g1, n0, n1, r0, r1 = map(float, sys.argv[4:12])
loadavg = sys.argv[12]
secs = t1 - t0
r = json.load(open(report))
total = hits = upstream = 0
statuses = {}
with open(log) as f:
    for line in f:
        p = line.split()
        if len(p) < 5 or not (t0 <= float(p[0]) < t1) or "/hls/" not in p[4]:
            continue
        total += 1
        statuses[p[2]] = statuses.get(p[2], 0) + 1
        if p[2] in ("HIT", "UPDATING", "STALE"):
            hits += 1
        if p[3] != "-":
            upstream += 1
lsec = n * secs
print(f"  listeners: {r['passed']}/{r['listeners']} passed, {r['stalls']} stalls, faults {r['faults']}, "
      f"{r['fragments_validated']} fragments validated")
print(f"  time to first audio ms p50/p95: {r['time_to_first_audio_ms']['p50']}/{r['time_to_first_audio_ms']['p95']}; "
      f"latency ms p50/p95: {r['latency_ms']['p50']}/{r['latency_ms']['p95']}")
print(f"  steady state {secs:.1f} s: nginx answered {total / secs:.0f} HLS req/s, {upstream / secs:.2f}/s passed its front cache, "
      f"the origin answered {(r1 - r0) / secs:.2f}/s (its own count); front hit ratio {hits / max(total, 1) * 100:.2f}% {statuses}")
print(f"  CPU per listener-second: nginx {(g1 - g0) / 100 / lsec * 1e6:.1f} us ({(g1 - g0) / secs:.0f}% of a core), "
      f"node {(n1 - n0) / 100 / lsec * 1e6:.1f} us ({(n1 - n0) / secs:.1f}% of a core); "
      f"load generator {r['load_cpu_seconds']:.0f} CPU-s; load average {loadavg}")
PY
done
if ! kill -0 "$SRCPID" 2>/dev/null; then echo "the source exited early: $(tail -3 "$DATA/source.log")" >&2; exit 1; fi
