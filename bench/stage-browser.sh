#!/usr/bin/env bash
# Stage benchmark in real browsers: speaker-to-speaker mouth-to-ear latency
# between two headless Chromium processes on loopback, through the release
# binary (WHIP in, mixer jitter buffer and mix-minus, WebRTC out), including
# Chrome's capture path, Opus encoder, NetEq jitter buffer and playout pull.
# Speaker A's fake microphone clicks every 713 ms; speaker B listens.
# web/e2e/latency.mjs measures and explains the figures (its header says
# exactly where "mouth" and "ear" are taken).
# Usage: [RUNS=n] bench/stage-browser.sh [latency.mjs options: --seconds N
#        --warmup N --apm --no-transform --jitter-target MS]
# Each run is a fresh pair of browsers and WebRTC sessions (the jitter
# buffers settle per session, so runs differ more than clicks within a run);
# with RUNS > 1 a last line sums up the runs. Bounded: about 45 s a run
# after the build. The figures depend on a quiet machine: the load average
# is printed with each run.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
cargo build --release -q --bin tribune
DATA=$(mktemp -d)
SPID=""
trap '[ -n "$SPID" ] && kill "$SPID" 2>/dev/null; wait 2>/dev/null; rm -rf "$DATA"' EXIT
target/release/tribune serve --listen 127.0.0.1:0 --data "$DATA" >"$DATA/stdout" 2>"$DATA/stderr" &
SPID=$!
BASE=""
for _ in $(seq 100); do
  BASE=$(sed -n 's/^tribune listening on \(http:\/\/[^ ]*\).*/\1/p' "$DATA/stdout" 2>/dev/null | head -1)
  [ -n "$BASE" ] && break
  kill -0 "$SPID" 2>/dev/null || { cat "$DATA/stderr" >&2; echo "tribune exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$BASE" ] || { echo "tribune did not start" >&2; exit 1; }
ADMIN=$(target/release/tribune token --data "$DATA" --role admin)
api() { curl -sf -X POST -H "Authorization: Bearer $1" -H 'Content-Type: application/json' ${3:+-d "$3"} "$BASE$2"; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
echo "machine: $(nproc) vCPU $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), $(free -g | awk '/^Mem:/{print $2}') GiB; tribune at $BASE"
RUNS=${RUNS:-1}
status=0
for run in $(seq "$RUNS"); do
  # a new space each run: a fresh mixer and fresh sessions
  SPACE=$(api "$ADMIN" /api/spaces "{\"title\":\"stage latency bench $run\"}")
  ID=$(echo "$SPACE" | field id)
  HOST=$(echo "$SPACE" | field host_token)
  api "$HOST" "/api/spaces/$ID/start" >/dev/null
  A=$(api "$HOST" "/api/spaces/$ID/tokens" '{"role":"speaker","identity":"a","ttl":"1h"}' | field token)
  B=$(api "$HOST" "/api/spaces/$ID/tokens" '{"role":"speaker","identity":"b","ttl":"1h"}' | field token)
  echo "run $run/$RUNS: load average $(cut -d' ' -f1-3 /proc/loadavg)"
  node web/e2e/latency.mjs "$BASE" "$ID" "$A" "$B" "$@" | tee -a "$DATA/results" || status=$?
  api "$HOST" "/api/spaces/$ID/end" >/dev/null || true
done
if [ "$RUNS" -gt 1 ]; then
  python3 - "$DATA/results" <<'PY'
import json, math, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ok = [r for r in runs if r.get("event") == "done"]
f = lambda k: " ".join(f"{r['mouth_to_ear'][k]:.0f}" for r in ok)
pooled = sorted(x for r in ok for x in r["latencies_ms"])
pct = lambda q: pooled[min(len(pooled) - 1, max(0, math.ceil(len(pooled) * q) - 1))] if pooled else float("nan")
print(f"{len(ok)}/{len(runs)} runs, mouth-to-ear: all {len(pooled)} clicks p50 {pct(0.5):.0f} ms, p95 {pct(0.95):.0f} ms; "
      f"per run p50 [{f('p50')}], p95 [{f('p95')}] ms; load average at the end [{' '.join(str(r['machine']['end_of_window']['load1']) for r in ok)}]")
PY
fi
exit $status
