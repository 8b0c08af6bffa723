// A rolling deploy under load (issue 18): concurrent calls through the four Workers in raw
// workerd and their `CallSession` objects, to two origin processes behind one load balancer (a
// TCP proxy in this process standing in for the ALB) sharing one database. Mid-run the balancer
// stops sending new connections to origin A (the target is deregistered) and A gets SIGTERM: it
// takes no new call, finishes each live turn, closes its relay sockets with 1012, and every
// object reconnects through the balancer to B, replaying the call's `setup`. Each caller keeps
// talking throughout, with a pause between turns as a person makes.
//
// Figures: calls dropped and turns lost (target 0 each: a turn is lost when what the caller said
// is not among the call's stored turns, or stored twice), turns completed, time to first token
// p50/p99 before the drain and from the drain to the end, the longest a caller waited for a first
// token across the drain, and how long A took to drain and exit.
//
// Inputs (tests/stack/bench.sh): WORKER_BUNDLES_DIR, ORIGIN_BIN, EMULATOR_BIN. Bounded:
// DRAIN_BENCH_CALLS (20) callers for DRAIN_BENCH_SECS (9) seconds, loopback only.

import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { relaySocket, signedCall, startEmulator, startOrigin, tcpProxy } from "../e2e/harness.mjs";
import { CF, TENANT, WORKERS, externalService, jwt, rustWorker, workerd } from "./edge-stack.mjs";
import { percentile, report } from "./report.mjs";
import { Client, freePort } from "./workerd.mjs";

const CALLS = Number(process.env.DRAIN_BENCH_CALLS ?? 20);
const RUN_MS = Number(process.env.DRAIN_BENCH_SECS ?? 9) * 1000;
const DRAIN_AT_MS = Math.round(RUN_MS / 3);
const PAUSE_MS = 250; // between a reply's end and the caller's next words
const TTFT_MS = 20;
const MODEL = "bench-drain";
const AGENT = "bench-drain-agent";
const REPLY = "We open at nine. We close at five.";
const principal = { tenant_id: TENANT, subject: "drain-bench", scopes: ["calls:read", "calls:write", "agents:admin"], plan: "pro", method: "jwt" };
const token = jwt("drain-bench", "calls:read calls:write agents:admin");
const EDGE_HEADERS = { "cf-connecting-ip": "198.51.100.9", "cf-blob": CF };

const startedAt = performance.now();
const progress = (message) => console.error(`  [drain ${((performance.now() - startedAt) / 1000).toFixed(1)} s] ${message}`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One caller until `until` (performance.now()): turns with a pause between them. Returns what
 * it said, each turn's [start, time to first token], and why it stopped early, if it did.
 */
async function caller(socket, callIndex, until) {
  const said = [];
  const turns = [];
  try {
    for (let turn = 0; performance.now() < until; turn++) {
      const words = `Call ${callIndex}, turn ${turn}: when do you open?`;
      const sent = performance.now();
      socket.send({ type: "prompt", voicePrompt: words, lang: "en-US", last: true });
      said.push(words);
      let first = null;
      let reply = "";
      for (;;) {
        const message = await socket.next(15_000);
        if (message.type !== "text") throw new Error(`a ${message.type} message mid-call: ${JSON.stringify(message)}`);
        first ??= performance.now() - sent;
        reply += message.token;
        if (message.last) break;
      }
      if (reply !== REPLY) throw new Error(`the reply was ${JSON.stringify(reply)}`);
      turns.push([sent, first]);
      await sleep(PAUSE_MS);
    }
    return { said, turns, dropped: null };
  } catch (error) {
    return { said, turns, dropped: String(error?.message ?? error) };
  }
}

const rows = [];
const notes = [];
const load = os.loadavg()[0];
const emulator = await startEmulator({ ttftMs: TTFT_MS, interTokenMs: 2 });
const origins = [];
let balancer;
let edge;
const sockets = [];
const clients = [];
try {
  await emulator.script(MODEL, { ttft_ms: TTFT_MS, inter_token_ms: 2, reply: REPLY });
  // Two tasks of one region: one database (PostgreSQL's schema when the test command's is
  // there, else one SQLite file both open), one emulator.
  const shared = {
    BEDROCK_ENDPOINT_URL: emulator.url,
    SHUTDOWN_GRACE_SECS: "10",
    RUST_LOG: "warn,origin=info,origin::request_id=warn",
  };
  if (process.env.DATABASE_URL?.startsWith("postgres")) shared.DATABASE_SCHEMA = `drain_bench_${process.pid}`;
  else shared.DATABASE_URL = `sqlite://${path.join(mkdtempSync(path.join(os.tmpdir(), "aybiza-drain-bench-")), "calls.sqlite3")}?mode=rwc`;
  const a = await startOrigin(shared);
  origins.push(a);
  const b = await startOrigin(shared);
  origins.push(b);
  balancer = await tcpProxy(a.url);

  const spec = JSON.stringify({ name: "Drain bench", system_prompt: "You answer at once.", model: MODEL, fallback_models: [], idle_reprompt_secs: 0 });
  // The origin listens before its database is ready and answers 503 until then: retry, bounded.
  for (const deadline = Date.now() + 15_000; ; ) {
    const put = await signedCall(a, "PUT", `/v1/agents/${AGENT}`, { body: spec, principal });
    if ([200, 201].includes(put.status)) break;
    if (put.status !== 503 || Date.now() > deadline) throw new Error(`creating the agent: ${put.status} ${await put.text()}`);
    await sleep(100);
  }

  progress("starting the four Workers in one workerd, their origin the balancer");
  const port = await freePort();
  const balancerPort = Number(new URL(balancer.url).port);
  edge = await workerd(
    "drain",
    (dir) => [...WORKERS.flatMap((worker) => rustWorker(worker, dir, balancer.url)), externalService("origin", balancerPort)],
    [{ name: "http", port, service: "voice-router" }],
  );
  const api = new Client(port, 4);
  clients.push(api);

  progress(`${CALLS} calls: created through the edge, their relay sockets opened`);
  const calls = [];
  for (let i = 0; i < CALLS; i++) {
    const created = await api.request("POST", "/api/v1/calls", {
      body: JSON.stringify({ agent_id: AGENT }),
      headers: { authorization: `Bearer ${token}`, ...EDGE_HEADERS },
    });
    if (created.status !== 201) throw new Error(`creating call ${i}: ${created.status} ${created.text}`);
    const call = JSON.parse(created.text);
    const relayUrl = new URL(call.relay_url);
    const socket = await relaySocket(`ws://127.0.0.1:${port}${relayUrl.pathname}${relayUrl.search}`, EDGE_HEADERS);
    sockets.push(socket);
    socket.send({ type: "setup", sessionId: `VX-${call.call_id}`, callSid: call.call_id, from: "", to: "", direction: "inbound", customParameters: { agent_id: AGENT } });
    calls.push({ id: call.call_id, socket });
  }

  progress(`talking for ${RUN_MS / 1000} s; A is drained at ${DRAIN_AT_MS / 1000} s`);
  const talkStarted = performance.now();
  const until = talkStarted + RUN_MS;
  const talking = calls.map((call, i) => caller(call.socket, i, until));
  await sleep(DRAIN_AT_MS);
  const drainAt = performance.now();
  balancer.switchTo(b.url);
  const exited = a.stop("SIGTERM").then((code) => ({ code, ms: performance.now() - drainAt }));
  const results = await Promise.all(talking);
  const aExit = await exited;
  progress(`A exited ${aExit.ms.toFixed(0)} ms after SIGTERM (code ${aExit.code}); reading every call's stored turns at B`);

  let lost = 0;
  let twice = 0;
  for (const [i, call] of calls.entries()) {
    const response = await signedCall(b, "GET", `/v1/calls/${call.id}/turns`, { principal });
    if (response.status !== 200) throw new Error(`turns of ${call.id}: ${response.status} ${await response.text()}`);
    const stored = (await response.json()).turns.filter((turn) => turn.role === "user").map((turn) => turn.text);
    for (const words of results[i].said) {
      const times = stored.filter((text) => text === words).length;
      // The last words of a caller cut off by the end of the run may still be answered.
      if (times === 0 && words !== results[i].said.at(-1)) lost += 1;
      if (times > 1) twice += 1;
    }
  }
  const dropped = results.filter((result) => result.dropped);
  const all = results.flatMap((result) => result.turns);
  const before = all.filter(([sent]) => sent < drainAt).map(([, first]) => first);
  const across = all.filter(([sent]) => sent >= drainAt).map(([, first]) => first);
  const seconds = (performance.now() - talkStarted) / 1000;

  rows.push(
    { figure: "rolling deploy: calls dropped (a caller's socket ended or a turn got no reply)", value: dropped.length, unit: "calls", target: "= 0", met: dropped.length === 0, headline: true },
    { figure: "rolling deploy: turns lost (said, not stored) or stored twice", value: lost + twice, unit: "turns", target: "= 0", met: lost + twice === 0, headline: true },
    { figure: "rolling deploy: turns completed", value: all.length, unit: "turns", baseline: `${(all.length / seconds).toFixed(1)} turns/s over ${seconds.toFixed(1)} s` },
    { figure: "rolling deploy: first token p50 before the drain", value: percentile(before, 50), unit: "ms" },
    { figure: "rolling deploy: first token p99 before the drain", value: percentile(before, 99), unit: "ms" },
    {
      figure: "rolling deploy: first token p50 from the drain on",
      value: percentile(across, 50),
      unit: "ms",
      baseline: "before the drain",
      ratio: percentile(across, 50) / percentile(before, 50),
    },
    {
      figure: "rolling deploy: first token p99 from the drain on",
      value: percentile(across, 99),
      unit: "ms",
      baseline: "before the drain",
      ratio: percentile(across, 99) / percentile(before, 99),
      headline: true,
    },
    { figure: "rolling deploy: longest wait for a first token from the drain on (a reconnect included)", value: Math.max(...across), unit: "ms", headline: true },
    { figure: "rolling deploy: origin A's drain, SIGTERM to exit", value: aExit.ms, unit: "ms", headline: true },
  );
  for (const result of dropped.slice(0, 3)) notes.push(`dropped: ${result.dropped}`);
  notes.push(
    `${CALLS} calls through the edge for ${RUN_MS / 1000} s, ${PAUSE_MS} ms between a reply's end and the next words; the balancer moved to B and A got SIGTERM at ${DRAIN_AT_MS / 1000} s`,
    `the emulator's time to first token fixed at ${TTFT_MS} ms; a turn counts as lost only if its words are not among the call's stored turns after the run (a caller's last words, cut by the end of the run, excepted)`,
    `1-min load average at start ${load.toFixed(2)} on ${os.cpus().length} cores; the callers (Node), both origins, the emulator and workerd share them`,
  );
} finally {
  for (const socket of sockets) socket.close();
  for (const client of clients) client.close();
  await edge?.stop().catch(() => {});
  await balancer?.close();
  for (const origin of origins) await origin.stop();
  await emulator.stop();
}

process.exitCode = report("drain", rows, notes) ? 0 : 1;
