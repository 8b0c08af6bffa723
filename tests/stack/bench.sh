#!/usr/bin/env bash
# The benchmark command (README: `make bench`): builds the release artifacts and runs each
# benchmark in tests/bench (loopback only, bounded in time). Each prints its figures with their
# targets and the ratio to a baseline measured in the same run, and writes target/bench/*.json.
# Usage: bench.sh [area ...]   (default: every tests/bench/*.bench.mjs)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
"$ROOT/tests/stack/setup.sh"

step "release builds: the four Workers (deploy bundles) and the origin (server profile)"
"$ROOT/tests/stack/build.sh"
ENVIRONMENTS=development "$ROOT/tests/stack/dry-run.sh" "$target_dir/wrangler-dry-run"
cargo build --profile server --locked -p origin -p bedrock-emulator
export WORKER_BUNDLES_DIR=$target_dir/wrangler-dry-run/development
export ORIGIN_BIN=$target_dir/server/origin
export EMULATOR_BIN=$target_dir/server/bedrock-emulator
export LOAD_BIN=$target_dir/server/origin-load

shopt -s nullglob
areas=${*:-$(for f in tests/bench/*.bench.mjs; do basename "$f" .bench.mjs; done)}
[ -n "$areas" ] || fail "no benchmarks in tests/bench"
missed=""
for area in $areas; do
  step "benchmark: $area"
  node "tests/bench/$area.bench.mjs" || missed="$missed $area"
done
[ -z "$missed" ] || fail "targets missed or benchmark failed:$missed"
step "benchmarks done; JSON in $target_dir/bench/"
