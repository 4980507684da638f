#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for a bounded time and prints,
# per target, the executions, coverage (cov = edges, ft = features) and the
# crashes found.
#
# Usage: bench/fuzz.sh [SECONDS_PER_TARGET] [TARGET ...]
#   SECONDS_PER_TARGET  default 60
#   TARGET ...          default: all of them
# Environment:
#   JOBS=N      targets fuzzed at once (default 1; each uses one core)
#   SANITIZER   address or none (default none: the targets are safe Rust and
#               ASan halves the speed; overflow checks and debug assertions
#               are on either way)
#
# Seeds come from fuzz/corpus/<target>/ (committed, see fuzz/seeds.py), with
# fuzz/dict/<target>.dict as a libFuzzer dictionary where there is one; what
# the fuzzer adds goes to fuzz/work/<target>/ and is reused by the next run.
# Crashes land in fuzz/artifacts/<target>/; reproduce one with
#   cargo +nightly fuzz run -s none TARGET fuzz/artifacts/TARGET/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
jobs="${JOBS:-1}"
sanitizer="${SANITIZER:-none}"

# --- what it needs on a fresh Debian machine ---------------------------------
if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
missing=()
command -v c++ >/dev/null || missing+=(g++)
command -v pkg-config >/dev/null || missing+=(pkg-config)
dpkg -s libopus-dev >/dev/null 2>&1 || missing+=(libopus-dev)
command -v cmake >/dev/null || missing+=(cmake)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked
fi

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

echo "building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)"
if ! cargo +nightly fuzz build -s "$sanitizer" >fuzz/build.log 2>&1; then
  tail -30 fuzz/build.log
  exit 1
fi
logs=fuzz/logs
mkdir -p "$logs"

run_one() {
  local t="$1"
  mkdir -p "fuzz/work/$t" "fuzz/corpus/$t" "fuzz/artifacts/$t"
  local before
  before=$(ls "fuzz/artifacts/$t" | wc -l)
  # -timeout: an input taking 10 s is a hang; -rss_limit_mb: a leak or a
  # blow-up is a finding too
  local dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  cargo +nightly fuzz run -s "$sanitizer" "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
    ${dict[@]+"${dict[@]}"} -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="fuzz/artifacts/$t/" >"$logs/$t.log" 2>&1 || true
  local after
  after=$(ls "fuzz/artifacts/$t" | wc -l)
  echo "$((after - before))" >"$logs/$t.crashes"
}

echo "fuzzing each target for ${secs}s, $jobs at a time; logs in $logs/"
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

printf '\n%-12s %12s %10s %8s %8s %8s %s\n' target runs exec/s cov ft corpus crashes
total_crashes=0
for t in "${targets[@]}"; do
  log="$logs/$t.log"
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  last=$(grep -E '^#[0-9]+' "$log" | grep 'cov:' | tail -1 || true)
  cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.*corp: \([0-9]*\).*/\1/p' <<<"$last")
  crashes=$(cat "$logs/$t.crashes" 2>/dev/null || echo "?")
  total_crashes=$((total_crashes + ${crashes//\?/0}))
  note=""
  if [ "$crashes" != 0 ]; then
    note=" -> $(grep -m1 -oE 'panicked at [^ ]*|ERROR: libFuzzer: [a-z-]*' "$log" || true)"
  fi
  printf '%-12s %12s %10s %8s %8s %8s %s%s\n' "$t" "${runs:-?}" "${speed:-?}" \
    "${cov:-?}" "${ft:-?}" "${corp:-?}" "$crashes" "$note"
done
echo
if [ "$total_crashes" -gt 0 ]; then
  echo "crashes found: see fuzz/artifacts/<target>/ and $logs/<target>.log"
  exit 1
fi
echo "no crashes"
