#!/usr/bin/env bash
# Deploys the four Workers to one environment, in dependency order (auth-validator,
# rate-limiter, geo-router, then voice-router), so every service binding has its target before
# the Worker that binds it. Run from anywhere; wrangler runs from the workspace root.
#
# Usage: wrangler/deploy.sh --env ENV [options]
#   --env ENV            development, staging or production (the configs' environments)
#   --dry-run            build and check everything (`wrangler deploy --dry-run`), upload nothing
#   --outdir DIR         keep each uploaded bundle in DIR/<worker> (wrangler/smoke.mjs replays
#                        geo-router from there); default: a temporary folder
#   --var WORKER:NAME=VALUE   override one var of one Worker for this deploy (repeatable), e.g.
#                        voice-router:ORIGIN_URL=https://origin.acme.io or
#                        geo-router:GEO_REGIONS='{"us-east-1":{"origin_url":"https://..."}}'
#   --domain HOST        serve voice-router on this custom domain (its zone must be on the account)
#   --tag TAG            tag each new Worker version (the pipeline uses the git commit), so
#                        wrangler/rollback.sh --to-tag TAG can find it again
#   --message TEXT       message of each new Worker version
#   --only WORKER        deploy only this Worker (repeatable; order stays the dependency order)
#
# Secrets are uploaded with each version, from the environment only (never files or arguments):
#   WORKER_SECRETS_AUTH_VALIDATOR, WORKER_SECRETS_RATE_LIMITER, WORKER_SECRETS_GEO_ROUTER,
#   WORKER_SECRETS_VOICE_ROUTER   JSON objects {"NAME": "value"}; and EDGE_SIGNING_SECRET for
#   voice-router (the value the origin reads from AWS Secrets Manager). Secrets not given are left
#   as they are on Cloudflare. Before anything is uploaded, a real deploy stops when a var still
#   holds a placeholder or loopback address, or a Worker would lack a secret it needs
#   (voice-router: EDGE_SIGNING_SECRET, rate-limiter: RATE_LIMIT_KEY_SECRET).
# Credentials: CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID (or `wrangler login`).
set -euo pipefail
# shellcheck source=tests/stack/env.sh
source "$(dirname "${BASH_SOURCE[0]}")/../tests/stack/env.sh"
cd "$ROOT"

usage() {
  sed -n '/^# Usage:/,/^# Credentials:/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

environment=""
dry_run=false
outdir=""
tag=""
message=""
domain=""
only=()
overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --env) environment=${2:?--env needs a value}; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    --outdir) outdir=${2:?--outdir needs a value}; shift 2 ;;
    --var) overrides+=("${2:?--var needs WORKER:NAME=VALUE}"); shift 2 ;;
    --domain) domain=${2:?--domain needs a host name}; shift 2 ;;
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --message) message=${2:?--message needs a value}; shift 2 ;;
    --only) only+=("${2:?--only needs a Worker}"); shift 2 ;;
    -h | --help) usage 0 ;;
    *) printf 'unknown argument: %s\n\n' "$1" >&2; usage 2 ;;
  esac
done
case "$environment" in
  development | staging | production) ;;
  "") printf 'missing --env\n\n' >&2; usage 2 ;;
  *) fail "unknown environment '$environment' (development, staging or production)" ;;
esac
for worker in "${only[@]}"; do
  case " $WORKERS " in *" $worker "*) ;; *) fail "unknown Worker '$worker' (one of: $WORKERS)" ;; esac
done
command -v wrangler >/dev/null 2>&1 || fail "wrangler is not installed: run tests/stack/setup.sh"

tools=(node "$ROOT/wrangler/deploy-tools.mjs")
selected=()
for worker in $WORKERS; do
  if [ ${#only[@]} -eq 0 ] || [[ " ${only[*]} " == *" $worker "* ]]; then selected+=("$worker"); fi
done
if [ -z "$outdir" ]; then
  outdir=$(mktemp -d "${TMPDIR:-/tmp}/aybiza-workers.XXXXXX")
fi
mkdir -p "$outdir"

# The overrides of one Worker as wrangler flags: `--var NAME:VALUE`.
var_flags() {
  local spec
  for spec in "${overrides[@]}"; do
    if [[ "$spec" == "$1:"* ]]; then
      spec=${spec#"$1:"}
      printf '%s\0%s\0' --var "${spec%%=*}:${spec#*=}"
    fi
  done
}

step "checking the $environment configuration of: ${selected[*]}"
if problems=$("${tools[@]}" check "$environment" "${overrides[@]}"); then
  note "no placeholder or loopback values"
else
  [ -n "$problems" ] || fail "checking the configuration failed"
  printf '%s\n' "$problems" | sed 's/^/    /'
  if $dry_run; then
    note "(a real deploy refuses these; fix the configs or pass --var overrides)"
  else
    fail "the $environment configuration is not ready for a deploy: replace the values above in wrangler/*.toml or pass --var WORKER:NAME=VALUE (docs/operations.md, \"First deploy\")"
  fi
fi

declare -A secret_names
for worker in "${selected[@]}"; do
  secret_names[$worker]=$("${tools[@]}" secret-names "$worker" | paste -sd, -) || fail "reading the secrets for $worker failed"
  note "$worker: secrets uploaded with this version: ${secret_names[$worker]:-none (those already set stay)}"
done
if ! $dry_run; then
  # Stop before anything is uploaded, not halfway through the chain.
  for worker in "${selected[@]}"; do
    [ -n "$("${tools[@]}" required "$worker")" ] || continue
    if ! listed=$(wrangler secret list --format json -c "wrangler/$worker.toml" --env "$environment" 2>/dev/null); then
      listed="[]" # the Worker does not exist yet: only what this run uploads counts
    fi
    missing=$(printf '%s' "$listed" | "${tools[@]}" missing "$worker") || fail "checking the secrets of $worker failed"
    [ -z "$missing" ] || fail "$worker ($environment) would run without $(echo "$missing" | paste -sd, -): provide it (docs/operations.md, \"Secrets\") before deploying"
  done
fi

deployed=()
for worker in "${selected[@]}"; do
  flags=(-c "wrangler/$worker.toml" --env "$environment" --outdir "$outdir/$worker")
  while IFS= read -r -d '' flag; do flags+=("$flag"); done < <(var_flags "$worker")
  if [ "$worker" = voice-router ] && [ -n "$domain" ]; then flags+=(--domain "$domain"); fi
  if $dry_run; then
    flags+=(--dry-run)
  else
    [ -z "$tag" ] || flags+=(--tag "$tag")
    [ -z "$message" ] || flags+=(--message "$message")
  fi
  step "wrangler deploy $worker --env $environment$($dry_run && echo ' --dry-run')"
  log=$(mktemp)
  status=0
  if [ -n "${secret_names[$worker]}" ]; then
    "${tools[@]}" secrets "$worker" | wrangler deploy "${flags[@]}" --secrets-file /dev/stdin >"$log" 2>&1 || status=$?
  else
    wrangler deploy "${flags[@]}" </dev/null >"$log" 2>&1 || status=$?
  fi
  # The build's own chatter only when it failed.
  if [ "$status" -eq 0 ]; then
    { grep -vE '^\s*$|Downloading|Using custom|^\[custom build\]' "$log" || true; } | sed 's/^/      /'
  else
    sed 's/^/      /' "$log"
  fi
  rm -f "$log"
  if [ "$status" -ne 0 ]; then
    [ ${#deployed[@]} -eq 0 ] || note "already deployed in this run: ${deployed[*]} (undo with wrangler/rollback.sh --env $environment --only <worker>)"
    fail "wrangler deploy failed for $worker ($environment); the Workers after it were not deployed"
  fi
  deployed+=("$worker")
done

if $dry_run; then
  step "dry run complete: nothing uploaded; bundles in $outdir"
else
  step "deployed to $environment: ${deployed[*]}; bundles in $outdir"
  note "check it: node wrangler/smoke.mjs --env $environment --edge-url https://<voice-router host> --bundles $outdir"
  note "undo it:  wrangler/rollback.sh --env $environment"
fi
