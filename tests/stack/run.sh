#!/usr/bin/env bash
# The run command (README: `make run`): builds and starts the whole stack locally —
# the Bedrock emulator (tests/bedrock-emulator), the origin on loopback with its embedded
# defaults (SQLite, in-process fan-out) streaming from that emulator through the real AWS SDK,
# and the four Workers together in workerd (`wrangler dev`, development environment) with KV,
# Durable Objects and service bindings wired, voice-router serving the web console at /console/
# (its [build] command bundles it; wrangler dev rebuilds it when its sources change). Ctrl-C
# stops everything it started.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

ORIGIN_PORT=${ORIGIN_PORT:-4000}
EDGE_PORT=${EDGE_PORT:-8787}
EMULATOR_PORT=${EMULATOR_PORT:-4005}
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
pids=()

# Stops a process and everything it started (wrangler runs workerd and esbuild under it).
kill_tree() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do
    kill_tree "$child"
  done
  kill -TERM "$1" 2>/dev/null || true
}
cleanup() {
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    step "stopping"
    for pid in "${pids[@]}"; do kill_tree "$pid"; done
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_is_free() {
  python3 -c 'import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1]))); s.close()' "$1" 2>/dev/null
}
http_status() {
  python3 - "$1" <<'PY' 2>/dev/null || echo 000
import sys, urllib.request, urllib.error
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as e:
    print(e.code)
PY
}

for port in "$ORIGIN_PORT" "$EDGE_PORT" "$EMULATOR_PORT"; do
  port_is_free "$port" || fail "port $port is in use; set ORIGIN_PORT / EDGE_PORT / EMULATOR_PORT to free ones"
done

"$ROOT/tests/stack/setup.sh"

# Local secrets: wrangler reads wrangler/.dev.vars (git-ignored) for every config in that folder.
if [ ! -f "$ROOT/wrangler/.dev.vars" ]; then
  cp "$ROOT/wrangler/.dev.vars.example" "$ROOT/wrangler/.dev.vars"
  note "created wrangler/.dev.vars from .dev.vars.example (development-only values)"
else
  # Variables the example gained since the copy was made are added, never overwritten.
  while IFS= read -r line; do
    case "$line" in '' | '#'*) continue ;; esac
    key=${line%%=*}
    if ! grep -q "^$key=" "$ROOT/wrangler/.dev.vars"; then
      printf '%s\n' "$line" >>"$ROOT/wrangler/.dev.vars"
      note "added $key to wrangler/.dev.vars from .dev.vars.example"
    fi
  done <"$ROOT/wrangler/.dev.vars.example"
fi

step "[1/3] Bedrock emulator and origin (cargo build -p origin -p bedrock-emulator)"
cargo build -p origin -p bedrock-emulator --locked
# Process substitution, not a pipe, so that $! is the process itself.
"$target_dir/debug/bedrock-emulator" --listen "127.0.0.1:$EMULATOR_PORT" --ttft-ms 300 --inter-token-ms 30 \
  > >(sed -u 's/^/[bedrock] /') 2>&1 &
pids+=($!)
# The origin and voice-router share the development signing secret of wrangler/.dev.vars.
edge_secret=$(sed -n 's/^EDGE_SIGNING_SECRET=//p' "$ROOT/wrangler/.dev.vars" | tail -n 1)
[ -n "$edge_secret" ] || edge_secret=$(sed -n 's/^EDGE_SIGNING_SECRET=//p' "$ROOT/wrangler/.dev.vars.example" | tail -n 1)
[ -n "$edge_secret" ] || fail "EDGE_SIGNING_SECRET is missing from wrangler/.dev.vars"
mkdir -p "$ROOT/.wrangler/origin"
LISTEN_ADDR=127.0.0.1:$ORIGIN_PORT LOG_FORMAT=text \
  EDGE_SIGNING_SECRET="$edge_secret" \
  DATABASE_URL="${DATABASE_URL:-sqlite://$ROOT/.wrangler/origin/origin.sqlite3?mode=rwc}" \
  BEDROCK_ENDPOINT_URL="http://127.0.0.1:$EMULATOR_PORT" \
  ORIGIN_ENVIRONMENT=development \
  AWS_ACCESS_KEY_ID=AKIDLOCALEMULATOR AWS_SECRET_ACCESS_KEY=local-emulator AWS_EC2_METADATA_DISABLED=true \
  "$target_dir/debug/origin" > >(sed -u 's/^/[origin] /') 2>&1 &
pids+=($!)

step "[2/3] the four Workers in workerd (wrangler dev builds them first; cold: a few minutes)"
wrangler dev --env development --ip 127.0.0.1 --port "$EDGE_PORT" --persist-to "$ROOT/.wrangler/state" \
  --var "ORIGIN_URL:http://127.0.0.1:$ORIGIN_PORT" \
  $(for worker in voice-router auth-validator rate-limiter geo-router; do printf -- '-c wrangler/%s.toml ' "$worker"; done) \
  > >(sed -u 's/^/[edge] /') 2>&1 &
pids+=($!)

step "[3/3] waiting for the edge to answer /health"
deadline=$((SECONDS + 900))
until [ "$(http_status "http://127.0.0.1:$EDGE_PORT/health")" = 200 ]; do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || fail "a process of the stack exited; see its output above"
  done
  [ $SECONDS -lt $deadline ] || fail "the edge did not become healthy within 15 minutes"
  sleep 2
done

# A development JWT to paste into the console (and to use with curl below).
dev_token=$(node "$ROOT/tests/stack/dev-token.mjs") || fail "making a development token failed"

cat <<MSG

$(printf '\033[1m')AYBIZA Edge is running locally.$(printf '\033[0m')
  console:              http://127.0.0.1:$EDGE_PORT/console/
                        sign in by pasting this development JWT (tenant dev-tenant, every scope, 12 hours):
                        $dev_token
  edge (voice-router):  curl http://127.0.0.1:$EDGE_PORT/health    all four Workers and the origin
  origin:               curl http://127.0.0.1:$ORIGIN_PORT/health   (/v1/… only with the edge's signature)
  Bedrock emulator:     curl http://127.0.0.1:$EMULATOR_PORT/control/stats   (the origin's model)

  Try a call (a development token from wrangler/.dev.vars, tenant dev-tenant):
    TOKEN=\$(node tests/stack/dev-token.mjs); AUTH="authorization: Bearer \$TOKEN"
    curl -X PUT  127.0.0.1:$EDGE_PORT/api/v1/agents/demo -H "\$AUTH" -d '{"name":"Demo","system_prompt":"Be brief.","greeting":"Hello!"}'
    curl -X POST 127.0.0.1:$EDGE_PORT/api/v1/calls -H "\$AUTH" -d '{"agent_id":"demo"}'      # → call_id
    curl -N -X POST 127.0.0.1:$EDGE_PORT/api/v1/calls/<call_id>/turns -H "\$AUTH" -d '{"text":"When are you open?"}'
  Ctrl-C stops everything.
MSG

wait -n "${pids[@]}" || true
fail "a process of the stack exited; stopping the rest"
