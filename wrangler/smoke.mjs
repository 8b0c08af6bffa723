// End-to-end check of a deployed environment, the pipeline's last step (and the first thing to
// run after a rollback):
//
//  1. `GET <edge>/health` through the public edge answers 200 with every binding ok: the three
//     internal Workers over their service bindings, the CallSession Durable Object, and the
//     origin behind ORIGIN_URL. Retried until --timeout, since a fresh deploy takes seconds to
//     reach every location.
//  2. `GET <edge>/console/` answers the console's HTML (voice-router's static assets) with its
//     Content-Security-Policy, so a deploy that lost the assets or their `_headers` fails here.
//  3. A geo-routing check with a forced country, for each --expect CC=REGION (or CC-SUB=REGION):
//     geo-router decides for a caller from CC, and the decision must be REGION, healthy, not a
//     failover; then that region's origin must answer `/health` through its load balancer.
//
// Why the geo check replays geo-router instead of asking the deployed one: Cloudflare sets
// `request.cf.country` from the client's address, so no request from a CI runner can claim to
// come from Germany, and geo-router has no public route (voice-router reaches it over a service
// binding only). So the check runs the very bundle that was uploaded (`wrangler/deploy.sh
// --outdir`), with the environment's vars and overrides, in local workerd, and feeds it the live
// health table the deployed geo-router's Cron Trigger keeps in KV (`--live-health`, read with
// `wrangler kv key get --remote`). The decision is therefore the deployed code's on the deployed
// config and health; only where it executes differs. The origin probe is real.
//
// Usage: node wrangler/smoke.mjs --env ENV --edge-url URL [options]
//   --env ENV               development, staging or production
//   --edge-url URL          the public voice-router, e.g. https://voice.acme.io
//   --expect CC=REGION      a forced-country check (repeatable), e.g. DE=eu-west-2, US-CA=us-west-2
//   --bundles DIR           where wrangler/deploy.sh --outdir left the bundles (DIR/geo-router)
//   --var WORKER:NAME=VALUE the same overrides the deploy used (geo-router's matter here)
//   --live-health           seed the replay with the deployed health table (needs Cloudflare
//                           credentials); otherwise every region starts unknown (usable)
//   --health-table FILE     seed the replay with this health table (JSON) instead
//   --no-geo                only check /health (and /console/) through the edge
//   --no-console            skip the /console/ check (a rollback to a version from before it)
//   --timeout SECONDS       how long /health may take to become ok (default 120)

import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { parseOverrides } from "./deploy-tools.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const HEALTH_KEY = "health:v1";
const PROBE_TIMEOUT_MS = 5_000;

class UsageError extends Error {}
class CheckFailed extends Error {}

export function parseArgs(argv) {
  const options = { expect: [], vars: [], timeoutS: 120, liveHealth: false, geo: true, console: true };
  const value = (flag, i) => {
    if (i + 1 >= argv.length) throw new UsageError(`${flag} needs a value`);
    return argv[i + 1];
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    switch (flag) {
      case "--env": options.env = value(flag, i++); break;
      case "--edge-url": options.edgeUrl = value(flag, i++).replace(/\/+$/, ""); break;
      case "--expect": options.expect.push(parseExpectation(value(flag, i++))); break;
      case "--bundles": options.bundles = value(flag, i++); break;
      case "--var": options.vars.push(value(flag, i++)); break;
      case "--live-health": options.liveHealth = true; break;
      case "--health-table": options.healthTable = value(flag, i++); break;
      case "--no-geo": options.geo = false; break;
      case "--no-console": options.console = false; break;
      case "--timeout": {
        options.timeoutS = Number(value(flag, i++));
        if (!Number.isFinite(options.timeoutS) || options.timeoutS <= 0) throw new UsageError("--timeout needs a number of seconds");
        break;
      }
      default: throw new UsageError(`unknown argument ${JSON.stringify(flag)}`);
    }
  }
  if (!["development", "staging", "production"].includes(options.env)) throw new UsageError("--env must be development, staging or production");
  if (!options.edgeUrl || !/^https?:\/\//.test(options.edgeUrl)) throw new UsageError("--edge-url must be an http(s) URL");
  if (options.geo) {
    if (options.expect.length === 0) throw new UsageError("give at least one --expect CC=REGION (or --no-geo)");
    if (!options.bundles) throw new UsageError("--bundles is needed for the geo check (the --outdir of wrangler/deploy.sh)");
    if (options.liveHealth && options.healthTable) throw new UsageError("--live-health and --health-table exclude each other");
  }
  parseOverrides(options.vars);
  return options;
}

/** `DE=eu-west-2` or `US-CA=us-west-2` → the caller to route and the region expected. */
export function parseExpectation(spec) {
  const match = /^([A-Z]{2})(?:-([A-Z0-9]{1,3}))?=([a-z]{2}(?:-gov)?-[a-z]+-\d)$/.exec(spec);
  if (!match) throw new UsageError(`--expect ${JSON.stringify(spec)} is not CC=REGION or CC-SUB=REGION (e.g. DE=eu-west-2)`);
  const [, country, regionCode, region] = match;
  const caller = { country };
  if (regionCode) caller.region_code = regionCode;
  return { label: regionCode ? `${country}-${regionCode}` : country, caller, region };
}

async function fetchWithTimeout(url, init = {}, ms = PROBE_TIMEOUT_MS) {
  return fetch(url, { ...init, signal: AbortSignal.timeout(ms) });
}

/** 1. `/health` through the edge, until every binding is ok or the deadline passes. */
export async function checkEdgeHealth(edgeUrl, timeoutS, log = console.log) {
  const deadline = Date.now() + timeoutS * 1000;
  let last = "no answer";
  for (let attempt = 1; ; attempt++) {
    try {
      const response = await fetchWithTimeout(`${edgeUrl}/health`);
      const text = await response.text();
      let report;
      try {
        report = JSON.parse(text);
      } catch {
        report = undefined;
      }
      if (response.status === 200 && report?.status === "ok") {
        log(`edge /health: ok (${report.service} ${report.version})`);
        for (const [name, binding] of Object.entries(report.bindings ?? {})) {
          log(`    ${name}: ok${binding.version ? ` (${binding.version})` : ""}${binding.latency_ms !== undefined ? `, ${binding.latency_ms} ms` : ""}`);
        }
        return report;
      }
      const failing = Object.entries(report?.bindings ?? {})
        .filter(([, binding]) => !binding.ok)
        .map(([name, binding]) => `${name}: ${binding.error ?? "not ok"}`);
      last = `${response.status}${failing.length ? `; failing: ${failing.join("; ")}` : `: ${text.slice(0, 200)}`}`;
    } catch (error) {
      last = error.cause?.code ?? error.name ?? String(error);
    }
    if (Date.now() >= deadline) throw new CheckFailed(`edge /health at ${edgeUrl} is not ok after ${timeoutS} s: ${last}`);
    if (attempt === 1 || attempt % 5 === 0) log(`edge /health not ok yet (${last}); retrying`);
    await new Promise((resolve) => setTimeout(resolve, Math.min(2000, Math.max(0, deadline - Date.now()))));
  }
}

/** The web console answers at /console/: HTML with its CSP (from the assets' `_headers`). */
export async function checkConsole(edgeUrl, log = console.log) {
  let response;
  try {
    response = await fetchWithTimeout(`${edgeUrl}/console/`);
  } catch (error) {
    throw new CheckFailed(`edge /console/ at ${edgeUrl} did not answer: ${error.cause?.code ?? error.name ?? error}`);
  }
  const text = await response.text();
  const type = response.headers.get("content-type") ?? "";
  const csp = response.headers.get("content-security-policy") ?? "";
  if (response.status !== 200 || !type.startsWith("text/html") || !text.includes("app.js")) {
    throw new CheckFailed(`edge /console/ is not the console: ${response.status} ${type}`);
  }
  if (!/script-src 'self'/.test(csp)) throw new CheckFailed(`edge /console/ lacks its Content-Security-Policy (the assets' _headers): "${csp}"`);
  log("edge /console/: ok (the console, with its Content-Security-Policy)");
}

/** The health table the deployed geo-router's Cron Trigger keeps in KV, or undefined. */
async function liveHealthTable(environment) {
  try {
    const { stdout } = await promisify(execFile)(
      "wrangler",
      ["kv", "key", "get", HEALTH_KEY, "--binding", "GEO_KV", "--remote", "--text", "-c", "wrangler/geo-router.toml", "--env", environment],
      { cwd: root, maxBuffer: 4 * 1024 * 1024 },
    );
    const text = stdout.trim();
    JSON.parse(text);
    return text;
  } catch (error) {
    // A geo-router deployed for the first time has no table until its first Cron run.
    return { missing: `${error.message.split("\n")[0]}` };
  }
}

/** 2. geo-router's decision for each forced country, then that region's origin. */
export async function checkGeoRouting(options, log = console.log) {
  const requireFromWrangler = createRequire(path.join(root, "wrangler/package.json"));
  const { createTestHarness } = requireFromWrangler("wrangler");
  const overrides = parseOverrides(options.vars)["geo-router"];

  let table;
  if (options.healthTable) {
    table = readFileSync(options.healthTable, "utf8");
    log(`health table: ${options.healthTable}`);
  } else if (options.liveHealth) {
    const live = await liveHealthTable(options.env);
    if (typeof live === "string") {
      table = live;
      const parsed = JSON.parse(live);
      log(`health table: the deployed one (probed ${parsed.probed_at_ms ? new Date(parsed.probed_at_ms).toISOString() : "never"})`);
    } else {
      log(`health table: none deployed yet (${live.missing}); every region counts as unknown`);
    }
  } else {
    log("health table: none given; every region counts as unknown");
  }

  const server = createTestHarness({
    root,
    workers: [
      {
        configPath: path.join(root, "wrangler", "geo-router.toml"),
        env: options.env,
        prebuiltWorkerDir: path.join(path.resolve(options.bundles), "geo-router"),
        vars: overrides,
      },
    ],
  });
  await server.listen();
  const failures = [];
  try {
    const geo = server.getWorker(`geo-router-${options.env}`);
    if (table !== undefined) await (await geo.getEnv()).GEO_KV.put(HEALTH_KEY, table);
    for (const { label, caller, region } of options.expect) {
      const response = await geo.fetch("https://geo-router/v1/route", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ caller }),
      });
      const text = await response.text();
      if (response.status !== 200) {
        failures.push(`${label}: geo-router answered ${response.status}: ${text.slice(0, 300)}`);
        continue;
      }
      const decision = JSON.parse(text);
      log(`geo ${label}: ${decision.region} (${decision.reason}${decision.healthy ? "" : ", NOT healthy"}) → ${decision.origin_url}`);
      if (decision.region !== region) {
        failures.push(`${label}: routed to ${decision.region} (${decision.reason}), expected ${region}`);
        continue;
      }
      if (!decision.healthy) failures.push(`${label}: ${region} was chosen although no region is healthy`);
      try {
        const probe = await fetchWithTimeout(`${decision.origin_url.replace(/\/+$/, "")}/health`);
        const body = await probe.text();
        let status;
        try {
          status = JSON.parse(body).status;
        } catch {
          status = undefined;
        }
        if (probe.status === 200 && status === "ok") log(`    origin ${decision.origin_url}/health: ok`);
        else failures.push(`${label}: origin ${decision.origin_url}/health answered ${probe.status}: ${body.slice(0, 200)}`);
      } catch (error) {
        failures.push(`${label}: origin ${decision.origin_url}/health unreachable (${error.cause?.code ?? error.name})`);
      }
    }
  } finally {
    await server.close();
  }
  if (failures.length > 0) throw new CheckFailed(`geo-routing check failed:\n  ${failures.join("\n  ")}`);
}

async function main(argv) {
  const options = parseArgs(argv);
  await checkEdgeHealth(options.edgeUrl, options.timeoutS);
  if (options.console) await checkConsole(options.edgeUrl);
  if (options.geo) await checkGeoRouting(options);
  console.log(`smoke check of ${options.env} passed`);
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main(process.argv.slice(2)).then(
    () => process.exit(0),
    (error) => {
      if (error instanceof UsageError) {
        console.error(`smoke: ${error.message}\nusage: see the header of wrangler/smoke.mjs`);
        process.exit(2);
      }
      console.error(error instanceof CheckFailed ? `smoke: FAILED: ${error.message}` : error);
      process.exit(1);
    },
  );
}
