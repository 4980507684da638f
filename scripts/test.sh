#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests of the sans-IO core and
# integration tests against the real binary with real ffmpeg.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh test
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
