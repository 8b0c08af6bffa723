// Tools benchmark: what the origin adds around a tool call, on loopback (~30 s).
//
// A call's relay socket asks, turn after turn, a question the Bedrock emulator answers with one
// `toolUse` (ConverseStream's wire format); the origin POSTs the signed call to a tool server in
// this process, which answers at once; the emulator then streams the reply. Per turn:
//   1. model's tool request → tool's POST: the tool server's arrival time minus the time the
//      emulator sent the `messageStop` (`stopReason: tool_use`) of that request;
//   2. tool's answer → first resumed token at the caller, minus the emulator's TTFT: the time the
//      caller's socket gets the first `text` minus the time the tool server finished its answer,
//      minus the emulator's fixed time to first token (it counts from the follow-up's arrival).
// Both sides read the same system clock (the emulator in Rust, this process with sub-millisecond
// `performance` time). Target: <= 5 ms added each way at p50.
//
// Inputs (tests/stack/bench.sh sets them): ORIGIN_BIN, EMULATOR_BIN (release builds).

import http from "node:http";
import { performance } from "node:perf_hooks";
import { percentile, report } from "./report.mjs";
import { edgeHeaders, originRelay, principalOf, startEmulator, startOrigin } from "../e2e/harness.mjs";

const TENANT = "bench-tools";
const AGENT = "bench-tools-agent";
const MODEL = "bench-tools-model";
const TTFT_MS = Number(process.env.TOOLS_BENCH_TTFT_MS ?? 20);
const WARMUP = 5;
const TURNS = Number(process.env.TOOLS_BENCH_TURNS ?? 60);

const nowMs = () => performance.timeOrigin + performance.now();

/** The tenant's tool: answers at once; remembers when each POST arrived and was answered. */
function startToolServer() {
  const seen = [];
  const server = http.createServer((request, response) => {
    const arrived = nowMs();
    request.resume();
    request.on("end", () => {
      response.on("finish", () => seen.push({ arrived, answered: nowMs() }));
      response.writeHead(200, { "content-type": "application/json" }).end('{"status":"shipped"}');
    });
  });
  server.listen(0, "127.0.0.1");
  return {
    seen,
    port: () => server.address().port,
    listening: new Promise((resolve) => server.once("listening", resolve)),
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

async function signed(origin, method, pathAndQuery, body) {
  const text = body === undefined ? "" : JSON.stringify(body);
  const response = await fetch(`${origin.url}${pathAndQuery}`, {
    method,
    headers: { ...edgeHeaders({ method, pathAndQuery, body: text, principal: principalOf(TENANT) }), "content-type": "application/json" },
    body: body === undefined ? undefined : text,
  });
  return { status: response.status, json: await response.json().catch(() => null) };
}

const tools = startToolServer();
await tools.listening;
const emulator = await startEmulator({ ttftMs: TTFT_MS, interTokenMs: 0 });
await emulator.script(MODEL, {
  ttft_ms: TTFT_MS,
  inter_token_ms: 0,
  reply: "Fine.",
  tool_use: [{ when: "order", rounds: [[{ name: "lookup_order", input: { id: "A-1" } }]], reply: "Shipped." }],
});
const rows = [];
const toPost = [];
const toToken = [];
const toFollowUp = [];
const plain = [];
let origin;
try {
  origin = await startOrigin({ BEDROCK_ENDPOINT_URL: emulator.url, ORIGIN_ENVIRONMENT: "development", RUST_LOG: "warn,origin=info" });
  const deadline = Date.now() + 15_000;
  for (;;) {
    const put = await signed(origin, "PUT", `/v1/agents/${AGENT}`, {
      name: "Bench",
      system_prompt: "You look up orders.",
      model: MODEL,
      fallback_models: [],
      idle_reprompt_secs: 0,
      filler_after_ms: 10_000,
      tools: [{ name: "lookup_order", description: "Looks an order up.", input_schema: { type: "object" }, url: `http://127.0.0.1:${tools.port()}/lookup` }],
    });
    if (put.status === 200 || put.status === 201) break;
    if (put.status !== 503 || Date.now() > deadline) throw new Error(`agent: ${put.status} ${JSON.stringify(put.json)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const call = await signed(origin, "POST", "/v1/calls", { agent_id: AGENT });
  const socket = await originRelay(origin, call.json.id, principalOf(TENANT));
  socket.send({ type: "setup", callSid: call.json.id, customParameters: {} });
  for (let turn = 0; turn < WARMUP + TURNS; turn += 1) {
    const before = tools.seen.length;
    socket.send({ type: "prompt", voicePrompt: `Where is order ${turn}?`, lang: "en-US", last: true });
    const first = await socket.next(5_000);
    const firstAt = nowMs();
    if (first.type !== "text" || first.token.trim() === "") throw new Error(`unexpected ${JSON.stringify(first)}`);
    for (let message = first; !message.last; message = await socket.next(5_000));
    const stats = (await emulator.stats())[MODEL];
    const tool = tools.seen[before];
    if (!tool || tools.seen.length !== before + 1) throw new Error(`turn ${turn}: the tool was called ${tools.seen.length - before} times`);
    if (turn < WARMUP) continue;
    toPost.push(tool.arrived - stats.last_tool_use_sent_at_us / 1_000);
    toToken.push(firstAt - tool.answered - TTFT_MS);
    toFollowUp.push(stats.last_tool_result_at_us / 1_000 - tool.answered);
  }
  // Baseline: a plain turn's prompt → first token, minus the same TTFT (no tool involved).
  for (let turn = 0; turn < WARMUP + TURNS; turn += 1) {
    const asked = nowMs();
    socket.send({ type: "prompt", voicePrompt: `Hello ${turn}`, lang: "en-US", last: true });
    const first = await socket.next(5_000);
    const firstAt = nowMs();
    for (let message = first; !message.last; message = await socket.next(5_000));
    if (turn >= WARMUP) plain.push(firstAt - asked - TTFT_MS);
  }
  socket.close();
  const stats = (await emulator.stats())[MODEL];
  const plainP50 = percentile(plain, 50);
  for (const [name, values, baseline] of [
    ["model's tool request → tool's POST", toPost, null],
    ["tool's answer → first resumed token at the caller − emulator TTFT", toToken, plainP50],
  ]) {
    const p50 = percentile(values, 50);
    rows.push({
      figure: `${name}, p50`,
      value: p50,
      unit: "ms",
      target: "<= 5 ms",
      met: p50 <= 5,
      ...(baseline === null ? {} : { baseline: `plain turn, prompt → first token − TTFT: ${baseline.toFixed(2)} ms`, ratio: p50 / baseline }),
    });
    rows.push({ figure: `${name}, p90`, value: percentile(values, 90), unit: "ms" });
  }
  rows.push({ figure: "plain turn: prompt → first token at the caller − emulator TTFT, p50", value: plainP50, unit: "ms" });
  rows.push({ figure: "of which: tool's answer → the follow-up request at the emulator, p50", value: percentile(toFollowUp, 50), unit: "ms" });
  rows.push({ figure: "toolResult mismatches", value: stats.tool_result_mismatches, unit: "", target: "0", met: stats.tool_result_mismatches === 0 });
  process.exitCode = report("tools", rows, [
    `${TURNS} turns after ${WARMUP} warm-up, one tool call each, on one relay socket straight to the origin (signed as the edge signs); tool server in this process answering at once; emulator TTFT ${TTFT_MS} ms, reply in one token`,
    "the emulator, the origin and this process share the machine's cores; both clocks are the system's",
  ])
    ? 0
    : 1;
} finally {
  await origin?.stop();
  await emulator.stop();
  await tools.close();
}
