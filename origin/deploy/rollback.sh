#!/usr/bin/env bash
# Rolls the origin of one environment in one region back to an earlier task definition
# revision: points the ECS service at it (a rolling deploy, as fast as tasks start), waits for
# the service to be stable and, when it can tell, for /health through the load balancer.
# Revisions stay ACTIVE after a deploy (origin.yaml retains them), so the previous one is there.
#
# Usage: origin/deploy/rollback.sh --env ENV --region REGION [options]
#   --env ENV          development, staging or production (stack aybiza-origin-ENV)
#   --region REGION    the AWS region
#   --to TASKDEF       the revision to go back to (family:revision or its ARN); default the
#                      newest ACTIVE revision older than the one running
#   --stack-name NAME  default aybiza-origin-ENV
#   --health-url URL   the origin through its load balancer, checked afterwards (default: this
#                      region's origin_url in geo-router's GEO_REGIONS for ENV, when it is real)
#   --dry-run          show what runs now and what it would go back to; change nothing
#   --yes              do not ask for confirmation (CI); without it the script asks on a
#                      terminal and refuses to run without one
#
# CloudFormation still records the newer image afterwards: the next pipeline deploy replaces
# the service's task definition again. To stay on the old code, deploy the old commit (its image
# is still in ECR), which also brings the stack back in line.
# Needs: aws (v2), curl, python3 (>= 3.11); AWS credentials for the account.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

usage() {
  sed -n '/^# Usage:/,/^# Needs:/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}
step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

environment=""
region=""
to=""
stack=""
health_url=""
dry_run=false
yes=false
while [ $# -gt 0 ]; do
  case "$1" in
    --env) environment=${2:?--env needs a value}; shift 2 ;;
    --region) region=${2:?--region needs a value}; shift 2 ;;
    --to) to=${2:?--to needs a task definition}; shift 2 ;;
    --stack-name) stack=${2:?--stack-name needs a value}; shift 2 ;;
    --health-url) health_url=${2:?--health-url needs a value}; shift 2 ;;
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
[[ "$region" =~ ^[a-z]{2}(-gov)?-[a-z]+-[0-9]$ ]] || fail "--region must be an AWS region such as us-east-1 (got '$region')"
stack=${stack:-aybiza-origin-$environment}
for tool in aws python3; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is required"
done
export AWS_PAGER=""

output() {
  aws cloudformation describe-stacks --region "$region" --stack-name "$stack" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}
# The revision number at the end of a task definition ARN or family:revision.
revision_of() { printf '%s\n' "${1##*:}"; }
image_of() {
  aws ecs describe-task-definition --region "$region" --task-definition "$1" \
    --query 'taskDefinition.containerDefinitions[0].image' --output text
}

step "origin of $environment in $region (stack $stack)"
cluster=$(output ClusterName) || fail "cannot read stack $stack in $region: does it exist, and are the credentials set?"
service=$(output ServiceName)
family=$(output TaskDefinitionFamily)
[ -n "$cluster" ] && [ -n "$service" ] && [ -n "$family" ] && [ "$cluster" != None ] ||
  fail "stack $stack has no ClusterName/ServiceName/TaskDefinitionFamily outputs: is it the origin stack?"
current=$(aws ecs describe-services --region "$region" --cluster "$cluster" --services "$service" \
  --query 'services[0].taskDefinition' --output text)
[[ "$current" == *":task-definition/"* ]] || fail "cannot read the service $cluster/$service"
note "running now:  $current ($(image_of "$current"))"

if [ -z "$to" ]; then
  current_revision=$(revision_of "$current")
  # Newest first; the first one older than the running revision.
  for arn in $(aws ecs list-task-definitions --region "$region" --family-prefix "$family" \
    --status ACTIVE --sort DESC --query 'taskDefinitionArns[]' --output text); do
    [[ "${arn%:*}" == *"/$family" ]] || continue # another family that shares the prefix
    if [ "$(revision_of "$arn")" -lt "$current_revision" ]; then
      to=$arn
      break
    fi
  done
  [ -n "$to" ] || fail "no ACTIVE revision of $family older than $current_revision: pass --to, or redeploy an older commit"
fi
status=$(aws ecs describe-task-definition --region "$region" --task-definition "$to" \
  --query 'taskDefinition.status' --output text) || fail "no task definition $to"
[ "$status" = ACTIVE ] || fail "$to is $status: ECS cannot run it again; redeploy that commit's image instead"
target=$(aws ecs describe-task-definition --region "$region" --task-definition "$to" \
  --query 'taskDefinition.taskDefinitionArn' --output text)
[ "$target" != "$current" ] || fail "$to is what runs already"
note "goes back to: $target ($(image_of "$target"))"

if [ -z "$health_url" ]; then
  health_url=$(cd "$root" && python3 - "$environment" "$region" <<'PY' 2>/dev/null
import json, pathlib, sys, tomllib
environment, region = sys.argv[1:3]
config = tomllib.loads(pathlib.Path("wrangler/geo-router.toml").read_text())
regions = config["env"][environment]["vars"]["GEO_REGIONS"]
if isinstance(regions, str):
    regions = json.loads(regions)
print(regions[region]["origin_url"].rstrip("/"))
PY
  ) || health_url=""
  case "$health_url" in *://127.* | *://localhost* | *example.com*) health_url="" ;; esac
fi

command=(aws ecs update-service --region "$region" --cluster "$cluster" --service "$service" --task-definition "$target")
step "plan"
printf '    '
printf '%q ' "${command[@]}"
printf '\n    aws ecs wait services-stable --region %s --cluster %s --services %s\n' "$region" "$cluster" "$service"
[ -z "$health_url" ] || note "then $health_url/health"
if $dry_run; then
  step "dry run: nothing rolled back"
  exit 0
fi
if ! $yes; then
  [ -t 0 ] || fail "not on a terminal: pass --yes to roll back without confirmation (or --dry-run to look)"
  printf '\nType the environment name (%s) to roll the origin in %s back: ' "$environment" "$region"
  read -r answer
  [ "$answer" = "$environment" ] || fail "not confirmed; nothing rolled back"
fi

step "rolling back"
"${command[@]}" --query 'service.deployments[0].id' --output text | sed 's/^/    deployment /'
aws ecs wait services-stable --region "$region" --cluster "$cluster" --services "$service" ||
  fail "the service did not become stable; see: aws ecs describe-services --region $region --cluster $cluster --services $service"
if [ -n "$health_url" ]; then
  deadline=$((SECONDS + 300))
  until curl -fsS --max-time 5 "$health_url/health" 2>/dev/null | grep -q '"status":"ok"'; do
    [ $SECONDS -lt $deadline ] || fail "$health_url/health is not healthy after 300 s"
    sleep 3
  done
  note "$health_url/health: ok"
fi
step "origin of $environment in $region runs $target"
note "CloudFormation still records the newer image; deploy the old commit to make this permanent"
