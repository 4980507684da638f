#!/usr/bin/env bash
# The soak: one space for SECS (default 1800) with a source that drops and
# reconnects every few minutes, WebRTC speakers joining and leaving,
# listeners churning (20 at a time, 5-30 s each, every byte checked) and
# one restart (SIGTERM) in the middle. Prints the node's memory, open files
# and tasks at its baseline and at the end, and the recording's length;
# fails if the recording does not decode end to end or anything leaked.
# Usage: bench/soak.sh [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
SOAK_SECS=${1:-1800} cargo test --release -q -p tribune-server --test soak -- --ignored --nocapture 2>&1 \
  | grep -vE '^(running|$)'
