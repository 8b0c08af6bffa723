// geo-router: what a route decision costs.
//   1. natively: shared::geo::select_region over a mix of callers (every rule, one failover),
//      against the JSON parse + serialise every request does anyway;
//   2. inside workerd (raw `workerd serve`, the release bundle, loopback, c=16): CPU per request
//      and throughput of POST /v1/route, against GET /health on the same Worker (the lead's
//      baseline) and the same POSTs to a path with no route (the floor: the request in, a JSON
//      answer out, no decision).
// CPU per request = workerd's user+system time (/proc) over the requests it served, so the load
// generator's own CPU is not counted. Linux only for the workerd part.
// Inputs: WORKER_BUNDLES_DIR (release bundles, `tests/stack/bench.sh` sets it).

import { spawn, spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import { createRequire } from "node:module";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { report } from "./report.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const CONCURRENCY = 16;
const WARMUP_MS = 1_000;
const MEASURE_MS = 6_000; // per endpoint, in ROUNDS interleaved slices
const ROUNDS = 6;

// Targets. The issue: "selection must cost microseconds, not milliseconds".
const NATIVE_TARGET_US = 10;
const WORKERD_MARGINAL_TARGET_US = 100;
const WORKERD_REQUEST_TARGET_US = 1_000;

const SEED_REGIONS = [
  "us-east-1", "us-west-2", "eu-west-2", "eu-central-1", "eu-north-1",
  "ap-southeast-1", "ap-northeast-1", "ap-southeast-2", "sa-east-1",
];

// The same mix as the native measurement: region code, country, nearest, continent, default,
// pinned; each with the caller's cf fields as voice-router forwards them.
const ROUTE_BODIES = [
  { caller: { country: "US", region_code: "TX", continent: "NA", latitude: "30.27", longitude: "-97.74", colo: "DFW" } },
  { caller: { country: "GB", region_code: "SCT", continent: "EU", latitude: "55.95", longitude: "-3.19", colo: "EDI" } },
  { caller: { country: "IN", region_code: "MH", continent: "AS", latitude: "19.08", longitude: "72.88", colo: "BOM" } },
  { caller: { country: "KE", continent: "AF", colo: "NBO" } },
  { caller: {} },
  { caller: { country: "US", region_code: "NY", latitude: "40.71", longitude: "-74.0" }, pin: "eu-north-1" },
  { caller: { country: "US", region_code: "CA", continent: "NA", latitude: "37.77", longitude: "-122.42", colo: "SJC" } },
].map((body) => JSON.stringify(body));

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run through tests/stack/bench.sh`);
  return value;
}

function native() {
  const run = spawnSync("cargo", ["run", "--release", "--quiet", "--locked", "--example", "geo_select", "-p", "shared"], {
    cwd: root,
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
  });
  if (run.status !== 0) throw new Error(`the native measurement failed (exit ${run.status})`);
  return JSON.parse(run.stdout.trim().split("\n").at(-1));
}

async function freePort() {
  const server = net.createServer().listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** A capnp string literal. */
const capnpText = (text) => JSON.stringify(text);

/** Starts the release geo-router bundle in raw workerd, with an in-memory KV stand-in. */
async function startWorkerd() {
  const bundle = path.join(required("WORKER_BUNDLES_DIR"), "geo-router");
  const dir = mkdtempSync(path.join(os.tmpdir(), "geo-bench-"));
  // The main module (index.js) must come first.
  const modules = readdirSync(bundle)
    .filter((file) => file.endsWith(".js") || file.endsWith(".wasm"))
    .sort((a, b) => Number(b === "index.js") - Number(a === "index.js"));
  for (const file of modules) copyFileSync(path.join(bundle, file), path.join(dir, file));
  // workerd speaks KV to a service: GET/PUT/DELETE /<key>. An in-memory map is enough here.
  writeFileSync(
    path.join(dir, "kv.js"),
    `const store = new Map();
export default {
  async fetch(request) {
    const key = decodeURIComponent(new URL(request.url).pathname.slice(1));
    if (request.method === "PUT") { store.set(key, await request.text()); return new Response(null); }
    if (request.method === "DELETE") { store.delete(key); return new Response(null); }
    return store.has(key) ? new Response(store.get(key)) : new Response("Not Found", { status: 404 });
  },
};
`,
  );
  const regions = Object.fromEntries(SEED_REGIONS.map((r) => [r, { origin_url: `https://origin-${r}.example.com` }]));
  const port = await freePort();
  const compatibilityDate = /compatibility_date\s*=\s*"([^"]+)"/.exec(
    readFileSync(path.join(root, "wrangler/geo-router.toml"), "utf8"),
  )[1];
  const moduleList = modules
    .map((file) => `(name = ${capnpText(file)}, ${file.endsWith(".wasm") ? "wasm" : "esModule"} = embed ${capnpText(file)})`)
    .join(",\n      ");
  writeFileSync(
    path.join(dir, "config.capnp"),
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "geo", worker = (
      modules = [
      ${moduleList}
      ],
      compatibilityDate = ${capnpText(compatibilityDate)},
      bindings = [
        (name = "GEO_REGIONS", text = ${capnpText(JSON.stringify(regions))}),
        (name = "GEO_KV", kvNamespace = (name = "kv")),
      ],
    )),
    (name = "kv", worker = (
      modules = [(name = "kv.js", esModule = embed "kv.js")],
      compatibilityDate = ${capnpText(compatibilityDate)},
    )),
  ],
  sockets = [(name = "http", address = ${capnpText(`127.0.0.1:${port}`)}, http = (), service = "geo")],
);
`,
  );
  const workerdBin = createRequire(path.join(root, "wrangler/package.json"))("workerd").default;
  const child = spawn(workerdBin, ["serve", path.join(dir, "config.capnp")], { stdio: ["ignore", "inherit", "inherit"] });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const response = await fetch(`${url}/health`);
      if (response.status === 200) break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null) throw new Error(`workerd exited with ${child.exitCode}`);
    if (Date.now() > deadline) throw new Error("workerd did not answer /health within 15 s");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return {
    url,
    pid: child.pid,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once("exit", resolve)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** User + system CPU of a process, in microseconds (Linux /proc). */
function cpuMicros(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(fields[11]) + Number(fields[12]); // utime, stime
  return (ticks * 1e6) / clockTicks;
}
const clockTicks = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout.trim()) || 100;

/** Sends requests from `CONCURRENCY` keep-alive connections for `ms`; checks every answer. */
async function load(url, { method, path: target, bodies, status }, ms) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const until = Date.now() + ms;
  let done = 0;
  let wrong = 0;
  const one = (body) =>
    new Promise((resolve, reject) => {
      const request = http.request(`${url}${target}`, { method, agent }, (response) => {
        if (response.statusCode !== status) wrong++;
        response.resume();
        response.on("end", resolve);
      });
      request.on("error", reject);
      request.end(body);
    });
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, lane) => {
      for (let i = lane; Date.now() < until; i += CONCURRENCY) {
        await one(bodies?.[i % bodies.length]);
        done++;
      }
    }),
  );
  agent.destroy();
  if (wrong > 0) throw new Error(`${method} ${target}: ${wrong} of ${done} answers were not ${status}`);
  return done;
}

/**
 * Measures the endpoints in interleaved rounds (A B C A B C …), so a change in the load the rest
 * of the machine puts on the cores biases none of them; totals per endpoint.
 */
async function measure(workerd, endpoints) {
  for (const endpoint of Object.values(endpoints)) await load(workerd.url, endpoint, WARMUP_MS);
  const totals = Object.fromEntries(Object.keys(endpoints).map((name) => [name, { requests: 0, seconds: 0, cpu: 0 }]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, endpoint] of Object.entries(endpoints)) {
      const cpuBefore = cpuMicros(workerd.pid);
      const started = process.hrtime.bigint();
      totals[name].requests += await load(workerd.url, endpoint, MEASURE_MS / ROUNDS);
      totals[name].seconds += Number(process.hrtime.bigint() - started) / 1e9;
      totals[name].cpu += cpuMicros(workerd.pid) - cpuBefore;
    }
  }
  return Object.fromEntries(
    Object.entries(totals).map(([name, t]) => [
      name,
      { requests: t.requests, perSecond: t.requests / t.seconds, cpuPerRequestUs: t.cpu / t.requests },
    ]),
  );
}

const ENDPOINTS = {
  route: { method: "POST", path: "/v1/route", bodies: ROUTE_BODIES, status: 200 },
  health: { method: "GET", path: "/health", status: 200 },
  // The same POST bodies to a path with no route: HTTP in, body sent, JSON error out.
  floor: { method: "POST", path: "/no-such-route", bodies: ROUTE_BODIES, status: 404 },
};

const nativeFigures = native();
const rows = [
  {
    figure: "route decision CPU, native (select_region, 7-caller mix)",
    value: nativeFigures.decision_ns / 1000,
    unit: "µs",
    target: `<= ${NATIVE_TARGET_US} µs`,
    met: nativeFigures.decision_ns / 1000 <= NATIVE_TARGET_US,
    baseline: "JSON parse of the request + serialise of the decision, native",
    ratio: nativeFigures.decision_ns / nativeFigures.json_ns,
  },
];
const notes = [`native mix: ${nativeFigures.mix} (release profile, opt-level "z", as the Worker ships)`];

const workerd = await startWorkerd();
try {
  // Sanity: the endpoint under load answers real decisions.
  const sample = await (await fetch(`${workerd.url}/v1/route`, { method: "POST", body: ROUTE_BODIES[6] })).json();
  if (sample.region !== "us-west-2" || sample.reason !== "region-code") {
    throw new Error(`unexpected decision under load: ${JSON.stringify(sample)}`);
  }
  const { route, health, floor } = await measure(workerd, ENDPOINTS);
  const marginal = route.cpuPerRequestUs - floor.cpuPerRequestUs;
  rows.push(
    {
      figure: "POST /v1/route CPU per request, workerd",
      value: route.cpuPerRequestUs,
      unit: "µs",
      target: `<= ${WORKERD_REQUEST_TARGET_US} µs`,
      met: route.cpuPerRequestUs <= WORKERD_REQUEST_TARGET_US,
      baseline: "GET /health CPU per request, same Worker",
      ratio: route.cpuPerRequestUs / health.cpuPerRequestUs,
    },
    {
      figure: "POST /v1/route CPU above the floor (read body, decide, answer), workerd",
      value: marginal,
      unit: "µs",
      target: `<= ${WORKERD_MARGINAL_TARGET_US} µs`,
      met: marginal <= WORKERD_MARGINAL_TARGET_US,
      baseline: "the same POSTs answered 404, CPU per request, same Worker",
      ratio: route.cpuPerRequestUs / floor.cpuPerRequestUs,
    },
    {
      figure: `POST /v1/route throughput, workerd, c=${CONCURRENCY}`,
      value: route.perSecond,
      unit: "req/s",
      baseline: "GET /health throughput, same Worker",
      ratio: route.perSecond / health.perSecond,
    },
    { figure: "GET /health CPU per request, workerd (baseline)", value: health.cpuPerRequestUs, unit: "µs" },
    { figure: `GET /health throughput, workerd, c=${CONCURRENCY} (baseline)`, value: health.perSecond, unit: "req/s" },
    { figure: "POST answered 404 CPU per request, workerd (floor)", value: floor.cpuPerRequestUs, unit: "µs" },
  );
  notes.push(
    `workerd: ${route.requests} route, ${health.requests} health, ${floor.requests} 404 requests over ${MEASURE_MS / 1000} s each in ${ROUNDS} interleaved rounds after ${WARMUP_MS / 1000} s warm-up; ` +
      "loopback, the load generator shares the machine's cores; /health reads KV (an in-memory stand-in service).",
  );
} finally {
  await workerd.stop();
}

process.exitCode = report("geo", rows, notes) ? 0 : 1;
