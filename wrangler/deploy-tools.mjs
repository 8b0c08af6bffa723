// The JSON and config work behind wrangler/deploy.sh, wrangler/rollback.sh and wrangler/smoke.mjs,
// kept out of the shell scripts. Reads the Worker configs through the pinned wrangler
// (`unstable_readConfig`), so every value is the one `wrangler deploy --env` would upload.
//
//   node wrangler/deploy-tools.mjs vars ENV WORKER [WORKER:NAME=VALUE ...]
//       the Worker's vars in ENV as JSON, after the overrides
//   node wrangler/deploy-tools.mjs check ENV [WORKER:NAME=VALUE ...]
//       exit 1, naming each, when a var of any Worker still holds a placeholder or a loopback
//       address (nothing deployed to Cloudflare can reach 127.0.0.1)
//   node wrangler/deploy-tools.mjs secret-names WORKER
//   node wrangler/deploy-tools.mjs secrets WORKER
//       the secrets this run uploads with the Worker's version: names (one per line), or the
//       JSON object for `wrangler deploy --secrets-file /dev/stdin`. They come from the
//       environment only: WORKER_SECRETS_<WORKER> (a JSON object of name → value, e.g.
//       WORKER_SECRETS_AUTH_VALIDATOR) and, for voice-router, EDGE_SIGNING_SECRET and
//       rate-limiter's RATE_LIMIT_KEY_SECRET (SHARED_SECRETS).
//   node wrangler/deploy-tools.mjs required WORKER
//       the secrets the Worker cannot run without (one per line)
//   node wrangler/deploy-tools.mjs missing WORKER < `wrangler secret list --format json`
//       the required secrets neither uploaded by this run nor already set on the Worker
//   node wrangler/deploy-tools.mjs version-for-tag TAG < `wrangler versions list --json`
//       the id of the newest version carrying that tag (exit 1 when none does)
//
// Secret values are read from the environment and written only to stdout (a pipe into
// wrangler); they are never arguments, files or log lines.

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const requireFromWrangler = createRequire(path.join(root, "wrangler/package.json"));

/** Deploy order: every service binding's target exists before the Worker that binds it. */
export const WORKERS = ["auth-validator", "rate-limiter", "geo-router", "voice-router"];
export const ENVIRONMENTS = ["development", "staging", "production"];

/** Secrets without which a Worker answers 500 `misconfigured` on every request. */
export const REQUIRED_SECRETS = {
  "auth-validator": [],
  "rate-limiter": ["RATE_LIMIT_KEY_SECRET"],
  "geo-router": [],
  "voice-router": ["EDGE_SIGNING_SECRET", "RATE_LIMIT_KEY_SECRET"],
};

/**
 * Secrets a Worker shares with another, taken from that Worker's so the two cannot disagree:
 * voice-router names rate-limiter's RateLimiter objects (its RATE_LIMITER_OBJECTS binding) with
 * rate-limiter's key.
 */
export const SHARED_SECRETS = {
  "voice-router": { RATE_LIMIT_KEY_SECRET: "rate-limiter" },
};

/** Text in a var that means "not configured for a real deploy yet". */
const PLACEHOLDERS = [
  { pattern: /(^|[./])example\.(com|org|net)\b/i, why: "a placeholder host (example.com)" },
  { pattern: /set-to-the-/i, why: "a placeholder value" },
  { pattern: /\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\]|0\.0\.0\.0)([:/]|$)/i, why: "a loopback address" },
];

class UsageError extends Error {}

function checkWorker(worker) {
  if (!WORKERS.includes(worker)) throw new UsageError(`unknown Worker ${JSON.stringify(worker)} (one of ${WORKERS.join(", ")})`);
}

function checkEnvironment(environment) {
  if (!ENVIRONMENTS.includes(environment)) {
    throw new UsageError(`unknown environment ${JSON.stringify(environment)} (one of ${ENVIRONMENTS.join(", ")})`);
  }
}

/**
 * `WORKER:NAME=VALUE` overrides, as `--var` flags of the scripts carry them, grouped by Worker.
 * A value is text, as `wrangler deploy --var NAME:VALUE` uploads it (JSON where the Worker
 * expects JSON, e.g. geo-router's GEO_REGIONS).
 */
export function parseOverrides(specs) {
  const overrides = Object.fromEntries(WORKERS.map((worker) => [worker, {}]));
  for (const spec of specs) {
    const match = /^([a-z-]+):([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(spec);
    if (!match) throw new UsageError(`override ${JSON.stringify(spec)} is not WORKER:NAME=VALUE`);
    const [, worker, name, value] = match;
    checkWorker(worker);
    overrides[worker][name] = value;
  }
  return overrides;
}

/** The Worker's vars in `environment` (as its wrangler config resolves them), overrides applied. */
export function effectiveVars(environment, worker, overrides = {}) {
  checkEnvironment(environment);
  checkWorker(worker);
  const { unstable_readConfig } = requireFromWrangler("wrangler");
  const config = unstable_readConfig({ config: path.join(root, "wrangler", `${worker}.toml`), env: environment });
  return { ...JSON.parse(JSON.stringify(config.vars ?? {})), ...(overrides[worker] ?? {}) };
}

/** Every placeholder or loopback value in the vars, as `worker NAME: why (value)`. */
export function placeholderProblems(environment, overrides) {
  const problems = [];
  const visit = (worker, name, value) => {
    if (typeof value === "string") {
      for (const { pattern, why } of PLACEHOLDERS) {
        if (pattern.test(value)) {
          problems.push(`${worker} ${name}: ${why} (${value.length > 120 ? `${value.slice(0, 117)}...` : value})`);
          break;
        }
      }
      // JSON text (GEO_REGIONS as a --var) is checked inside as well.
      if (/^\s*[{[]/.test(value)) {
        try {
          visit(worker, name, JSON.parse(value));
        } catch {
          // not JSON: already checked as text
        }
      }
    } else if (value && typeof value === "object") {
      for (const [key, inner] of Object.entries(value)) visit(worker, `${name}.${key}`, inner);
    }
  };
  for (const worker of WORKERS) {
    for (const [name, value] of Object.entries(effectiveVars(environment, worker, overrides))) visit(worker, name, value);
  }
  return [...new Set(problems)];
}

function envName(worker) {
  return `WORKER_SECRETS_${worker.toUpperCase().replaceAll("-", "_")}`;
}

/** The secrets this run uploads with the Worker, from the environment (see the header). */
export function secretsFor(worker, env = process.env) {
  checkWorker(worker);
  const secrets = {};
  const variable = envName(worker);
  const text = env[variable];
  if (text !== undefined && text.trim() !== "") {
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      throw new UsageError(`${variable} is not JSON (expected {"NAME": "value", ...})`);
    }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new UsageError(`${variable} is not a JSON object of secret names to values`);
    }
    for (const [name, value] of Object.entries(parsed)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new UsageError(`${variable}: ${JSON.stringify(name)} is not a valid secret name`);
      if (typeof value !== "string" || value === "") throw new UsageError(`${variable}: ${name} must be a non-empty string`);
      secrets[name] = value;
    }
  }
  // The one secret the edge shares with the origin comes from AWS Secrets Manager, where the
  // origin's task definition reads it too, so the two can never disagree.
  if (worker === "voice-router" && env.EDGE_SIGNING_SECRET) {
    if (secrets.EDGE_SIGNING_SECRET !== undefined && secrets.EDGE_SIGNING_SECRET !== env.EDGE_SIGNING_SECRET) {
      throw new UsageError(`EDGE_SIGNING_SECRET is given twice (in ${variable} and on its own) with different values`);
    }
    secrets.EDGE_SIGNING_SECRET = env.EDGE_SIGNING_SECRET;
  }
  for (const [name, owner] of Object.entries(SHARED_SECRETS[worker] ?? {})) {
    const value = secretsFor(owner, env)[name];
    if (value === undefined) continue;
    if (secrets[name] !== undefined && secrets[name] !== value) {
      throw new UsageError(`${name} is given to ${worker} (in ${variable}) and to ${owner} (in ${envName(owner)}) with different values: they must be the same`);
    }
    secrets[name] = value;
  }
  return secrets;
}

/** Required secrets neither uploaded now nor already on the Worker (`secret list` JSON). */
export function missingSecrets(worker, uploaded, existingListJson) {
  checkWorker(worker);
  let existing = [];
  if (existingListJson.trim() !== "") {
    const parsed = JSON.parse(existingListJson);
    if (!Array.isArray(parsed)) throw new UsageError("wrangler secret list did not answer a JSON array");
    existing = parsed.map((secret) => secret.name);
  }
  return REQUIRED_SECRETS[worker].filter((name) => !(name in uploaded) && !existing.includes(name));
}

/** The newest version with `workers/tag` = tag, from `wrangler versions list --json`. */
export function versionForTag(versionsJson, tag) {
  const versions = JSON.parse(versionsJson);
  if (!Array.isArray(versions)) throw new UsageError("wrangler versions list did not answer a JSON array");
  const tagged = versions
    .filter((version) => version.annotations?.["workers/tag"] === tag)
    .sort((a, b) => String(b.metadata?.created_on ?? "").localeCompare(String(a.metadata?.created_on ?? "")));
  return tagged[0]?.id;
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

async function main([command, ...args]) {
  switch (command) {
    case "vars": {
      const [environment, worker, ...specs] = args;
      process.stdout.write(`${JSON.stringify(effectiveVars(environment, worker, parseOverrides(specs)))}\n`);
      return 0;
    }
    case "check": {
      const [environment, ...specs] = args;
      const problems = placeholderProblems(environment, parseOverrides(specs));
      for (const problem of problems) process.stdout.write(`${problem}\n`);
      return problems.length === 0 ? 0 : 1;
    }
    case "secret-names": {
      const names = Object.keys(secretsFor(args[0]));
      if (names.length > 0) process.stdout.write(`${names.join("\n")}\n`);
      return 0;
    }
    case "secrets": {
      const secrets = secretsFor(args[0]);
      if (Object.keys(secrets).length === 0) throw new UsageError(`no secrets for ${args[0]} in the environment`);
      process.stdout.write(JSON.stringify(secrets));
      return 0;
    }
    case "required": {
      checkWorker(args[0]);
      const names = REQUIRED_SECRETS[args[0]];
      if (names.length > 0) process.stdout.write(`${names.join("\n")}\n`);
      return 0;
    }
    case "missing": {
      const names = missingSecrets(args[0], secretsFor(args[0]), await readStdin());
      if (names.length > 0) process.stdout.write(`${names.join("\n")}\n`);
      return 0;
    }
    case "version-for-tag": {
      const id = versionForTag(await readStdin(), args[0]);
      if (!id) return 1;
      process.stdout.write(`${id}\n`);
      return 0;
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}; see the header of wrangler/deploy-tools.mjs`);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error) => {
      process.stderr.write(`deploy-tools: ${error instanceof UsageError ? error.message : error.stack}\n`);
      process.exit(2);
    },
  );
}
