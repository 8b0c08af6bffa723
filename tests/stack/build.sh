#!/usr/bin/env bash
# Builds the four Workers to wasm (worker-build, release profile) and reports their gzip sizes;
# with voice-router, its web console too (as its wrangler [build] command does).
# Usage: build.sh [worker ...]   (default: all four)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

workers=${*:-$WORKERS}
for worker in $workers; do
  started=$(now_s)
  note "worker-build --release  workers/$worker"
  (cd "$ROOT/workers/$worker" && worker-build --release 2>&1 | grep -vE '^\s*$|Downloading|Using custom' | sed 's/^/      /') ||
    fail "building $worker failed"
  wasm=$ROOT/workers/$worker/build/index_bg.wasm
  [ -f "$wasm" ] || fail "worker-build produced no $wasm"
  note "$worker: $(stat -c %s "$wasm") bytes wasm, $(gzip -9 -c "$wasm" | wc -c) bytes gzip ($(elapsed_since "$started"))"
  if [ "$worker" = voice-router ]; then
    note "the console (esbuild) into workers/voice-router/console/dist"
    node "$CONSOLE_DIR/build.mjs" || fail "building the console failed"
  fi
done
