// The voice path where the caller hears it: a final `prompt` → the first `text` token, through
// voice-router and the call's `CallSession` object to the origin's relay and back, against the
// same turn sent straight to the origin's relay socket (signed as the edge signs). Both sockets
// belong to calls of one agent whose model (the Bedrock emulator) has a fixed time to first token,
// so the difference is what the edge adds to a spoken turn.
//
// The floor of such a hop in workerd, measured in the same run: the same turn through a
// plain-JS Worker and Durable Object that only pass messages between the caller's socket and
// the origin's (tests/bench/voice-js-relay.js).
//
// Release bundles in raw `workerd serve` (the four Workers in one process, as edge.bench.mjs
// runs them), the origin and emulator from the server profile. The workerd process's CPU time
// over the edge's turns, divided by the messages the object relayed (the prompt in, every
// `text` out), is the CPU per relayed message: during these turns nothing else runs in it.
//
// Inputs (tests/stack/bench.sh): WORKER_BUNDLES_DIR, ORIGIN_BIN, EMULATOR_BIN.

import os from "node:os";
import { edgeHeaders, relaySocket, startEmulator, startOrigin } from "../e2e/harness.mjs";
import { CF, TENANT, WORKERS, externalService, jsRelay, jwt, rustWorker, workerd } from "./edge-stack.mjs";
import { percentile, report } from "./report.mjs";
import { PROFILING, printProfile, profileService } from "./profile.mjs";
import { Client, cpuNs, freePort } from "./workerd.mjs";

const TURNS = Number(process.env.VOICE_BENCH_TURNS ?? 400); // per path
const WARMUP_TURNS = 40;
const TTFT_MS = 20;
const MODEL = "bench-voice";
const AGENT = "bench-voice-agent";
const REPLY = "We open at nine. We close at five.";
// Targets (issue 15): what the edge adds to a turn's first token.
const ADDED_P50_MS = 1;
const ADDED_P99_MS = 3;

const principal = { tenant_id: TENANT, subject: "voice-bench", scopes: ["calls:write", "agents:admin"], plan: "pro", method: "jwt" };
const token = jwt("voice-bench", "calls:read calls:write agents:admin");

/** A relay socket (the e2e harness's client) with `turn(text)`: [ms to the first token, text messages]. */
async function relay(url, headers) {
  const socket = await relaySocket(url, headers);
  return {
    ...socket,
    /** One turn: the prompt out, the time to the first `text`, then the rest of the reply. */
    async turn(text) {
      const sent = performance.now();
      socket.send({ type: "prompt", voicePrompt: text, lang: "en-US", last: true });
      let first = null;
      let messages = 0;
      let reply = "";
      for (;;) {
        const message = await socket.next(10_000);
        if (message.type !== "text") throw new Error(`unexpected ${JSON.stringify(message)}`);
        first ??= performance.now() - sent;
        messages += 1;
        reply += message.token;
        if (message.last) break;
      }
      if (reply !== REPLY) throw new Error(`the reply was ${JSON.stringify(reply)}`);
      return [first, messages];
    },
  };
}

const setup = (callId) => ({ type: "setup", sessionId: `VX-${callId}`, callSid: callId, from: "", to: "", direction: "inbound", customParameters: { agent_id: AGENT } });

const startedAt = performance.now();
const progress = (message) => console.error(`  [voice ${((performance.now() - startedAt) / 1000).toFixed(1)} s] ${message}`);

const rows = [];
const notes = [];
const load = os.loadavg()[0];
const emulator = await startEmulator({ ttftMs: TTFT_MS, interTokenMs: 2 });
let origin;
let edge;
const sockets = [];
const clients = [];
try {
  origin = await startOrigin({ BEDROCK_ENDPOINT_URL: emulator.url, RUST_LOG: "warn,origin=info,origin::request_id=warn" });
  await emulator.script(MODEL, { ttft_ms: TTFT_MS, inter_token_ms: 2, reply: REPLY });
  const signed = (method, pathAndQuery, body) =>
    fetch(`${origin.url}${pathAndQuery}`, {
      method,
      headers: { ...edgeHeaders({ method, pathAndQuery, body: body ?? "", principal }), "content-type": "application/json" },
      body,
    });
  const spec = JSON.stringify({ name: "Voice bench", system_prompt: "You answer at once.", model: MODEL, fallback_models: [], idle_reprompt_secs: 0 });
  // The origin listens before its database is ready and answers 503 until then: retry, bounded.
  for (const deadline = Date.now() + 15_000; ; ) {
    const put = await signed("PUT", `/v1/agents/${AGENT}`, spec);
    if ([200, 201].includes(put.status)) break;
    if (put.status !== 503 || Date.now() > deadline) throw new Error(`creating the agent: ${put.status} ${await put.text()}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }

  progress("starting the four Workers in one workerd");
  const port = await freePort();
  const jsPort = await freePort();
  const inspectorPort = PROFILING ? await freePort() : undefined;
  const originPort = Number(new URL(origin.url).port);
  edge = await workerd(
    "voice",
    (dir) => [...WORKERS.flatMap((worker) => rustWorker(worker, dir, origin.url)), jsRelay("js-relay", dir), externalService("origin", originPort)],
    [
      { name: "http", port, service: "voice-router" },
      { name: "js", port: jsPort, service: "js-relay" },
    ],
    inspectorPort,
  );
  const api = new Client(port, 1);
  clients.push(api);

  // The edge's socket: an API call's relay URL, as the console or a client opens it.
  const created = await api.request("POST", "/api/v1/calls", {
    body: JSON.stringify({ agent_id: AGENT }),
    headers: { authorization: `Bearer ${token}`, "cf-connecting-ip": "198.51.100.7", "cf-blob": CF },
  });
  if (created.status !== 201) throw new Error(`creating the edge's call: ${created.status} ${created.text}`);
  const call = JSON.parse(created.text);
  const relayUrl = new URL(call.relay_url);
  const viaEdge = await relay(`ws://127.0.0.1:${port}${relayUrl.pathname}${relayUrl.search}`, { "cf-connecting-ip": "198.51.100.7", "cf-blob": CF });
  sockets.push(viaEdge);
  viaEdge.send(setup(call.call_id));

  // The direct socket: a call of the same agent at the origin, its relay signed as the edge does.
  const direct = await signed("POST", "/v1/calls", JSON.stringify({ agent_id: AGENT, source: "api" }));
  if (direct.status !== 201) throw new Error(`creating the direct call: ${direct.status} ${await direct.text()}`);
  const directId = (await direct.json()).id;
  const pathAndQuery = `/v1/calls/${directId}/relay`;
  const straight = await relay(`${origin.url.replace("http", "ws")}${pathAndQuery}`, edgeHeaders({ method: "GET", pathAndQuery, principal, stream: true }));
  sockets.push(straight);
  straight.send(setup(directId));

  // The JS floor's socket: another call at the origin, relayed by the plain-JS Worker and object.
  const forJs = await signed("POST", "/v1/calls", JSON.stringify({ agent_id: AGENT, source: "api" }));
  if (forJs.status !== 201) throw new Error(`creating the JS floor's call: ${forJs.status} ${await forJs.text()}`);
  const jsId = (await forJs.json()).id;
  const jsPath = `/v1/calls/${jsId}/relay`;
  const viaJs = await relay(`ws://127.0.0.1:${jsPort}/relay`, {
    "x-relay-origin": `${origin.url}${jsPath}`,
    "x-relay-headers": JSON.stringify(edgeHeaders({ method: "GET", pathAndQuery: jsPath, principal, stream: true })),
  });
  sockets.push(viaJs);
  viaJs.send(setup(jsId));

  progress(`warming up (${WARMUP_TURNS} turns per path)`);
  for (let i = 0; i < WARMUP_TURNS; i++) {
    await viaEdge.turn("When are you open?");
    await straight.turn("When are you open?");
    await viaJs.turn("When are you open?");
  }

  progress(`${TURNS} turns per path, alternating`);
  const edgeFirst = [];
  const directFirst = [];
  const jsFirst = [];
  let jsCpuNs = 0;
  let jsRelayed = 0;
  let edgeCpuNs = 0;
  let relayed = 0;
  for (let i = 0; i < TURNS; i++) {
    const before = cpuNs(edge.pid);
    const [ms, messages] = await viaEdge.turn("When are you open?");
    edgeCpuNs += cpuNs(edge.pid) - before;
    relayed += messages + 1;
    edgeFirst.push(ms);
    directFirst.push((await straight.turn("When are you open?"))[0]);
    const beforeJs = cpuNs(edge.pid);
    const [jsMs, jsMessages] = await viaJs.turn("When are you open?");
    jsCpuNs += cpuNs(edge.pid) - beforeJs;
    jsRelayed += jsMessages + 1;
    jsFirst.push(jsMs);
  }
  if (PROFILING) {
    progress("profiling voice-router's isolate over 200 more turns through the edge");
    const top = await profileService({
      port: inspectorPort,
      service: "voice-router",
      load: async () => {
        for (let i = 0; i < 200; i++) await viaEdge.turn("When are you open?");
      },
    });
    printProfile("voice-router isolate (CallSession) while relaying turns", top);
  }
  const at = (values, p) => percentile(values, p);
  for (const [stat, p, target] of [["p50", 50, ADDED_P50_MS], ["p99", 99, ADDED_P99_MS]]) {
    const added = at(edgeFirst, p) - at(directFirst, p);
    rows.push({
      figure: `voice path: added time to the first token ${stat}, prompt → first text through voice-router and its CallSession`,
      value: added,
      unit: "ms",
      target: `<= ${target} ms`,
      met: added <= target,
      baseline: `origin's relay direct: ${at(directFirst, p).toFixed(2)} ms`,
      ratio: at(edgeFirst, p) / at(directFirst, p),
      headline: true,
    });
    const addedJs = at(jsFirst, p) - at(directFirst, p);
    rows.push({
      figure: `voice path: added time to the first token ${stat} through a plain-JS Worker and object that only relay (the floor of the hop)`,
      value: addedJs,
      unit: "ms",
      baseline: `voice-router and its CallSession: ${added.toFixed(2)} ms`,
      ratio: added / addedJs,
    });
  }
  rows.push({
    figure: "voice path: CPU per relayed message in workerd (the CallSession object and the runtime)",
    value: edgeCpuNs / relayed / 1000,
    unit: "µs",
    headline: true,
    baseline: `plain-JS relay floor: ${Math.round(jsCpuNs / jsRelayed / 1000)} µs`,
    ratio: edgeCpuNs / relayed / (jsCpuNs / jsRelayed),
  });
  notes.push(
    `${TURNS} turns per path after ${WARMUP_TURNS} of warm-up, alternating edge, direct and the JS floor; the emulator's time to first token fixed at ${TTFT_MS} ms; ${REPLY.length} characters of reply`,
    "the JS floor (tests/bench/voice-js-relay.js) passes messages between the caller's socket (hibernation API, as CallSession) and the origin's and does nothing else: no session state, storage, turn tracking or reconnection; its ratio is voice-router's added time over the floor's",
    `relayed messages: each turn's prompt in and every text message out (${(relayed / TURNS).toFixed(1)} per turn)`,
    `1-min load average at start ${load.toFixed(2)} on ${os.cpus().length} cores; the client (Node), the origin, the emulator and workerd share them`,
  );
} finally {
  for (const socket of sockets) socket.close();
  for (const client of clients) client.close();
  await edge?.stop().catch(() => {});
  await origin?.stop();
  await emulator.stop();
}

process.exitCode = report("voice", rows, notes) ? 0 : 1;
