// The deploy path as far as it runs without Cloudflare and AWS: the Workers' deploy script
// refuses a config that cannot work and builds the exact bundles with --dry-run; their rollback
// script drives a stand-in wrangler (tests/e2e/fixtures/fake-wrangler.mjs) in reverse dependency
// order, to the previous or a tagged version, and only when confirmed; the origin's
// deploy and rollback scripts drive a stand-in `aws` CLI (tests/e2e/fixtures/fake-aws.mjs)
// against a real origin (its /health through the "load balancer", its signed /ready), change
// nothing in a dry run and nothing without confirmation; the signing helper matches the
// origin's verifier; the pipeline's end-to-end check (wrangler/smoke.mjs) passes on a healthy
// stack and fails, naming the reason, on a dead edge, a wrong region or a dead origin.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { closedPortUrl, EDGE_SIGNING_SECRET, geoRegions, startOrigin, startStack } from "./harness.mjs";
import { missingSecrets, parseOverrides, placeholderProblems, secretsFor, versionForTag } from "../../wrangler/deploy-tools.mjs";
import { checkEdgeHealth, checkGeoRouting, parseExpectation } from "../../wrangler/smoke.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const FAKE_AWS = path.join(root, "tests/e2e/fixtures/fake-aws.mjs");
const FAKE_WRANGLER = path.join(root, "tests/e2e/fixtures/fake-wrangler.mjs");

/** Runs a command to completion; resolves with its exit code and output (never rejects). */
function run(command, args, { env = {}, input } = {}) {
  return new Promise((resolve) => {
    const child = spawn(command, args, { cwd: root, env: { ...process.env, ...env }, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    // A command that refuses its arguments exits before reading its input: writing to it then
    // fails with EPIPE, which is no failure of the command.
    child.stdin.on("error", () => {});
    child.stdin.end(input ?? "");
    child.on("close", (code) => resolve({ code, stdout, stderr, output: stdout + stderr }));
  });
}

/** A folder with a stand-in `aws` first on PATH, and its state. */
function fakeAws(state) {
  const dir = mkdtempSync(path.join(os.tmpdir(), "aybiza-fake-aws-"));
  mkdirSync(path.join(dir, "bin"));
  symlinkSync(FAKE_AWS, path.join(dir, "bin", "aws"));
  writeFileSync(
    path.join(dir, "state.json"),
    JSON.stringify({ stack_status: "UPDATE_COMPLETE", image_present: true, current_revision: "7", revisions: { 5: "INACTIVE", 6: "ACTIVE", 7: "ACTIVE" }, ...state }),
  );
  writeFileSync(path.join(dir, "calls.jsonl"), "");
  return {
    env: { FAKE_AWS_DIR: dir, PATH: `${path.join(dir, "bin")}:${process.env.PATH}`, GITHUB_STEP_SUMMARY: "" },
    calls: () =>
      readFileSync(path.join(dir, "calls.jsonl"), "utf8")
        .split("\n")
        .filter(Boolean)
        .map((line) => JSON.parse(line)),
    state: () => JSON.parse(readFileSync(path.join(dir, "state.json"), "utf8")),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}
const changing = (calls) => calls.filter(([service, op]) => (service === "cloudformation" && op === "deploy") || (service === "ecs" && op === "update-service"));

describe("origin/deploy: deploy.sh, rollback.sh and signed-get.py against a real origin", () => {
  let origin;
  before(async () => {
    origin = await startOrigin();
  });
  after(async () => {
    await origin?.stop();
  });

  test("deploy.sh refuses bad arguments before calling AWS", async () => {
    const aws = fakeAws();
    try {
      const cases = [
        [["--region", "us-east-1", "--image-tag", "abc"], /missing --env/],
        [["--env", "qa", "--region", "us-east-1", "--image-tag", "abc"], /unknown environment 'qa'/],
        [["--env", "staging", "--region", "Frankfurt", "--image-tag", "abc"], /--region must be an AWS region/],
        [["--env", "staging", "--region", "us-east-1", "--image-tag", "a b"], /--image-tag must be a Docker tag/],
        [["--env", "staging", "--region", "us-east-1", "--image-tag", "abc", "--parameter", "Image=x"], /Image and EnvironmentName come from/],
        [["--env", "staging", "--region", "us-east-1", "--image-tag", "abc", "--bogus"], /unknown argument: --bogus/],
      ];
      for (const [args, message] of cases) {
        const result = await run("origin/deploy/deploy.sh", args, { env: aws.env });
        assert.notEqual(result.code, 0, args.join(" "));
        assert.match(result.stderr, message);
      }
      assert.deepEqual(aws.calls(), []);
    } finally {
      aws.remove();
    }
  });

  test("deploy.sh --dry-run reads, prints the stack update, and changes nothing", async () => {
    const aws = fakeAws();
    try {
      const result = await run("origin/deploy/deploy.sh", ["--env", "staging", "--region", "eu-west-2", "--image-tag", "0123abc", "--health-url", origin.url, "--dry-run"], { env: aws.env });
      assert.equal(result.code, 0, result.output);
      assert.match(result.stdout, /would run: aws cloudformation deploy --region eu-west-2 --stack-name aybiza-origin-staging/);
      assert.match(result.stdout, /Image=123456789012\.dkr\.ecr\.eu-west-2\.amazonaws\.com\/aybiza-origin:0123abc/);
      assert.match(result.stdout, /running now: arn:aws:ecs:eu-west-2:123456789012:task-definition\/aybiza-staging-origin:7/);
      assert.deepEqual(changing(aws.calls()), []);
    } finally {
      aws.remove();
    }
  });

  test("a first deploy without the stack's network and secret parameters stops before CloudFormation", async () => {
    const aws = fakeAws({ stack_status: "NONE" });
    try {
      const result = await run("origin/deploy/deploy.sh", ["--env", "staging", "--region", "us-east-1", "--image-tag", "abc", "--health-url", origin.url, "--parameter", "VpcId=vpc-1"], { env: aws.env });
      assert.equal(result.code, 1, result.output);
      assert.match(result.stderr, /first deploy needs --parameter for: Subnets LoadBalancerSecurityGroup ListenerArn EdgeSigningSecretArn DatabaseUrlSecretArn/);
      assert.deepEqual(changing(aws.calls()), []);
    } finally {
      aws.remove();
    }
  });

  test("deploy.sh updates the stack, waits for ECS, /health through the load balancer and the signed /ready", async () => {
    const aws = fakeAws();
    try {
      const result = await run("origin/deploy/deploy.sh", ["--env", "staging", "--region", "us-east-1", "--image-tag", "0123abc", "--health-url", origin.url], {
        env: { ...aws.env, EDGE_SIGNING_SECRET },
      });
      assert.equal(result.code, 0, result.output);
      const deploy = changing(aws.calls());
      assert.equal(deploy.length, 1);
      assert.ok(deploy[0].includes("Image=123456789012.dkr.ecr.us-east-1.amazonaws.com/aybiza-origin:0123abc"), JSON.stringify(deploy[0]));
      assert.ok(deploy[0].includes("EnvironmentName=staging"));
      assert.ok(aws.calls().some(([service, op, what]) => service === "ecs" && op === "wait" && what === "services-stable"));
      assert.match(result.stdout, /healthy/);
      assert.match(result.stdout, /200 OK/); // the signed /ready
      assert.match(result.stdout, /rollback\.sh --env staging --region us-east-1 --to arn:aws:ecs:us-east-1:123456789012:task-definition\/aybiza-staging-origin:7/);
    } finally {
      aws.remove();
    }
  });

  test("deploy.sh fails when /health through the load balancer never answers", async () => {
    const aws = fakeAws();
    try {
      const result = await run("origin/deploy/deploy.sh", ["--env", "staging", "--region", "us-east-1", "--image-tag", "abc", "--health-url", await closedPortUrl(), "--timeout", "1"], { env: aws.env });
      assert.equal(result.code, 1, result.output);
      assert.match(result.stderr, /\/health is not healthy after 1s/);
    } finally {
      aws.remove();
    }
  });

  test("deploy.sh refuses a placeholder health URL for a real deploy", async () => {
    const aws = fakeAws();
    try {
      // The default health URL is the region's origin_url in GEO_REGIONS (here a placeholder).
      const regions = JSON.stringify({ "us-east-1": { origin_url: "https://origin-us-east-1.example.com" } });
      const result = await run("origin/deploy/deploy.sh", ["--env", "production", "--region", "us-east-1", "--image-tag", "abc", "--geo-regions", regions], { env: aws.env });
      assert.equal(result.code, 1, result.output);
      assert.match(result.stderr, /placeholder or loopback address/);
      assert.deepEqual(changing(aws.calls()), []);
    } finally {
      aws.remove();
    }
  });

  test("rollback.sh --dry-run names the previous ACTIVE revision of the same family and changes nothing", async () => {
    const aws = fakeAws({ current_revision: "8", revisions: { 5: "ACTIVE", 6: "INACTIVE", 7: "ACTIVE", 8: "ACTIVE" } });
    try {
      const result = await run("origin/deploy/rollback.sh", ["--env", "staging", "--region", "us-east-1", "--health-url", origin.url, "--dry-run"], { env: aws.env });
      assert.equal(result.code, 0, result.output);
      assert.match(result.stdout, /goes back to: arn:aws:ecs:us-east-1:123456789012:task-definition\/aybiza-staging-origin:7 /);
      assert.match(result.stdout, /aws ecs update-service --region us-east-1 --cluster aybiza-staging --service origin --task-definition/);
      assert.deepEqual(changing(aws.calls()), []);
    } finally {
      aws.remove();
    }
  });

  test("rollback.sh without --yes and without a terminal refuses", async () => {
    const aws = fakeAws();
    try {
      const result = await run("origin/deploy/rollback.sh", ["--env", "staging", "--region", "us-east-1", "--health-url", origin.url], { env: aws.env, input: "staging\n" });
      assert.equal(result.code, 1, result.output);
      assert.match(result.stderr, /not on a terminal: pass --yes/);
      assert.deepEqual(changing(aws.calls()), []);
    } finally {
      aws.remove();
    }
  });

  test("rollback.sh --yes points the service at the previous revision and checks /health", async () => {
    const aws = fakeAws();
    try {
      const result = await run("origin/deploy/rollback.sh", ["--env", "staging", "--region", "us-east-1", "--health-url", origin.url, "--yes"], { env: aws.env });
      assert.equal(result.code, 0, result.output);
      const updates = changing(aws.calls());
      assert.equal(updates.length, 1);
      assert.equal(updates[0][updates[0].indexOf("--task-definition") + 1], "arn:aws:ecs:us-east-1:123456789012:task-definition/aybiza-staging-origin:6");
      assert.equal(aws.state().current_revision, "6");
      assert.match(result.stdout, /\/health: ok/);
    } finally {
      aws.remove();
    }
  });

  test("rollback.sh refuses a target ECS can no longer run, and one that already runs", async () => {
    const aws = fakeAws();
    try {
      let result = await run("origin/deploy/rollback.sh", ["--env", "staging", "--region", "us-east-1", "--to", "aybiza-staging-origin:5", "--yes"], { env: aws.env });
      assert.equal(result.code, 1, result.output);
      assert.match(result.stderr, /aybiza-staging-origin:5 is INACTIVE/);
      result = await run("origin/deploy/rollback.sh", ["--env", "staging", "--region", "us-east-1", "--to", "aybiza-staging-origin:7", "--yes"], { env: aws.env });
      assert.equal(result.code, 1, result.output);
      assert.match(result.stderr, /is what runs already/);
      assert.deepEqual(changing(aws.calls()), []);
    } finally {
      aws.remove();
    }
  });

  test("signed-get.py signs as voice-router does: the origin accepts it, and refuses another secret", async () => {
    let result = await run("python3", ["origin/deploy/signed-get.py", `${origin.url}/ready`, "--expect", "200"], { env: { EDGE_SIGNING_SECRET } });
    assert.equal(result.code, 0, result.output);
    assert.match(result.stdout, /^200 OK/);
    result = await run("python3", ["origin/deploy/signed-get.py", `${origin.url}/metrics`, "--quiet"], { env: { EDGE_SIGNING_SECRET } });
    assert.equal(result.code, 0, result.output);
    result = await run("python3", ["origin/deploy/signed-get.py", `${origin.url}/ready`], { env: { EDGE_SIGNING_SECRET: "another-secret-of-enough-length-0123456789" } });
    assert.equal(result.code, 1, result.output);
    assert.match(result.stdout, /^401/);
    result = await run("python3", ["origin/deploy/signed-get.py", `${origin.url}/ready`], { env: { EDGE_SIGNING_SECRET: "" } });
    assert.equal(result.code, 2, result.output);
  });
});

describe("wrangler/: deploy-tools.mjs, deploy.sh and rollback.sh", () => {
  const REAL_REGIONS = geoRegions((region) => `https://origin-${region}.acme-voice.io`);
  const READY_OVERRIDES = [
    "auth-validator:JWT_AUDIENCE=0f3c9a6b2d",
    `geo-router:GEO_REGIONS=${REAL_REGIONS}`,
    "voice-router:ORIGIN_URL=https://origin.acme-voice.io",
  ];

  test("the placeholder check names every placeholder, inside JSON too, and passes once overridden", () => {
    const placeholders = [
      "auth-validator:JWT_AUDIENCE=set-to-the-access-application-aud-tag",
      `geo-router:GEO_REGIONS=${geoRegions((region) => `https://origin-${region}.staging.example.com`)}`,
      "voice-router:ORIGIN_URL=https://origin-staging.example.com",
    ];
    const problems = placeholderProblems("staging", parseOverrides(placeholders));
    assert.ok(problems.some((problem) => problem.startsWith("auth-validator JWT_AUDIENCE: a placeholder value")), problems.join("\n"));
    assert.ok(problems.some((problem) => problem.startsWith("geo-router GEO_REGIONS.eu-west-2.origin_url: a placeholder host")), problems.join("\n"));
    assert.ok(problems.some((problem) => problem.startsWith("voice-router ORIGIN_URL:")), problems.join("\n"));
    assert.deepEqual(placeholderProblems("staging", parseOverrides(READY_OVERRIDES)), []);
    const loopback = placeholderProblems("staging", parseOverrides([...READY_OVERRIDES, "voice-router:ORIGIN_URL=http://127.0.0.1:4000"]));
    assert.deepEqual(loopback, ["voice-router ORIGIN_URL: a loopback address (http://127.0.0.1:4000)"]);
    assert.throws(() => parseOverrides(["voice-router:ORIGIN_URL"]), /is not WORKER:NAME=VALUE/);
    assert.throws(() => parseOverrides(["billing:X=1"]), /unknown Worker/);
  });

  test("secrets come from the environment only, and voice-router's signing secret cannot disagree", () => {
    assert.deepEqual(secretsFor("rate-limiter", {}), {});
    assert.deepEqual(secretsFor("rate-limiter", { WORKER_SECRETS_RATE_LIMITER: '{"RATE_LIMIT_KEY_SECRET":"k"}' }), { RATE_LIMIT_KEY_SECRET: "k" });
    assert.deepEqual(secretsFor("voice-router", { EDGE_SIGNING_SECRET: "s" }), { EDGE_SIGNING_SECRET: "s" });
    assert.deepEqual(secretsFor("geo-router", { EDGE_SIGNING_SECRET: "s" }), {});
    assert.throws(() => secretsFor("voice-router", { EDGE_SIGNING_SECRET: "s", WORKER_SECRETS_VOICE_ROUTER: '{"EDGE_SIGNING_SECRET":"t"}' }), /given twice/);
    assert.throws(() => secretsFor("auth-validator", { WORKER_SECRETS_AUTH_VALIDATOR: "KEY=value" }), /is not JSON/);
    assert.throws(() => secretsFor("auth-validator", { WORKER_SECRETS_AUTH_VALIDATOR: '{"A":""}' }), /non-empty string/);
    assert.deepEqual(missingSecrets("rate-limiter", {}, "[]"), ["RATE_LIMIT_KEY_SECRET"]);
    assert.deepEqual(missingSecrets("rate-limiter", {}, '[{"name":"RATE_LIMIT_KEY_SECRET","type":"secret_text"}]'), []);
    assert.deepEqual(missingSecrets("voice-router", { EDGE_SIGNING_SECRET: "s" }, ""), ["RATE_LIMIT_KEY_SECRET"]);
    assert.deepEqual(missingSecrets("voice-router", { EDGE_SIGNING_SECRET: "s" }, '[{"name":"RATE_LIMIT_KEY_SECRET","type":"secret_text"}]'), []);
  });

  test("voice-router gets rate-limiter's naming key, the same value or none", () => {
    const limiter = { WORKER_SECRETS_RATE_LIMITER: '{"RATE_LIMIT_KEY_SECRET":"k"}' };
    assert.deepEqual(secretsFor("voice-router", { ...limiter, EDGE_SIGNING_SECRET: "s" }), { EDGE_SIGNING_SECRET: "s", RATE_LIMIT_KEY_SECRET: "k" });
    assert.deepEqual(secretsFor("voice-router", { ...limiter, WORKER_SECRETS_VOICE_ROUTER: '{"RATE_LIMIT_KEY_SECRET":"k"}' }), { RATE_LIMIT_KEY_SECRET: "k" });
    assert.throws(
      () => secretsFor("voice-router", { ...limiter, WORKER_SECRETS_VOICE_ROUTER: '{"RATE_LIMIT_KEY_SECRET":"other"}' }),
      /RATE_LIMIT_KEY_SECRET is given to voice-router .* and to rate-limiter .* with different values/,
    );
    assert.deepEqual(secretsFor("rate-limiter", { WORKER_SECRETS_VOICE_ROUTER: '{"RATE_LIMIT_KEY_SECRET":"k"}' }), {}, "only the owner's flows to the other");
  });

  test("version-for-tag picks the newest version carrying the tag", () => {
    const versions = JSON.stringify([
      { id: "v-old", annotations: { "workers/tag": "abc" }, metadata: { created_on: "2026-11-01T10:00:00Z" } },
      { id: "v-new", annotations: { "workers/tag": "abc" }, metadata: { created_on: "2026-11-02T10:00:00Z" } },
      { id: "v-other", annotations: { "workers/tag": "def" }, metadata: { created_on: "2026-11-03T10:00:00Z" } },
      { id: "v-untagged", metadata: { created_on: "2026-11-04T10:00:00Z" } },
    ]);
    assert.equal(versionForTag(versions, "abc"), "v-new");
    assert.equal(versionForTag(versions, "zzz"), undefined);
  });

  test("deploy.sh refuses a config with placeholders before anything is uploaded", async () => {
    const args = ["--env", "production", "--var", "auth-validator:JWT_AUDIENCE=set-to-the-access-application-aud-tag"];
    const result = await run("wrangler/deploy.sh", args, { env: { CLOUDFLARE_API_TOKEN: "", CLOUDFLARE_ACCOUNT_ID: "" } });
    assert.equal(result.code, 1, result.output);
    assert.match(result.stdout, /auth-validator JWT_AUDIENCE: a placeholder value/);
    assert.match(result.stderr, /the production configuration is not ready for a deploy/);
    assert.doesNotMatch(result.output, /==> wrangler deploy/);
  });

  test("deploy.sh and rollback.sh refuse bad arguments", async () => {
    for (const [script, args, message] of [
      ["wrangler/deploy.sh", [], /missing --env/],
      ["wrangler/deploy.sh", ["--env", "qa"], /unknown environment 'qa'/],
      ["wrangler/deploy.sh", ["--env", "staging", "--only", "billing"], /unknown Worker 'billing'/],
      ["wrangler/deploy.sh", ["--env", "staging", "--var", "voice-router:ORIGIN_URL"], /is not WORKER:NAME=VALUE/],
      ["wrangler/rollback.sh", ["--env", "qa"], /unknown environment 'qa'/],
      ["wrangler/rollback.sh", ["--env", "staging", "--only", "billing"], /unknown Worker 'billing'/],
      ["wrangler/rollback.sh", ["--env", "staging", "--now"], /unknown argument: --now/],
    ]) {
      const result = await run(script, args);
      assert.notEqual(result.code, 0, `${script} ${args.join(" ")}`);
      assert.match(result.output, message, `${script} ${args.join(" ")}`);
    }
  });

  /** Runs wrangler/rollback.sh with a stand-in wrangler; resolves with the result and its calls. */
  async function rollback(args, options = {}) {
    const dir = mkdtempSync(path.join(os.tmpdir(), "aybiza-fake-wrangler-"));
    try {
      writeFileSync(path.join(dir, "calls.jsonl"), "");
      const result = await run("wrangler/rollback.sh", args, { ...options, env: { AYBIZA_WRANGLER: FAKE_WRANGLER, FAKE_WRANGLER_DIR: dir } });
      const calls = readFileSync(path.join(dir, "calls.jsonl"), "utf8").split("\n").filter(Boolean).map((line) => JSON.parse(line));
      return { ...result, calls, rollbacks: calls.filter(([command]) => command === "rollback") };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  const workerOf = (call) => path.basename(call[call.indexOf("-c") + 1], ".toml");

  test("rollback.sh rolls the Workers back in reverse dependency order, each to its previous version", async () => {
    const result = await rollback(["--env", "staging", "--yes", "--message", "bad release"]);
    assert.equal(result.code, 0, result.output);
    assert.deepEqual(result.rollbacks.map(workerOf), ["voice-router", "geo-router", "rate-limiter", "auth-validator"]);
    for (const call of result.rollbacks) {
      assert.equal(call[1], "-c", "no version id: the version before the current deployment");
      assert.deepEqual(call.slice(3), ["--env", "staging", "--message", "bad release", "--yes"]);
    }
  });

  test("rollback.sh --to-tag finds each Worker's version of that commit; an unknown tag stops before any rollback", async () => {
    let result = await rollback(["--env", "production", "--to-tag", "old-commit", "--only", "geo-router", "--only", "voice-router", "--yes"]);
    assert.equal(result.code, 0, result.output);
    assert.deepEqual(result.rollbacks.map((call) => [workerOf(call), call[1]]), [["voice-router", "v-voice-router-1"], ["geo-router", "v-geo-router-1"]]);
    result = await rollback(["--env", "production", "--to-tag", "never-deployed", "--yes"]);
    assert.equal(result.code, 1, result.output);
    assert.match(result.stderr, /voice-router has no version tagged 'never-deployed'/);
    assert.deepEqual(result.rollbacks, []);
  });

  test("rollback.sh --dry-run shows the plan, and without --yes off a terminal it refuses; neither rolls back", async () => {
    let result = await rollback(["--env", "production", "--dry-run"]);
    assert.equal(result.code, 0, result.output);
    assert.match(result.stdout, /wrangler rollback -c wrangler\/voice-router\.toml --env production/);
    assert.deepEqual(result.rollbacks, []);
    result = await rollback(["--env", "production"], { input: "production\n" });
    assert.equal(result.code, 1, result.output);
    assert.match(result.stderr, /not on a terminal: pass --yes/);
    assert.deepEqual(result.rollbacks, []);
  });

  test("deploy.sh --dry-run builds the bundle wrangler would upload, with the overrides, and uploads nothing", async () => {
    const outdir = mkdtempSync(path.join(os.tmpdir(), "aybiza-deploy-dry-"));
    try {
      const result = await run("wrangler/deploy.sh", ["--env", "staging", "--dry-run", "--only", "voice-router", "--outdir", outdir, ...READY_OVERRIDES.flatMap((spec) => ["--var", spec])], {
        env: { EDGE_SIGNING_SECRET: "not-uploaded-in-a-dry-run-0123456789abcdef", CLOUDFLARE_API_TOKEN: "", CLOUDFLARE_ACCOUNT_ID: "" },
      });
      assert.equal(result.code, 0, result.output);
      assert.match(result.stdout, /no placeholder or loopback values/);
      assert.match(result.stdout, /voice-router: secrets uploaded with this version: EDGE_SIGNING_SECRET/);
      // wrangler lists the override and the secret, hiding both values.
      assert.match(result.stdout, /env\.ORIGIN_URL \("\(hidden\)"\)/);
      assert.match(result.stdout, /env\.EDGE_SIGNING_SECRET \("\(hidden\)"\)/);
      assert.doesNotMatch(result.stdout, /\[custom build\]/);
      assert.match(result.stdout, /--dry-run: exiting now/);
      assert.ok(existsSync(path.join(outdir, "voice-router", "index.js")), result.output);
      assert.doesNotMatch(result.output, /not-uploaded-in-a-dry-run/);
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
  });
});

describe("wrangler/smoke.mjs: the pipeline's end-to-end check", () => {
  let stack;
  before(async () => {
    stack = await startStack();
  });
  after(async () => {
    await stack?.close();
  });
  const quiet = () => {};

  test("/health through the edge passes on a healthy stack and fails by its deadline on a dead one", async () => {
    const report = await checkEdgeHealth(stack.edge.url, 10, quiet);
    assert.equal(report.status, "ok");
    const dead = await closedPortUrl();
    const started = Date.now();
    await assert.rejects(checkEdgeHealth(dead, 1, quiet), /is not ok after 1 s: ECONNREFUSED/);
    assert.ok(Date.now() - started < 5_000);
  });

  test("the forced-country check passes where the decision and the region's origin are right", async () => {
    const dead = await closedPortUrl();
    const regions = geoRegions((region) => (region === "us-east-1" ? stack.origin.url : dead));
    const lines = [];
    await checkGeoRouting(
      { env: "development", bundles: process.env.WORKER_BUNDLES_DIR, vars: [`geo-router:GEO_REGIONS=${regions}`], expect: [parseExpectation("US=us-east-1"), parseExpectation("US-TX=us-east-1")] },
      (line) => lines.push(line),
    );
    assert.ok(lines.some((line) => line.startsWith("geo US: us-east-1")), lines.join("\n"));
  });

  test("the forced-country check fails on a wrong region, a dead origin, and a region marked down", async () => {
    const dead = await closedPortUrl();
    const regions = geoRegions((region) => (region === "us-east-1" ? stack.origin.url : dead));
    const options = { env: "development", bundles: process.env.WORKER_BUNDLES_DIR, vars: [`geo-router:GEO_REGIONS=${regions}`] };
    await assert.rejects(checkGeoRouting({ ...options, expect: [parseExpectation("GB=us-east-1")] }, quiet), /GB: routed to eu-west-2 .*expected us-east-1/);
    await assert.rejects(checkGeoRouting({ ...options, expect: [parseExpectation("GB=eu-west-2")] }, quiet), /GB: origin http:\/\/127\.0\.0\.1:\d+\/health unreachable/);
    const dir = mkdtempSync(path.join(os.tmpdir(), "aybiza-smoke-"));
    try {
      const table = path.join(dir, "health.json");
      writeFileSync(table, JSON.stringify({ probed_at_ms: Date.now(), regions: { "us-east-1": { state: "down", consecutive_failures: 3 } } }));
      await assert.rejects(checkGeoRouting({ ...options, healthTable: table, expect: [parseExpectation("US=us-east-1")] }, quiet), /US: routed to (?!us-east-1)/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("the command line refuses incomplete arguments", async () => {
    for (const [args, message] of [
      [["--env", "qa", "--edge-url", "https://voice.acme.io", "--no-geo"], /--env must be/],
      [["--env", "staging", "--edge-url", "voice.acme.io", "--no-geo"], /--edge-url must be an http\(s\) URL/],
      [["--env", "staging", "--edge-url", "https://voice.acme.io"], /at least one --expect/],
      [["--env", "staging", "--edge-url", "https://voice.acme.io", "--expect", "Germany=eu-west-2", "--bundles", "x"], /is not CC=REGION/],
    ]) {
      const result = await run(process.execPath, ["wrangler/smoke.mjs", ...args]);
      assert.equal(result.code, 2, result.output);
      assert.match(result.stderr, message);
    }
  });
});
