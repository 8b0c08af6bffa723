#!/usr/bin/env bash
# `wrangler deploy --dry-run` for every Worker and environment: proves each config can deploy,
# and leaves the exact bundles that would be uploaded in $OUT/<environment>/<worker>.
# Usage: dry-run.sh OUT
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

out=${1:?usage: dry-run.sh OUT}
cd "$ROOT"
for environment in $ENVIRONMENTS; do
  for worker in $WORKERS; do
    log=$(mktemp)
    # wrangler names the wasm by its hash and never clears the folder: start empty, so it holds
    # exactly this bundle (the benches and e2e tests load every module in it).
    rm -rf "${out:?}/$environment/$worker"
    if wrangler deploy --dry-run --env "$environment" -c "wrangler/$worker.toml" \
      --outdir "$out/$environment/$worker" >"$log" 2>&1; then
      # voice-router also uploads the console (static assets): wrangler says how many files.
      assets=$(grep -o 'Read [0-9]* files\? from the assets directory' "$log" | sed 's/ from the assets directory/ of static assets/' || true)
      note "$environment/$worker: $(grep -o 'Total Upload:.*' "$log" || echo ok)${assets:+; $assets}"
      rm -f "$log"
    else
      cat "$log"
      rm -f "$log"
      fail "wrangler deploy --dry-run failed for $worker ($environment)"
    fi
  done
done
