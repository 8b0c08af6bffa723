#!/usr/bin/env bash
# The test command (README: `make test`): formatting, lints for host and wasm32, the deploy
# path's linters (actionlint, shellcheck, cfn-lint), the console's type check, build and gzip
# budget, native tests, the Workers' wasm builds, `wrangler deploy --dry-run` for every Worker and
# environment, and the end-to-end tests: the built Workers (and the console's static assets) in
# workerd plus the origin, PostgreSQL and Redis on free loopback ports, driven over HTTP as a
# client would and, for the console, by Chromium.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
source "$ROOT/tests/stack/services.sh"
cd "$ROOT"

target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
work=$(mktemp -d "${TMPDIR:-/tmp}/aybiza-test.XXXXXX")
# mktemp makes it 0700; run as root, the postgres user must still reach its data directory inside.
chmod 0755 "$work"
cleanup() {
  stop_databases
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

run_started=$(now_s)
total=11
wasm_packages=(-p shared -p edge-io -p voice-router -p auth-validator -p geo-router -p rate-limiter)

"$ROOT/tests/stack/setup.sh" --with-databases --with-linters --with-browser

step "[1/$total] cargo fmt --check"
cargo fmt --all -- --check

step "[2/$total] deploy path: actionlint (workflows), shellcheck (scripts), cfn-lint (templates)"
"$ROOT/tests/stack/lint.sh"

step "[3/$total] console: tsc --noEmit, its logic tests, esbuild build within the gzip budget (workers/voice-router/console)"
(cd "$CONSOLE_DIR" && node_modules/.bin/tsc --noEmit -p . && node --test "test/*.test.mjs" && node build.mjs)

step "[4/$total] clippy, host, every target, -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "[5/$total] clippy, wasm32-unknown-unknown (shared and the Workers), -D warnings"
cargo clippy --target wasm32-unknown-unknown "${wasm_packages[@]}" --locked -- -D warnings

step "[6/$total] shared builds for wasm32-unknown-unknown"
cargo build --target wasm32-unknown-unknown -p shared --locked

step "[7/$total] PostgreSQL and Redis on free loopback ports"
start_databases "$work/databases"

step "[8/$total] cargo test (native: shared, origin against PostgreSQL/Redis/the Bedrock emulator, Workers' pure parts)"
# DATABASE_URL and REDIS_URL (exported by start_databases) are what the origin's integration
# tests run against; each test takes its own schema and key prefix.
cargo test --workspace --locked

step "[9/$total] the four Workers to wasm (worker-build --release)"
"$ROOT/tests/stack/build.sh"

step "[10/$total] wrangler deploy --dry-run for every Worker and environment"
bundles=$target_dir/wrangler-dry-run
"$ROOT/tests/stack/dry-run.sh" "$bundles"

step "[11/$total] end-to-end: Workers in workerd + origin + Bedrock emulator, the console in Chromium (node --test tests/e2e)"
cargo build -p origin -p bedrock-emulator --locked
export ORIGIN_BIN=$target_dir/debug/origin
export EMULATOR_BIN=$target_dir/debug/bedrock-emulator
export WORKER_BUNDLES_DIR=$bundles/development
CHROMIUM_BIN=$(browser_bin) || fail "no Chromium for the console's browser test: run tests/stack/setup.sh --with-browser"
export CHROMIUM_BIN
# A file's tests share one stack start; the limit is per test and per file, so a loaded 2-core
# machine must not turn the slowest file (deploy.test.mjs, ~110 s alone) into a failure.
node --test --test-concurrency=1 --test-timeout=300000 "tests/e2e/**/*.test.mjs"

step "all green in $(elapsed_since "$run_started")"
