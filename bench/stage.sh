#!/usr/bin/env bash
# Stage benchmark: WebRTC speakers (str0m peers with libopus microphones)
# on the real binary over loopback. Prints speaker-to-speaker latency
# (through the mixer's jitter buffer and mix-minus), speaker-to-listener
# latency (through the program track to live.opus), and the server's CPU
# per speaker with 2, 6 and 13 speakers. Bounded: about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh run
cargo test --release -q -p tribune-server --test stage_bench -- --ignored --nocapture 2>&1 \
  | grep -vE '^(running|test result|$)'
