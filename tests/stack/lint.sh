#!/usr/bin/env bash
# The deploy path's linters (a step of the test command; seconds once installed):
#   actionlint  .github/workflows/*.yml, with shellcheck on every `run:` script
#   shellcheck  the deploy and rollback scripts (wrangler/*.sh, origin/deploy/*.sh)
#   cfn-lint    the CloudFormation templates (origin/deploy/*.yaml)
# Installs nothing: `tests/stack/setup.sh --with-linters` puts them in the cache folder.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ROOT"

[ -f "$LINTERS_ROOT/.installed" ] || fail "the linters are not installed: run tests/stack/setup.sh --with-linters"
bin=$LINTERS_ROOT/bin
shopt -s nullglob

workflows=(.github/workflows/*.yml .github/workflows/*.yaml)
[ ${#workflows[@]} -gt 0 ] || fail "no workflows in .github/workflows"
note "actionlint: ${workflows[*]}"
"$bin/actionlint" -color=false -shellcheck "$bin/shellcheck" "${workflows[@]}"

scripts=(wrangler/*.sh origin/deploy/*.sh)
note "shellcheck: ${scripts[*]}"
"$bin/shellcheck" --external-sources --severity=info "${scripts[@]}"

templates=(origin/deploy/*.yaml)
note "cfn-lint: ${templates[*]}"
"$bin/cfn-lint" "${templates[@]}"

note "clean"
