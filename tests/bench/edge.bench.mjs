// The edge chain in raw workerd: what the four Workers add to an authenticated API request on its
// way to the origin, against the same request signed straight to the origin (the baseline), and
// against a plain-JavaScript Worker doing the same hop (tests/bench/edge-js-worker.js).
//
// PROFILE=1 (tests/bench/profile.mjs) also prints where voice-router's and the JS Worker's
// isolates spend their CPU for this request.
//
// The request: `GET /api/v1/agents/bench-agent` with an HS256 JWT (scope agents:admin), from a US
// caller (request.cf through workerd's cf-blob header). voice-router runs its gate: route,
// firewall, then auth-validator (AUTH) ∥ the per-IP check (a RateLimiter Durable Object, bound
// as RATE_LIMITER_OBJECTS) ∥ geo-router (GEO_ROUTER), then the per-principal check (another
// object), signs the request (shared::signing) and forwards it to the region's origin — once
// warm, with the principal and the region decision remembered in its isolate, only the two
// checks, one object after the other, then the origin (issue 15); the origin (server profile,
// embedded SQLite, Bedrock emulator configured) verifies the signature and answers the agent.
// Baseline: `GET /v1/agents/bench-agent` with the edge headers, signed by this script.
//
// Two more JS baselines in the same process (tests/bench/edge-js-worker.js): "warm-direct", the
// JS Worker on the Rust edge's warm path (principal and region remembered, the two limits asked
// of their RateLimiter objects directly, one after the other), the like-for-like comparison; and
// "warm", the same through one in-order call to rate-limiter (the Rust edge's path before it
// bound the objects, and its path in the split topology below).
//
// Two topologies, both from the release `wrangler deploy --dry-run` bundles:
//   together — the four Workers in one workerd, real service bindings, Durable Objects on SQLite
//     storage (tmpfs), KV as in-memory services speaking workerd's KV protocol; the JS Worker
//     beside voice-router in the same process, bound to the same internal Workers. Latency,
//     throughput and the edge's whole CPU per request come from here.
//   split — one workerd per Worker, service bindings as HTTP to the other processes. workerd runs
//     all of a process's isolates on one thread, so a process's CPU cannot be split by Worker;
//     one process per Worker splits it exactly and drives each Worker with exactly the calls
//     voice-router makes for this request (rate-limiter twice). A Durable Object namespace
//     cannot be bound across processes, so here voice-router checks limits through
//     rate-limiter's /check, as it does when RATE_LIMITER_OBJECTS is not bound. Each figure then includes the
//     process's side of one loopback HTTP hop per call, which a service binding does not cost.
//
// Each client lane is its own client: its own IP (CF-Connecting-IP) and its own JWT subject, so
// per-IP and per-principal checks land on per-lane objects as they would for distinct clients.
// The limits are raised through policies:global (KV) so no request is refused: every answer is
// checked (200 and the agent's body).
//
// Inputs (tests/stack/bench.sh): WORKER_BUNDLES_DIR, ORIGIN_BIN, EMULATOR_BIN.

import { readFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { gzipSync } from "node:zlib";
import { edgeHeaders, startEmulator, startOrigin } from "../e2e/harness.mjs";
import { CF, TENANT, WORKERS, externalService, jsWorker, jwt, rustWorker, workerd } from "./edge-stack.mjs";
import { percentile, report } from "./report.mjs";
import { PROFILING, printProfile, profileService } from "./profile.mjs";
import { Client, bundleDir, cpuNs, freePort, root, wasmGzipKb } from "./workerd.mjs";

const LANES = 16;
const SEQUENTIAL_SAMPLES = Number(process.env.EDGE_BENCH_SAMPLES ?? 1_000); // per target at c=1
const WARMUP_SAMPLES = 300;
const ROUND_MS = 1_500; // per target per round at c=16
const ROUNDS = 3;
const SPLIT_MS = 3_000;
const PROFILE_REQUESTS = 1_000; // PROFILE=1

// Targets (issue 7): added latency on this 2-core machine; wasm size per Worker and suite.
const ADDED_P50_MS = 2;
const ADDED_P99_MS = 10;
const WORKER_KB = 400;
const SUITE_KB = 3 * 1024;

const AGENT = "bench-agent";

/** One client per lane: an address, a credential, and the principal auth-validator derives. */
const lanes = Array.from({ length: LANES }, (_, lane) => ({
  ip: `198.51.100.${lane + 1}`,
  token: jwt(`client-${lane}`),
  principal: { tenant_id: TENANT, subject: `client-${lane}`, scopes: ["agents:admin"], plan: "pro", method: "jwt" },
}));


// --- requests -------------------------------------------------------------------------------

const EDGE_PATH = `/api/v1/agents/${AGENT}`;
const ORIGIN_PATH = `/v1/agents/${AGENT}`;

/** A target: how lane `lane` sends the request, and the client it uses. */
function edgeTarget(name, port) {
  const client = new Client(port, LANES);
  return {
    name,
    client,
    send: (lane) =>
      client.request("GET", EDGE_PATH, {
        headers: { authorization: `Bearer ${lanes[lane].token}`, "cf-connecting-ip": lanes[lane].ip, "cf-blob": CF },
      }),
  };
}

function originTarget(port) {
  const client = new Client(port, LANES);
  return {
    name: "origin direct",
    client,
    send: (lane) =>
      client.request("GET", ORIGIN_PATH, {
        headers: { ...edgeHeaders({ method: "GET", pathAndQuery: ORIGIN_PATH, principal: lanes[lane].principal }), "x-cf-region": "us-east-1", "x-cf-country": "US" },
      }),
  };
}

let expectedBody;
const wrong = [];
function check(target, answer) {
  if (answer.status === 200 && answer.text === expectedBody) return;
  if (wrong.length < 5) wrong.push(`${target.name}: ${answer.status} ${answer.text.slice(0, 200)}`);
}
function assertNoneWrong() {
  if (wrong.length > 0) throw new Error(`unexpected answers:\n  ${wrong.join("\n  ")}`);
}

/** Sequential round trips, the targets alternating so each sees the same machine. */
async function sequential(targets, samples) {
  const latencies = targets.map(() => []);
  for (let i = 0; i < samples; i++) {
    for (const [index, target] of targets.entries()) {
      const started = performance.now();
      const answer = await target.send(0);
      latencies[index].push(performance.now() - started);
      check(target, answer);
    }
  }
  assertNoneWrong();
  return latencies;
}

/** `LANES` clients sending back to back for `ms`; latencies and the count. */
async function concurrent(target, ms) {
  const latencies = [];
  const end = performance.now() + ms;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: LANES }, async (_, lane) => {
      while (performance.now() < end) {
        const sent = performance.now();
        const answer = await target.send(lane);
        latencies.push(performance.now() - sent);
        check(target, answer);
      }
    }),
  );
  assertNoneWrong();
  return { latencies, count: latencies.length, seconds: (performance.now() - started) / 1000 };
}

const stats = (values) => ({ p50: percentile(values, 50), p99: percentile(values, 99) });

const startedAt = performance.now();
/** A progress line on stderr, so a slow or stuck stage shows where it is. */
const progress = (message) => console.error(`  [edge ${((performance.now() - startedAt) / 1000).toFixed(1)} s] ${message}`);

// --- the run --------------------------------------------------------------------------------

const rows = [];
const notes = [];
const load = os.loadavg()[0];

const emulator = await startEmulator({ ttftMs: 20, interTokenMs: 2 });
let origin;
const processes = [];
const clients = [];
try {
  // info for the origin's "origin listening" line (startOrigin waits for it); its per-request access
  // log off: both paths cross the origin, and parsing a line per request would load the client.
  origin = await startOrigin({ BEDROCK_ENDPOINT_URL: emulator.url, RUST_LOG: "warn,origin=info,origin::request_id=warn", DATABASE_POOL_SIZE: "8" });
  const originPort = Number(new URL(origin.url).port);
  // The origin listens before its database is ready and answers 503 until then: retry, bounded.
  for (const deadline = Date.now() + 15_000; ; ) {
    const put = await fetch(`${origin.url}${ORIGIN_PATH}`, {
      method: "PUT",
      headers: {
        ...edgeHeaders({ method: "PUT", pathAndQuery: ORIGIN_PATH, body: JSON.stringify(agentSpec()), principal: lanes[0].principal }),
        "content-type": "application/json",
      },
      body: JSON.stringify(agentSpec()),
    });
    if ([200, 201].includes(put.status)) break;
    if (put.status !== 503 || Date.now() > deadline) throw new Error(`creating the agent: ${put.status} ${await put.text()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }

  progress("starting the four Workers and the JS Workers in one workerd");
  // Together: the four Workers and the JS baselines in one process.
  const ports = { rust: await freePort(), js: await freePort(), proxy: await freePort(), warm: await freePort(), direct: await freePort(), hop: await freePort() };
  const inspectorPort = PROFILING ? await freePort() : undefined;
  const together = await workerd(
    "together",
    (dir) => [
      ...WORKERS.flatMap((worker) => rustWorker(worker, dir, origin.url)),
      ...rustWorker("voice-router", dir, origin.url, undefined, { name: "voice-router-hop", objects: false }),
      jsWorker("js-chain", "chain", dir, origin.url),
      jsWorker("js-proxy", "proxy", dir, origin.url),
      jsWorker("js-warm", "warm", dir, origin.url),
      jsWorker("js-warm-direct", "warm-direct", dir, origin.url),
      externalService("origin", originPort),
    ],
    [
      { name: "rust", port: ports.rust, service: "voice-router" },
      { name: "js", port: ports.js, service: "js-chain" },
      { name: "proxy", port: ports.proxy, service: "js-proxy" },
      { name: "warm", port: ports.warm, service: "js-warm" },
      { name: "direct", port: ports.direct, service: "js-warm-direct" },
      { name: "hop", port: ports.hop, service: "voice-router-hop" },
    ],
    inspectorPort,
  );
  processes.push(together);

  const direct = originTarget(originPort);
  const rust = edgeTarget("edge (Rust, four Workers)", ports.rust);
  const js = edgeTarget("JS Worker, same chain", ports.js);
  const proxy = edgeTarget("JS sign-and-forward proxy", ports.proxy);
  const jsWarm = edgeTarget("JS Worker, warm path", ports.warm);
  const jsDirect = edgeTarget("JS Worker, warm path, objects bound directly", ports.direct);
  const rustHop = edgeTarget("edge (Rust), limits through rate-limiter's /check", ports.hop);
  const targets = [direct, rust, js, proxy, jsWarm, jsDirect, rustHop];
  clients.push(...targets.map((t) => t.client));

  progress("checking every path's answer");
  // Every path answers the agent, and the edge's answer is the edge's (headers of the gate).
  const reference = await direct.send(0);
  if (reference.status !== 200) throw new Error(`origin direct: ${reference.status} ${reference.text}`);
  expectedBody = reference.text;
  for (const target of [rust, js, jsWarm, jsDirect, rustHop]) {
    const answer = await target.send(0);
    check(target, answer);
    assertNoneWrong();
    for (const header of ["ratelimit-policy", "x-content-type-options", "strict-transport-security"]) {
      if (!answer.headers[header]) throw new Error(`${target.name}: no ${header} header: ${JSON.stringify(answer.headers)}`);
    }
    if (!/"ip"/.test(answer.headers["ratelimit-policy"]) || !/"principal"/.test(answer.headers["ratelimit-policy"])) {
      throw new Error(`${target.name}: both limits should be advertised, got ${answer.headers["ratelimit-policy"]}`);
    }
  }
  // The edge refuses what it must: no credential is a 401 from auth-validator, not the agent.
  const anonymous = await rust.client.request("GET", EDGE_PATH, { headers: { "cf-connecting-ip": lanes[0].ip, "cf-blob": CF } });
  if (anonymous.status !== 401) throw new Error(`an anonymous request answered ${anonymous.status}: ${anonymous.text}`);

  progress("warming up");
  // Warm-up: isolates, the objects of every lane, V8's optimising tiers, the origin's caches.
  await sequential(targets, WARMUP_SAMPLES);
  for (const target of targets) await concurrent(target, 500);

  progress("c=1: sequential requests");
  // c = 1.
  const seq = (await sequential(targets, SEQUENTIAL_SAMPLES)).map(stats);
  progress("c=16: interleaved rounds");
  // c = 16, interleaved rounds; the edge's CPU per request from the process's CPU time.
  const c16 = targets.map(() => ({ latencies: [], count: 0, seconds: 0, cpuNs: 0 }));
  for (let round = 0; round < ROUNDS; round++) {
    for (const [index, target] of targets.entries()) {
      const before = cpuNs(together.pid);
      const run = await concurrent(target, ROUND_MS);
      c16[index].cpuNs += cpuNs(together.pid) - before;
      c16[index].latencies.push(...run.latencies);
      c16[index].count += run.count;
      c16[index].seconds += run.seconds;
    }
  }
  if (PROFILING) {
    // Where each entry Worker's CPU goes for this request (tests/bench/profile.mjs).
    for (const [service, target] of [["voice-router", rust], ["js-chain", js]]) {
      progress(`profiling ${service}'s isolate over ${PROFILE_REQUESTS} sequential requests`);
      const top = await profileService({
        port: inspectorPort,
        service,
        load: async () => {
          for (let i = 0; i < PROFILE_REQUESTS; i++) check(target, await target.send(0));
        },
      });
      printProfile(`${service} isolate, an authenticated API request`, top);
    }
    assertNoneWrong();
  }
  const conc = c16.map((run) => ({ ...stats(run.latencies), rate: run.count / run.seconds, cpuUs: run.cpuNs / run.count / 1000 }));
  const [d, r, j, p, w, o, h] = [0, 1, 2, 3, 4, 5, 6];

  for (const [label, at] of [["c=1", seq], [`c=${LANES}`, conc]]) {
    for (const [stat, target] of [["p50", ADDED_P50_MS], ["p99", ADDED_P99_MS]]) {
      const added = at[r][stat] - at[d][stat];
      const addedJs = at[j][stat] - at[d][stat];
      const addedProxy = at[p][stat] - at[d][stat];
      rows.push({
        figure: `added latency ${stat}, ${label}: edge (Rust) − origin direct`,
        value: added,
        unit: "ms",
        target: `<= ${target} ms`,
        met: added <= target,
        baseline: `JS Worker, same chain: ${addedJs.toFixed(2)} ms`,
        ratio: added / addedJs,
        headline: true,
      });
      rows.push({
        figure: `latency ${stat}, ${label}, through the edge (Rust)`,
        value: at[r][stat],
        unit: "ms",
        baseline: `origin direct: ${at[d][stat].toFixed(2)} ms`,
        ratio: at[r][stat] / at[d][stat],
      });
      rows.push({
        figure: `latency ${stat}, ${label}, through the JS Worker (same chain)`,
        value: at[j][stat],
        unit: "ms",
        baseline: `origin direct: ${at[d][stat].toFixed(2)} ms`,
        ratio: at[j][stat] / at[d][stat],
      });
      rows.push({
        figure: `added latency ${stat}, ${label}: JS sign-and-forward proxy (the floor of a hop)`,
        value: addedProxy,
        unit: "ms",
      });
      // Like for like: the JS Worker on the Rust edge's warm path, the objects bound directly as
      // voice-router binds them; and the same JS through the rate-limiter Worker's hop.
      const addedWarm = at[w][stat] - at[d][stat];
      const addedDirect = at[o][stat] - at[d][stat];
      rows.push({
        figure: `added latency ${stat}, ${label}: edge (Rust) against the JS Worker on the same warm path`,
        value: added,
        unit: "ms",
        baseline: `JS Worker, warm path, objects bound directly: ${addedDirect.toFixed(2)} ms`,
        ratio: added / addedDirect,
      });
      const addedHop = at[h][stat] - at[d][stat];
      rows.push({
        figure: `added latency ${stat}, ${label}: edge (Rust) with RATE_LIMITER_OBJECTS against itself through rate-limiter's /check`,
        value: added,
        unit: "ms",
        baseline: `edge (Rust), limits through rate-limiter: ${addedHop.toFixed(2)} ms`,
        ratio: added / addedHop,
      });
      rows.push({
        figure: `added latency ${stat}, ${label}: JS warm path with the RateLimiter objects bound directly (no rate-limiter hop)`,
        value: addedDirect,
        unit: "ms",
        baseline: `JS Worker, warm path through rate-limiter: ${addedWarm.toFixed(2)} ms`,
        ratio: addedDirect / addedWarm,
      });
    }
  }
  rows.push({
    figure: `requests/s through the edge (Rust), c=${LANES}`,
    value: conc[r].rate,
    unit: "req/s",
    baseline: `JS Worker, same chain: ${Math.round(conc[j].rate)} req/s`,
    ratio: conc[r].rate / conc[j].rate,
    headline: true,
  });
  rows.push({
    figure: `requests/s, origin direct, c=${LANES}`,
    value: conc[d].rate,
    unit: "req/s",
  });
  rows.push({
    figure: `requests/s through the JS sign-and-forward proxy, c=${LANES}`,
    value: conc[p].rate,
    unit: "req/s",
  });
  rows.push({
    figure: "edge CPU per request, all four Workers in one workerd (Rust)",
    value: conc[r].cpuUs,
    unit: "µs",
    baseline: `JS Worker + the same three Rust Workers: ${Math.round(conc[j].cpuUs)} µs`,
    ratio: conc[r].cpuUs / conc[j].cpuUs,
    headline: true,
  });
  rows.push({
    figure: "edge CPU per request, all four Workers in one workerd (Rust), against the JS Worker on the same warm path",
    value: conc[r].cpuUs,
    unit: "µs",
    baseline: `JS Worker, warm path, objects bound directly, + the same three Rust Workers: ${Math.round(conc[o].cpuUs)} µs`,
    ratio: conc[r].cpuUs / conc[o].cpuUs,
  });
  rows.push({
    figure: "edge CPU per request (Rust) with RATE_LIMITER_OBJECTS, against itself through rate-limiter's /check",
    value: conc[r].cpuUs,
    unit: "µs",
    baseline: `edge (Rust), limits through rate-limiter: ${Math.round(conc[h].cpuUs)} µs`,
    ratio: conc[r].cpuUs / conc[h].cpuUs,
  });
  rows.push({
    figure: "edge CPU per request, JS warm path with the RateLimiter objects bound directly",
    value: conc[o].cpuUs,
    unit: "µs",
    baseline: `JS Worker, warm path through rate-limiter: ${Math.round(conc[w].cpuUs)} µs`,
    ratio: conc[o].cpuUs / conc[w].cpuUs,
  });
  rows.push({ figure: "edge CPU per request, JS sign-and-forward proxy (no service calls)", value: conc[p].cpuUs, unit: "µs" });
  notes.push(
    `c=1: ${SEQUENTIAL_SAMPLES} sequential requests per path, alternating; c=${LANES}: ${ROUNDS} interleaved rounds of ${ROUND_MS / 1000} s per path; ${LANES} clients (own IP, own JWT subject)`,
    "added = percentile through the path − the same percentile of the origin direct, so queueing at c=16 is counted where it happens (workerd runs every isolate of a process on one thread)",
    `1-min load average at start ${load.toFixed(2)} on ${os.cpus().length} cores; the client (Node), the origin, the emulator and workerd share them`,
    "the origin's per-request access log is off for both paths (RUST_LOG origin::request_id=warn); the JS sign-and-forward proxy's CPU is workerd's cost of one request in and one subrequest out",
    `JS Worker (tests/bench/edge-js-worker.js): voice-router's stages for this request in plain JS over the same bindings to the same Rust auth-validator, rate-limiter and geo-router (same envelopes, two limit checks, HMAC signing with WebCrypto); the proxy only signs and forwards`,
    "JS warm path: the JS Worker remembering the principal and the region as the Rust edge does; with the objects bound directly (the like-for-like baseline) it names them with rate-limiter's key, one after the other, as voice-router does; through rate-limiter, both limits in one in-order call to /check. The JS Worker sends its objects the policy itself, where voice-router's objects resolve it (an in-isolate cache hit)",
    "split topology: voice-router checks through rate-limiter's /check (a namespace cannot be bound across workerd processes)",
  );
  for (const c of clients) c.close();
  clients.length = 0;
  await together.stop();
  processes.length = 0;

  progress("CPU per Worker: one workerd per Worker");
  // Split: one workerd per Worker, for CPU per Worker.
  const internal = {};
  for (const worker of WORKERS.slice(1)) {
    const port = await freePort();
    internal[worker] = { port, handle: await workerd(worker, (dir) => rustWorker(worker, dir, origin.url), [{ name: "http", port, service: worker }]) };
    processes.push(internal[worker].handle);
  }
  const bind = (service) => `${service}-remote`;
  const remotes = () => Object.entries(internal).map(([worker, { port }]) => externalService(bind(worker), port));
  const splitPorts = { rust: await freePort(), js: await freePort() };
  const voice = await workerd(
    "voice-router",
    (dir) => [...rustWorker("voice-router", dir, origin.url, bind), ...remotes(), externalService("origin", originPort)],
    [{ name: "http", port: splitPorts.rust, service: "voice-router" }],
  );
  processes.push(voice);
  const jsEntry = await workerd("js", (dir) => [jsWorker("js-chain", "chain", dir, origin.url, bind), ...remotes(), externalService("origin", originPort)], [
    { name: "http", port: splitPorts.js, service: "js-chain" },
  ]);
  processes.push(jsEntry);
  const splitRust = edgeTarget("edge (Rust), one workerd per Worker", splitPorts.rust);
  const splitJs = edgeTarget("JS Worker, one workerd per Worker", splitPorts.js);
  clients.push(splitRust.client, splitJs.client);
  const pids = { "voice-router": voice.pid, "JS Worker": jsEntry.pid, ...Object.fromEntries(Object.entries(internal).map(([w, { handle }]) => [w, handle.pid])) };
  const cpu = {};
  for (const target of [splitRust, splitJs]) await concurrent(target, 1_000);
  for (const target of [splitRust, splitJs]) {
    const before = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, cpuNs(pid)]));
    const run = await concurrent(target, SPLIT_MS);
    cpu[target.name] = Object.fromEntries(Object.entries(pids).map(([name, pid]) => [name, (cpuNs(pid) - before[name]) / run.count / 1000]));
  }
  const rustCpu = cpu[splitRust.name];
  const jsCpu = cpu[splitJs.name];
  rows.push({
    figure: "CPU per request, voice-router (own workerd)",
    value: rustCpu["voice-router"],
    unit: "µs",
    baseline: `JS Worker in its place: ${Math.round(jsCpu["JS Worker"])} µs`,
    ratio: rustCpu["voice-router"] / jsCpu["JS Worker"],
    headline: true,
  });
  for (const worker of WORKERS.slice(1)) {
    rows.push({
      figure: `CPU per request, ${worker} (own workerd)${worker === "rate-limiter" ? ", the entry's two checks and their objects" : ", the entry's calls"}`,
      value: rustCpu[worker],
      unit: "µs",
      baseline: `same Worker, JS entry: ${Math.round(jsCpu[worker])} µs`,
      ratio: rustCpu[worker] / jsCpu[worker],
      headline: true,
    });
  }
  notes.push(
    `CPU per Worker: ${SPLIT_MS / 1000} s at c=${LANES} per entry, each process's CPU time (all threads) over the requests; each figure includes its side of a loopback HTTP hop per call`,
    "voice-router remembers verified principals and geo-router's decisions (issue 15): on this warm path it calls neither auth-validator nor geo-router and takes both limits in one in-order call, while the JS Worker makes every call each time; so their rows are what the chain costs them per request, not the cost of one call (auth.bench.mjs and geo.bench.mjs measure that)",
  );

  // Sizes of what deploys.
  let suite = 0;
  for (const worker of WORKERS) {
    const kb = wasmGzipKb(bundleDir(worker));
    suite += kb;
    rows.push({ figure: `wasm gzip, ${worker}`, value: kb, unit: "KB", target: `<= ${WORKER_KB} KB`, met: kb <= WORKER_KB, headline: true });
  }
  const jsKb = gzipSync(readFileSync(path.join(root, "tests/bench/edge-js-worker.js")), { level: 9 }).length / 1024;
  rows.push({ figure: "wasm gzip, the four Workers together", value: suite, unit: "KB", target: `< ${SUITE_KB / 1024} MB`, met: suite < SUITE_KB, headline: true });
  notes.push(`the JS Worker is ${jsKb.toFixed(1)} KB gzip (it does only this request)`);
} finally {
  for (const c of clients) c.close();
  for (const p of processes) await p.stop().catch(() => {});
  await origin?.stop();
  await emulator.stop();
}

function agentSpec() {
  return { name: "Bench", system_prompt: "You are a fast voice agent.", model: "bench-model", fallback_models: [] };
}

process.exitCode = report("edge", rows, notes) ? 0 : 1;
