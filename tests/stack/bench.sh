#!/usr/bin/env bash
# The benchmark command (README: `make bench`): builds the release artifacts and runs each
# benchmark in tests/bench (loopback only, bounded in time). Each prints its figures with their
# targets and the ratio to a baseline measured in the same run and writes target/bench/<area>.json;
# at the end one table gathers them all (tests/bench/summary.mjs → target/bench/summary.json).
# Usage: bench.sh [area ...]   (default: edge auth rate-limiter geo origin tools, then any other
#                               tests/bench/*.bench.mjs)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$target_dir/bench"
timings=$target_dir/bench/timings.tsv
: >"$timings"
since_ms=$(date +%s%3N)

# timed NAME COMMAND...: runs COMMAND and records its wall time under NAME.
timed() {
  local name=$1 started status=0
  shift
  started=$(now_s)
  "$@" || status=$?
  awk -v a="$started" -v b="$(now_s)" -v n="$name" 'BEGIN { printf "%s\t%.1f\n", n, b - a }' >>"$timings"
  return $status
}

"$ROOT/tests/stack/setup.sh"

step "release builds: the four Workers (deploy bundles) and the origin (server profile)"
# `wrangler deploy --dry-run` runs each Worker's [build] command (worker-build --release) and
# leaves the bundles that would be uploaded: the benchmarks run exactly those.
timed "build: Workers" env ENVIRONMENTS=development "$ROOT/tests/stack/dry-run.sh" "$target_dir/wrangler-dry-run"
timed "build: origin" cargo build --profile server --locked -p origin -p bedrock-emulator
export WORKER_BUNDLES_DIR=$target_dir/wrangler-dry-run/development
export ORIGIN_BIN=$target_dir/server/origin
export EMULATOR_BIN=$target_dir/server/bedrock-emulator
export LOAD_BIN=$target_dir/server/origin-load

shopt -s nullglob
if [ $# -gt 0 ]; then
  areas="$*"
else
  areas="edge auth rate-limiter geo origin tools"
  for f in tests/bench/*.bench.mjs; do
    area=$(basename "$f" .bench.mjs)
    case " $areas " in *" $area "*) ;; *) areas="$areas $area" ;; esac
  done
fi
for area in $areas; do
  [ -f "tests/bench/$area.bench.mjs" ] || fail "no benchmark tests/bench/$area.bench.mjs"
done
failed=""
for area in $areas; do
  step "benchmark: $area"
  timed "$area" node "tests/bench/$area.bench.mjs" || failed="$failed $area"
done

step "summary: every area's figures with targets and baselines"
# shellcheck disable=SC2086  # areas is a word list
if ! node tests/bench/summary.mjs --since "$since_ms" --timings "$timings" $areas; then
  fail "targets missed or a benchmark failed${failed:+ (exit status from:$failed)}; JSON in $target_dir/bench/"
fi
step "benchmarks done; JSON in $target_dir/bench/ (summary.json: the table above)"
