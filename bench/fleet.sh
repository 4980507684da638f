#!/usr/bin/env bash
# Many nodes on this machine: an origin and three edges on it (loopback,
# four processes, each under its own 20,000-open-file limit), N listeners
# spread over the edges by one tribune-load process per edge, every byte
# validated. Measures the origin with no listeners on its edges, then with
# all of them: its CPU and egress must not grow with the audience.
# Usage: [FLUSH=500] [BUFFER=2000] [RAMP=1500] [SECS=60] bench/fleet.sh [listeners]
# Loopback only; bounded in count and time.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-40000}; FLUSH=${FLUSH:-500}; BUFFER=${BUFFER:-2000}; RAMP=${RAMP:-1500}; SECS=${SECS:-60}
BASE=${PORT:-18500}
scripts/install-deps.sh run
cargo build --release -q --bin tribune --bin tribune-load
DATA=$(mktemp -d)
PIDS=()
trap 'kill ${PIDS[@]+"${PIDS[@]}"} 2>/dev/null; rm -rf "$DATA"' EXIT
OPEN=(--flush-ms "$FLUSH" --max-listeners $((N + 1000)) --per-ip-connections 0 --per-subnet-connections 0 --joins-per-ip 0)
serve() { # NAME PORT ARGS...
  local name=$1 port=$2; shift 2
  mkdir -p "$DATA/$name"
  target/release/tribune serve --listen 127.0.0.1:$port --data "$DATA/$name" "${OPEN[@]}" "$@" \
    >"$DATA/$name.out" 2>"$DATA/$name.err" &
  PIDS+=($!)
  for _ in $(seq 100); do grep -q "listening" "$DATA/$name.out" 2>/dev/null && break; sleep 0.1; done
}
serve origin $BASE
ORIGIN_PID=${PIDS[-1]}
NODE=$(target/release/tribune token --data "$DATA/origin" --role node)
ADMIN=$(target/release/tribune token --data "$DATA/origin" --role admin)
EDGE_PIDS=()
for i in 1 2 3; do
  serve edge$i $((BASE + i)) --upstream http://127.0.0.1:$BASE --node-token "$NODE"
  EDGE_PIDS+=(${PIDS[-1]})
done
api() { curl -sf -X POST -H "Authorization: Bearer $1" -H 'Content-Type: application/json' ${3:+-d "$3"} "http://127.0.0.1:$BASE$2"; }
SPACE=$(api "$ADMIN" /api/spaces '{"title":"fleet"}')
ID=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
HOST=$(echo "$SPACE" | python3 -c 'import json,sys; print(json.load(sys.stdin)["host_token"])')
api "$HOST" /api/spaces/$ID/start >/dev/null
target/release/tribune-load source "http://127.0.0.1:$BASE/spaces/$ID/source" --token "$HOST" \
  --seconds $((N / RAMP + SECS + 120)) >"$DATA/source.log" 2>&1 &
PIDS+=($!)
# each edge starts relaying the space (one listener asks)
for i in 1 2 3; do curl -s -m 2 -o /dev/null "http://127.0.0.1:$((BASE + i))/spaces/$ID/live.opus" || true; done
sleep 3

cpu() { awk '{print $14+$15}' /proc/$1/stat; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 ~ "^"m {s += $NF} END {print s + 0}'; }
# origin CPU (s) and egress (bytes: relays + its own listeners) over T seconds
measure_origin() {
  local t=$1 c0 c1 b0 b1
  c0=$(cpu $ORIGIN_PID); b0=$(( $(metric $BASE tribune_relay_bytes_total) + $(metric $BASE tribune_bytes_out_total) ))
  sleep "$t"
  c1=$(cpu $ORIGIN_PID); b1=$(( $(metric $BASE tribune_relay_bytes_total) + $(metric $BASE tribune_bytes_out_total) ))
  python3 -c "print(f'{($c1 - $c0) / 100 / $t * 100:.2f}% of a core, {($b1 - $b0) / $t / 1024:.1f} KiB/s egress')"
}
echo "== origin, 3 edges relaying, no listeners (20 s)"
IDLE=$(measure_origin 20); echo "origin: $IDLE"

# the kernel's side, sampled while the listeners come and stay: TCP
# memory (pages in /proc/net/sockstat) and the drop/pressure counters
# (nstat deltas over the run), since every socket end is on one machine
nstat -n 2>/dev/null || true
( while :; do
    echo "$(date +%s) $(awk '/^TCP:/ {for (i = 2; i < NF; i += 2) printf "%s=%s ", $i, $(i + 1)}' /proc/net/sockstat)"
    sleep 5
  done ) >"$DATA/sockstat.log" &
PIDS+=($!)

echo "== $N listeners over 3 edges, ramp $RAMP/s, $SECS s each, flush $FLUSH ms, player buffer $BUFFER ms"
LOADS=()
for i in 1 2 3; do
  n=$(( N / 3 + (i <= N % 3 ? 1 : 0) ))
  target/release/tribune-load listen "http://127.0.0.1:$((BASE + i))/spaces/$ID/live.opus" \
    --listeners "$n" --ramp $(( RAMP / 3 )) --duration "$SECS" --player-buffer-ms "$BUFFER" \
    --bind 127.$((10 + i)).0.1,127.$((10 + i)).0.2,127.$((10 + i)).0.3,127.$((10 + i)).0.4 \
    --json "$DATA/load-$i.json" >"$DATA/load-$i.out" 2>&1 &
  LOADS+=($!)
done
# steady state: after the ramp, before the first listeners leave
sleep $(( N / RAMP + 5 ))
E0=(); for p in "${EDGE_PIDS[@]}"; do E0+=($(cpu $p)); done
FULL=$(measure_origin 20)
E1=(); for p in "${EDGE_PIDS[@]}"; do E1+=($(cpu $p)); done
ATONCE=0
for i in 0 1 2 3; do
  here=$(curl -s "http://127.0.0.1:$((BASE + i))/api/spaces/$ID" | python3 -c 'import json,sys; print(json.load(sys.stdin)["listeners_here"])' 2>/dev/null || echo 0)
  ATONCE=$((ATONCE + here))
done
for p in "${LOADS[@]}"; do wait "$p" || true; done
echo "origin: $FULL"
for i in 0 1 2; do
  python3 -c "print(f'edge{$i + 1}: {(${E1[$i]} - ${E0[$i]}) / 100 / 20 * 100:.1f}% of a core')"
done
echo "listeners connected at once, over the four nodes: $ATONCE"
echo "kernel: TCP memory peak $(awk '{for (i = 2; i <= NF; i++) if ($i ~ /^mem=/) {split($i, a, "="); if (a[2] > m) m = a[2]}} END {printf "%d pages (%.0f MiB)", m, m * 4 / 1024}' "$DATA/sockstat.log") of tcp_mem $(cat /proc/sys/net/ipv4/tcp_mem | tr '\t' '/') pages"
DROPS=$(nstat 2>/dev/null | awk '$1 ~ /RcvQDrop|PruneCalled|MemoryPressures|TCPTimeouts|ListenOverflows|ListenDrops|TCPAbortOnMemory|OfoDrop|BacklogDrop/ {printf "%s %s, ", $1, $2}')
echo "kernel drop/pressure counters over the run (nstat deltas): ${DROPS:-none moved}"
python3 - "$DATA" "$N" "$IDLE" "$FULL" <<'PY'
import json, sys, glob
data, n = sys.argv[1], int(sys.argv[2])
tot = {"listeners": 0, "passed": 0, "unanswered": 0, "stalls": 0, "faults": {}}
lat = []
for f in sorted(glob.glob(f"{data}/load-*.json")):
    r = json.load(open(f))
    for k in ("listeners", "passed", "unanswered", "stalls"):
        tot[k] += r[k]
    for k, v in r["validation_faults"].items():
        tot["faults"][k] = tot["faults"].get(k, 0) + v
    lat.append((r["latency_ms"]["p50"], r["latency_ms"]["p99"]))
    print(f"  {f.rsplit('/', 1)[1]}: {r['passed']}/{r['listeners']} passed, answered {r['statuses']}, stalls {r['stalls']}, latency p50/p99 {r['latency_ms']['p50']}/{r['latency_ms']['p99']} ms, load CPU {r['load_cpu_seconds']:.1f} s")
print(f"total: {tot['passed']}/{tot['listeners']} passed, {tot['unanswered']} unanswered, {tot['stalls']} stalls, faults {tot['faults']}")
PY
