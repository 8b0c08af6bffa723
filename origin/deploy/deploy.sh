#!/usr/bin/env bash
# Deploys the origin to one environment in one AWS region: pushes the image to that region's
# ECR repository, updates (or, the first time, creates) the CloudFormation stack of
# origin/deploy/origin.yaml with it, waits for the ECS service to be stable (a rolling deploy
# with health-check grace; the circuit breaker rolls a failing one back and the stack update
# fails), then for the origin's /health through the load balancer, and, when
# EDGE_SIGNING_SECRET is in the environment, for a signed /ready (database, Redis, Bedrock).
#
# Usage: origin/deploy/deploy.sh --env ENV --region REGION --image-tag TAG [options]
#   --env ENV              development, staging or production (stack aybiza-origin-ENV)
#   --region REGION        the AWS region, e.g. us-east-1
#   --image-tag TAG        the image's tag in ECR (the pipeline uses the git commit; tags are
#                          immutable, so a tag already in ECR is deployed without a push)
#   --local-image NAME     the local image to push (default aybiza-origin:TAG, as built by
#                          `docker build -f origin/Dockerfile -t aybiza-origin:TAG .`)
#   --repository NAME      the ECR repository (default aybiza-origin; created when missing)
#   --stack-name NAME      default aybiza-origin-ENV
#   --role-arn ARN         the role CloudFormation acts with (default $CFN_EXECUTION_ROLE_ARN;
#                          origin/deploy/github-deploy-role.yaml creates it)
#   --parameter KEY=VALUE  a stack parameter (repeatable); the first deploy needs VpcId, Subnets,
#                          LoadBalancerSecurityGroup, ListenerArn, EdgeSigningSecretArn and
#                          DatabaseUrlSecretArn; later deploys keep every value but Image
#   --health-url URL       the origin through its load balancer (default: this region's
#                          origin_url in geo-router's GEO_REGIONS for ENV)
#   --geo-regions JSON     GEO_REGIONS to read that default from, instead of wrangler/geo-router.toml
#   --timeout SECONDS      how long /health may take after the service is stable (default 300)
#   --dry-run              run the read-only calls, print every command that would change
#                          something, change nothing
# Needs: aws (v2), docker, curl, python3 (>= 3.11); AWS credentials for the account.
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
image_tag=""
local_image=""
repository=aybiza-origin
stack=""
role_arn=${CFN_EXECUTION_ROLE_ARN:-}
health_url=""
geo_regions=""
timeout=300
dry_run=false
parameters=()
while [ $# -gt 0 ]; do
  case "$1" in
    --env) environment=${2:?--env needs a value}; shift 2 ;;
    --region) region=${2:?--region needs a value}; shift 2 ;;
    --image-tag) image_tag=${2:?--image-tag needs a value}; shift 2 ;;
    --local-image) local_image=${2:?--local-image needs a value}; shift 2 ;;
    --repository) repository=${2:?--repository needs a value}; shift 2 ;;
    --stack-name) stack=${2:?--stack-name needs a value}; shift 2 ;;
    --role-arn) role_arn=${2:?--role-arn needs a value}; shift 2 ;;
    --parameter) parameters+=("${2:?--parameter needs KEY=VALUE}"); shift 2 ;;
    --health-url) health_url=${2:?--health-url needs a value}; shift 2 ;;
    --geo-regions) geo_regions=${2:?--geo-regions needs a value}; shift 2 ;;
    --timeout) timeout=${2:?--timeout needs a value}; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
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
[[ "$image_tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || fail "--image-tag must be a Docker tag (got '$image_tag')"
[[ "$timeout" =~ ^[0-9]+$ ]] || fail "--timeout must be whole seconds"
for parameter in "${parameters[@]}"; do
  [[ "$parameter" =~ ^[A-Za-z0-9]+=.*$ ]] || fail "--parameter '$parameter' is not KEY=VALUE"
  case "$parameter" in Image=* | EnvironmentName=*) fail "Image and EnvironmentName come from --image-tag and --env" ;; esac
done
stack=${stack:-aybiza-origin-$environment}
local_image=${local_image:-aybiza-origin:$image_tag}
for tool in aws curl python3; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is required"
done
export AWS_PAGER=""

# Runs a command that changes something, or only shows it in a dry run.
mutate() {
  if $dry_run; then
    printf '    would run:'
    printf ' %q' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# The origin's URL through its load balancer: geo-router probes the same one. An explicit
# --health-url is taken as given (e.g. an SSM port forward); the default must be a real host.
if [ -z "$health_url" ]; then
  health_url=$(cd "$root" && python3 - "$environment" "$region" "$geo_regions" <<'PY'
import json, pathlib, sys, tomllib
environment, region, override = sys.argv[1:4]
if override:
    regions = json.loads(override)
else:
    config = tomllib.loads(pathlib.Path("wrangler/geo-router.toml").read_text())
    regions = config["env"][environment]["vars"]["GEO_REGIONS"]
    if isinstance(regions, str):
        regions = json.loads(regions)
print(regions[region]["origin_url"].rstrip("/"))
PY
  ) || fail "no origin_url for $region in $environment's GEO_REGIONS: pass --health-url (or --geo-regions)"
  case "$health_url" in
    *://127.* | *://localhost* | *://\[::1\]* | *example.com*)
      $dry_run || fail "the health URL $health_url is a placeholder or loopback address: pass --health-url, or set $region's origin_url in geo-router's GEO_REGIONS for $environment"
      note "(the health URL $health_url is a placeholder; a real deploy refuses it)"
      ;;
  esac
fi

step "origin -> $environment in $region (stack $stack)$($dry_run && echo ', dry run')"
account=$(aws sts get-caller-identity --query Account --output text) || fail "no AWS credentials"
registry=$account.dkr.ecr.$region.amazonaws.com
image_uri=$registry/$repository:$image_tag
note "account $account, image $image_uri, health $health_url/health"

step "ECR repository $repository"
if aws ecr describe-repositories --region "$region" --repository-names "$repository" >/dev/null 2>&1; then
  note "exists"
else
  note "missing: creating it (immutable tags, scan on push)"
  mutate aws ecr create-repository --region "$region" --repository-name "$repository" \
    --image-tag-mutability IMMUTABLE --image-scanning-configuration scanOnPush=true >/dev/null
fi

step "image $image_tag"
if aws ecr describe-images --region "$region" --repository-name "$repository" --image-ids "imageTag=$image_tag" >/dev/null 2>&1; then
  note "already in ECR: not pushed again"
else
  $dry_run || command -v docker >/dev/null 2>&1 || fail "docker is required to push $local_image"
  $dry_run || docker image inspect "$local_image" >/dev/null 2>&1 ||
    fail "no local image $local_image: build it with: docker build -f origin/Dockerfile -t $local_image ."
  ecr_login() { aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry"; }
  mutate ecr_login
  mutate docker tag "$local_image" "$image_uri"
  mutate docker push "$image_uri"
fi

# One output of the stack.
output() {
  aws cloudformation describe-stacks --region "$region" --stack-name "$stack" \
    --query "Stacks[0].Outputs[?OutputKey=='$1'].OutputValue" --output text
}

step "stack $stack"
stack_status=$(aws cloudformation describe-stacks --region "$region" --stack-name "$stack" \
  --query 'Stacks[0].StackStatus' --output text 2>/dev/null) || stack_status=NONE
note "status: $stack_status"
case "$stack_status" in
  NONE)
    missing=()
    for key in VpcId Subnets LoadBalancerSecurityGroup ListenerArn EdgeSigningSecretArn DatabaseUrlSecretArn; do
      [[ " ${parameters[*]} " == *" $key="* ]] || missing+=("$key")
    done
    [ ${#missing[@]} -eq 0 ] ||
      fail "the stack does not exist yet; its first deploy needs --parameter for: ${missing[*]} (docs/operations.md, \"First deploy\")"
    previous=""
    ;;
  ROLLBACK_COMPLETE | ROLLBACK_FAILED | DELETE_FAILED)
    fail "the stack is $stack_status (a first deploy that failed): read its events, delete it (aws cloudformation delete-stack --region $region --stack-name $stack) and deploy again"
    ;;
  *_IN_PROGRESS)
    fail "the stack is busy ($stack_status): wait for it to finish"
    ;;
  *)
    cluster=$(output ClusterName)
    service=$(output ServiceName)
    previous=$(aws ecs describe-services --region "$region" --cluster "$cluster" --services "$service" \
      --query 'services[0].taskDefinition' --output text)
    note "running now: $previous (the rollback target if this deploy goes wrong)"
    ;;
esac

overrides=("Image=$image_uri" "EnvironmentName=$environment" "${parameters[@]}")
deploy_args=(cloudformation deploy --region "$region" --stack-name "$stack"
  --template-file "$here/origin.yaml" --capabilities CAPABILITY_IAM --no-fail-on-empty-changeset
  --tags "aybiza:environment=$environment" --parameter-overrides "${overrides[@]}")
[ -z "$role_arn" ] || deploy_args+=(--role-arn "$role_arn")
step "aws cloudformation deploy (waits for the ECS deployment; the circuit breaker rolls back a failing one)"
mutate aws "${deploy_args[@]}"

if $dry_run; then
  step "dry run: then it would wait for the service to be stable and for $health_url/health"
  exit 0
fi
cluster=$(output ClusterName)
service=$(output ServiceName)
step "waiting for ECS service $cluster/$service to be stable"
aws ecs wait services-stable --region "$region" --cluster "$cluster" --services "$service" ||
  fail "the service did not become stable; see: aws ecs describe-services --region $region --cluster $cluster --services $service"
current=$(aws ecs describe-services --region "$region" --cluster "$cluster" --services "$service" \
  --query 'services[0].taskDefinition' --output text)
note "running: $current"

step "waiting for $health_url/health through the load balancer (3 good answers in a row)"
deadline=$((SECONDS + timeout))
good=0
while [ "$good" -lt 3 ]; do
  if curl -fsS --max-time 5 "$health_url/health" 2>/dev/null | grep -q '"status":"ok"'; then
    good=$((good + 1))
  else
    good=0
    [ $SECONDS -lt $deadline ] || fail "$health_url/health is not healthy after ${timeout}s"
  fi
  sleep 2
done
note "healthy"

if [ -n "${EDGE_SIGNING_SECRET:-}" ]; then
  step "signed $health_url/ready (database, Redis, Bedrock configuration)"
  ready=false
  for _ in 1 2 3 4 5; do
    if python3 "$here/signed-get.py" "$health_url/ready" --expect 200 | sed 's/^/    /'; then
      ready=true
      break
    fi
    sleep 5
  done
  $ready || fail "$health_url/ready did not answer 200 (401: the tasks hold another EDGE_SIGNING_SECRET; 503: a dependency is down)"
fi

step "origin deployed to $environment in $region: $current"
[ -z "$previous" ] || [ "$previous" = "$current" ] ||
  note "roll back with: origin/deploy/rollback.sh --env $environment --region $region --to $previous"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  {
    echo "- origin **$environment / $region**: \`$image_uri\` → \`${current##*/}\`"
    [ -z "$previous" ] || echo "  - previous: \`${previous##*/}\` (\`origin/deploy/rollback.sh --env $environment --region $region --to $previous\`)"
  } >>"$GITHUB_STEP_SUMMARY"
fi
