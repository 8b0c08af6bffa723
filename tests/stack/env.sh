# Sourced by every stack script: where the pinned tools live and how to reach them.
# Idempotent and side-effect free (it only sets variables and PATH).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export ROOT

# Caches that survive between runs (CI reuses them when present, never depends on them).
CACHE_DIR=${AYBIZA_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aybiza-edge}
# The project's own tool folder (git-ignored): a Node 22 when the machine's Node is older.
TOOLS_DIR=$ROOT/.tools

# Pins. wasm-bindgen's CLI must equal the library in Cargo.lock, so it is read from there.
WORKER_BUILD_VERSION=0.8.7
NODE_MIN_VERSION=22.12.0
NODE_FALLBACK_VERSION=22.23.3
WASM_BINDGEN_VERSION=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3; exit }' "$ROOT/Cargo.lock")

WORKER_BUILD_ROOT=$CACHE_DIR/cargo-tools/worker-build-$WORKER_BUILD_VERSION
WASM_BINDGEN_ROOT=$CACHE_DIR/cargo-tools/wasm-bindgen-cli-$WASM_BINDGEN_VERSION
# Linters of the test command (tests/stack/lint.sh): a virtualenv named after their pin files.
LINTERS_ROOT=$CACHE_DIR/python-tools/linters-$(cat "$ROOT/tests/stack/linters.txt" "$ROOT/tests/stack/cfn-lint.txt" | cksum | cut -d' ' -f1)

node_platform_package() {
  local os arch
  case "$(uname -s)" in
    Linux) os=linux ;;
    Darwin) os=darwin ;;
    *) os=unsupported ;;
  esac
  case "$(uname -m)" in
    x86_64 | amd64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) arch=unsupported ;;
  esac
  echo "node-$os-$arch"
}
NODE_FALLBACK_BIN=$TOOLS_DIR/node/node_modules/$(node_platform_package)/bin

# version_at_least HAVE WANT: true when dotted version HAVE >= WANT.
version_at_least() {
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]
}

system_node_is_recent() {
  command -v node >/dev/null 2>&1 || return 1
  version_at_least "$(node --version 2>/dev/null | tr -d v)" "$NODE_MIN_VERSION"
}

# NODE_SOURCE: machine (its node is recent enough), tools (.tools/ has one), or missing.
if system_node_is_recent; then
  NODE_SOURCE=machine
else
  # On PATH even before setup.sh installs it: a script that sources this file and then runs
  # setup.sh must find the new node without sourcing it again.
  PATH=$NODE_FALLBACK_BIN:$PATH
  if [ -x "$NODE_FALLBACK_BIN/node" ]; then NODE_SOURCE=tools; else NODE_SOURCE=missing; fi
fi
PATH=$WORKER_BUILD_ROOT/bin:$WASM_BINDGEN_ROOT/bin:$ROOT/wrangler/node_modules/.bin:$PATH
export PATH

# worker-build would download wasm-bindgen and wasm-opt from GitHub; use the pinned local ones.
export WASM_BINDGEN_BIN=$WASM_BINDGEN_ROOT/bin/wasm-bindgen
export WASM_OPT_BIN=$ROOT/wrangler/node_modules/.bin/wasm-opt
# No telemetry, and no fetch of request.cf from the internet in local runs and tests.
export WRANGLER_SEND_METRICS=false
export CLOUDFLARE_CF_FETCH_ENABLED=false

WORKERS="auth-validator rate-limiter geo-router voice-router"
# The web console voice-router serves as static assets (its npm packages: setup.sh; its build:
# voice-router's [build] command in wrangler/voice-router.toml, and build.sh).
CONSOLE_DIR=$ROOT/workers/voice-router/console

# The Chromium the console's browser test drives: CHROMIUM_BIN, else the first on the machine
# (Debian's package installs /usr/bin/chromium; CI images often carry Google Chrome).
browser_bin() {
  local candidate
  for candidate in "${CHROMIUM_BIN:-}" chromium chromium-browser google-chrome-stable google-chrome; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}
ENVIRONMENTS=${ENVIRONMENTS:-"development staging production"}

# Output helpers: every step says what it does; steps are numbered when a script knows its total.
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
note() { printf '    %s\n' "$*"; }
fail() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# A free TCP port on loopback (the kernel's choice; released just before use).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Seconds since the epoch with fractions, for step timings.
now_s() { date +%s.%N; }
elapsed_since() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.1fs", b - a }'; }
