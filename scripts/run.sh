#!/usr/bin/env bash
# Starts Tribune with embedded defaults: SQLite and recordings under ./data,
# listening on 127.0.0.1:8080. Extra arguments go to `tribune serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh run
cargo build --release --bin tribune
exec target/release/tribune serve --data "${TRIBUNE_DATA:-data}" "$@"
