#!/usr/bin/env bash
# Rolls the Workers of one environment back to an earlier version with `wrangler rollback`, in
# reverse dependency order (voice-router, geo-router, rate-limiter, then auth-validator): the
# public Worker stops calling a newer internal API before that API goes back.
#
# Usage: wrangler/rollback.sh --env ENV [options]
#   --env ENV            development, staging or production
#   --to-tag TAG         roll back to the versions tagged TAG (wrangler/deploy.sh --tag; the
#                        pipeline tags with the git commit); default: each Worker's version
#                        before its current deployment
#   --only WORKER        roll back only this Worker (repeatable)
#   --message TEXT       why (recorded with the rollback)
#   --dry-run            show each Worker's current deployment and what it would go back to;
#                        change nothing
#   --yes                do not ask for confirmation (CI); without it the script asks on a
#                        terminal and refuses to run without one
#
# A rollback swaps code, vars and bindings only: KV data, Durable Object storage and migrations
# stay as they are, and wrangler asks again when a secret changed since the target version.
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
to_tag=""
message=""
dry_run=false
yes=false
only=()
while [ $# -gt 0 ]; do
  case "$1" in
    --env) environment=${2:?--env needs a value}; shift 2 ;;
    --to-tag) to_tag=${2:?--to-tag needs a value}; shift 2 ;;
    --only) only+=("${2:?--only needs a Worker}"); shift 2 ;;
    --message) message=${2:?--message needs a value}; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    --yes) yes=true; shift ;;
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
# The wrangler to run: the pinned one (tests/e2e/deploy.test.mjs puts a stand-in here).
wrangler=${AYBIZA_WRANGLER:-wrangler}
command -v "$wrangler" >/dev/null 2>&1 || fail "wrangler is not installed: run tests/stack/setup.sh"
[ -n "$message" ] || message="rollback by ${GITHUB_ACTOR:-$(id -un)}${to_tag:+ to $to_tag}"

# Reverse of the deploy order.
read -ra deploy_order <<<"$WORKERS"
selected=()
for ((i = ${#deploy_order[@]} - 1; i >= 0; i--)); do
  worker=${deploy_order[i]}
  if [ ${#only[@]} -eq 0 ] || [[ " ${only[*]} " == *" $worker "* ]]; then selected+=("$worker"); fi
done

declare -A target
for worker in "${selected[@]}"; do
  step "$worker ($environment): current deployment"
  "$wrangler" deployments status -c "wrangler/$worker.toml" --env "$environment" 2>&1 | sed 's/^/      /' ||
    fail "cannot read the deployments of $worker ($environment): is it deployed, and are the credentials set?"
  if [ -n "$to_tag" ]; then
    versions=$("$wrangler" versions list --json -c "wrangler/$worker.toml" --env "$environment") ||
      fail "cannot list the versions of $worker ($environment)"
    target[$worker]=$(printf '%s' "$versions" | node "$ROOT/wrangler/deploy-tools.mjs" version-for-tag "$to_tag") ||
      fail "$worker has no version tagged '$to_tag' among its 10 most recent; pass no --to-tag (previous version) or roll back by version id with wrangler rollback"
    note "goes back to version ${target[$worker]} (tagged $to_tag)"
  else
    target[$worker]=""
    note "goes back to the version before its current deployment"
  fi
done

plan=()
for worker in "${selected[@]}"; do
  plan+=("wrangler rollback ${target[$worker]:+${target[$worker]} }-c wrangler/$worker.toml --env $environment --message '$message' --yes")
done
step "plan (in this order)"
printf '    %s\n' "${plan[@]}"
if $dry_run; then
  step "dry run: nothing rolled back"
  exit 0
fi
if ! $yes; then
  [ -t 0 ] || fail "not on a terminal: pass --yes to roll back without confirmation (or --dry-run to look)"
  printf '\nType the environment name (%s) to roll back %s Worker(s): ' "$environment" "${#selected[@]}"
  read -r answer
  [ "$answer" = "$environment" ] || fail "not confirmed; nothing rolled back"
fi

done_workers=()
for worker in "${selected[@]}"; do
  step "rolling back $worker ($environment)"
  args=()
  [ -z "${target[$worker]}" ] || args+=("${target[$worker]}")
  if ! "$wrangler" rollback "${args[@]}" -c "wrangler/$worker.toml" --env "$environment" --message "$message" --yes 2>&1 | sed 's/^/      /'; then
    [ ${#done_workers[@]} -eq 0 ] || note "already rolled back: ${done_workers[*]}"
    fail "rolling back $worker failed; the Workers after it were not touched"
  fi
  done_workers+=("$worker")
done
step "rolled back in $environment: ${done_workers[*]}"
note "check it: node wrangler/smoke.mjs --env $environment --edge-url https://<voice-router host>"
