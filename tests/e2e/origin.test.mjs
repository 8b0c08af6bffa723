// The origin binary as the edge meets it: signed HTTP, Server-Sent Events and the relay
// WebSocket, with the Bedrock emulator behind it (the real AWS SDK in the origin speaks to it),
// and PostgreSQL/Redis when the test command started them.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { edgeHeaders, json, originRelay, parseSse, principalOf, signedCall, startEmulator, startOrigin } from "./harness.mjs";

const ALICE = principalOf("alice");
const MALLORY = principalOf("mallory");

/** A signed request to the origin. */
const call = (origin, method, pathAndQuery, { principal = ALICE, ...options } = {}) =>
  signedCall(origin, method, pathAndQuery, { principal, ...options });

/** Opens the call's relay WebSocket with the edge's signed headers; messages arrive in a queue. */
const relay = (origin, callId, principal = ALICE) => originRelay(origin, callId, principal);

describe("the origin behind the edge's signature, with the Bedrock emulator", () => {
  let emulator;
  let origin;
  before(async () => {
    emulator = await startEmulator({ ttftMs: 20, interTokenMs: 2 });
    origin = await startOrigin({ BEDROCK_ENDPOINT_URL: emulator.url, BEDROCK_FIRST_TOKEN_TIMEOUT_MS: "500" });
  });
  after(async () => {
    await origin?.stop();
    await emulator?.stop();
  });

  test("/health needs no signature; every other route refuses a missing, wrong or stale one", async () => {
    assert.equal((await fetch(`${origin.url}/health`)).status, 200);
    const missing = await fetch(`${origin.url}/v1/agents`);
    assert.equal(missing.status, 401);
    assert.equal((await json(missing)).error.code, "unauthorized");
    assert.equal(missing.headers.get("www-authenticate"), "AYBIZA-EDGE-HMAC-SHA256");

    const stale = await fetch(`${origin.url}/v1/agents`, {
      headers: edgeHeaders({ pathAndQuery: "/v1/agents", principal: ALICE, timestamp: Math.floor(Date.now() / 1000) - 120 }),
    });
    assert.equal(stale.status, 401);
    const forged = await fetch(`${origin.url}/v1/agents`, {
      headers: edgeHeaders({ pathAndQuery: "/v1/agents", principal: ALICE, secret: "someone-else-entirely-0123456789abcdef" }),
    });
    assert.equal(forged.status, 401);
    // A body swapped under a valid signature.
    const signed = edgeHeaders({ method: "POST", pathAndQuery: "/v1/calls", body: '{"agent_id":"a"}', principal: ALICE });
    const replayed = await fetch(`${origin.url}/v1/calls`, { method: "POST", headers: signed, body: '{"agent_id":"b"}' });
    assert.equal(replayed.status, 401);
    assert.equal((await call(origin, "GET", "/v1/agents")).status, 200);
  });

  test("a captured signed request replayed as is gets 401 replayed_request; one without a nonce is refused", async () => {
    const put = await call(origin, "PUT", "/v1/agents/replay", { body: { name: "Replay", system_prompt: "Hi.", model: "m", fallback_models: [] } });
    assert.ok([200, 201].includes(put.status));
    const body = '{"agent_id":"replay"}';
    const captured = { ...edgeHeaders({ method: "POST", pathAndQuery: "/v1/calls", body, principal: ALICE }), "content-type": "application/json" };
    const first = await fetch(`${origin.url}/v1/calls`, { method: "POST", headers: captured, body });
    assert.equal(first.status, 201);
    const again = await fetch(`${origin.url}/v1/calls`, { method: "POST", headers: captured, body });
    assert.equal(again.status, 401);
    assert.equal((await json(again)).error.code, "replayed_request");
    // An edge from before the nonce (v1) is refused unless the origin is told to accept it,
    // which only the deploy bringing the nonce does (docs/operations.md).
    const legacy = () => edgeHeaders({ pathAndQuery: "/v1/agents", principal: ALICE, legacy: true });
    const old = await fetch(`${origin.url}/v1/agents`, { headers: legacy() });
    assert.equal(old.status, 401);
    assert.match((await json(old)).error.message, /no edge nonce/);
    const transitional = await startOrigin({ BEDROCK_ENDPOINT_URL: emulator.url, EDGE_LEGACY_SIGNATURES: "accept" });
    try {
      assert.equal((await fetch(`${transitional.url}/v1/agents`, { headers: legacy() })).status, 200);
      const forged = { ...legacy(), "x-edge-signature": `v1=${"0".repeat(64)}` };
      assert.equal((await fetch(`${transitional.url}/v1/agents`, { headers: forged })).status, 401);
      // A request that carries a nonce is held to it there too.
      const captured = edgeHeaders({ pathAndQuery: "/v1/agents", principal: ALICE });
      assert.equal((await fetch(`${transitional.url}/v1/agents`, { headers: captured })).status, 200);
      const again = await fetch(`${transitional.url}/v1/agents`, { headers: captured });
      assert.equal((await json(again)).error.code, "replayed_request");
    } finally {
      await transitional.stop();
    }
  });

  test("/ready reports the database and Bedrock; /metrics is Prometheus text", async () => {
    const ready = await call(origin, "GET", "/ready", { principal: null });
    const report = await json(ready);
    assert.equal(ready.status, 200, JSON.stringify(report));
    assert.equal(report.bindings.DATABASE.ok, true);
    assert.equal(report.bindings.BEDROCK.ok, true);
    const metrics = await call(origin, "GET", "/metrics", { principal: null });
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /origin_requests_total\{route="\/ready"/);
  });

  test("an agent, a call and a turn as Server-Sent Events: speakable tokens, then done", async () => {
    await emulator.script("e2e-sse", { ttft_ms: 20, inter_token_ms: 2, reply: "Of course. A table for two at seven, under Ada." });
    const put = await call(origin, "PUT", "/v1/agents/sse", {
      body: { name: "SSE", system_prompt: "Book tables.", model: "e2e-sse", fallback_models: [] },
    });
    assert.equal(put.status, 201);
    const created = await call(origin, "POST", "/v1/calls", { body: { agent_id: "sse" } });
    assert.equal(created.status, 201);
    const { id } = await json(created);
    const response = await call(origin, "POST", `/v1/calls/${id}/turns`, { body: { text: "A table for two" } });
    assert.equal(response.status, 200);
    assert.match(response.headers.get("content-type"), /^text\/event-stream/);
    const events = parseSse(await response.text());
    const tokens = events.filter((e) => e.event === "token").map((e) => e.data.text);
    assert.deepEqual(tokens, ["Of course. ", "A table for two at seven, ", "under Ada."]);
    const done = events.at(-1);
    assert.equal(done.event, "done");
    assert.equal(done.data.model, "e2e-sse");
    assert.ok(done.data.timings.ttft_ms >= 20, JSON.stringify(done.data));
    const turns = await json(await call(origin, "GET", `/v1/calls/${id}/turns`));
    assert.deepEqual(turns.turns.map((t) => t.role), ["user", "assistant"]);
    // Another tenant cannot read it.
    assert.equal((await call(origin, "GET", `/v1/calls/${id}/turns`, { principal: MALLORY })).status, 404);
  });

  test("a ConversationRelay call: greeting, prompt, reply, interruption cancels the stream", async () => {
    await emulator.script("e2e-relay", { ttft_ms: 20, inter_token_ms: 30, reply: "Let me list them. One, two, three, four, five, six, seven, eight, nine, ten." });
    await call(origin, "PUT", "/v1/agents/relay", {
      body: { name: "Relay", system_prompt: "Count.", greeting: "Hi, this is the counting line.", model: "e2e-relay", fallback_models: [], phone_numbers: ["+14155550123"] },
    });
    const socket = await relay(origin, "CAe2e0001");
    socket.send({ type: "setup", callSid: "CAe2e0001", from: "+14155550100", to: "+14155550123", customParameters: {} });
    assert.equal(await socket.reply(), "Hi, this is the counting line.");
    socket.send({ type: "prompt", voicePrompt: "Count to ten", lang: "en-US", last: true });
    const first = await socket.next();
    assert.equal(first.token, "Let me list them. ");
    socket.send({ type: "interrupt", utteranceUntilInterrupt: "Let me list", durationUntilInterruptMs: 700 });
    const deadline = Date.now() + 3_000;
    while ((await emulator.stats())["e2e-relay"]?.cancelled !== 1) {
      assert.ok(Date.now() < deadline, "the emulator saw the stream cancelled");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    socket.send({ type: "dtmf", digit: "9" });
    socket.send({ type: "bogus" });
    assert.equal((await socket.next()).code, "unknown_message_type");
    socket.close();
    const turns = (await json(await call(origin, "GET", "/v1/calls/CAe2e0001/turns"))).turns;
    assert.deepEqual(turns.map((t) => [t.role, t.text, t.interrupted]), [
      ["assistant", "Hi, this is the counting line.", false],
      ["user", "Count to ten", false],
      ["assistant", "Let me list", true],
      ["dtmf", "9", false],
    ]);
  });

  test("a throttled model falls back; a model failing mid-reply ends with an error event", async () => {
    await emulator.script("e2e-throttled", { fault: { kind: "throttle" } });
    await emulator.script("e2e-backup", { ttft_ms: 5, reply: "Backup here." });
    await emulator.script("e2e-breaks", { ttft_ms: 5, reply: "Starting now. And then", fault: { kind: "exception_mid_stream", after_tokens: 3 } });
    await call(origin, "PUT", "/v1/agents/chain", {
      body: { name: "Chain", system_prompt: "p", model: "e2e-throttled", fallback_models: ["e2e-backup"] },
    });
    await call(origin, "PUT", "/v1/agents/breaks", {
      body: { name: "Breaks", system_prompt: "p", model: "e2e-breaks", fallback_models: ["e2e-backup"] },
    });
    const chain = (await json(await call(origin, "POST", "/v1/calls", { body: { agent_id: "chain" } }))).id;
    const events = parseSse(await (await call(origin, "POST", `/v1/calls/${chain}/turns`, { body: { text: "hi" } })).text());
    assert.equal(events.at(-1).event, "done");
    assert.deepEqual(events.at(-1).data.fallbacks, [{ model: "e2e-throttled", reason: "throttled" }]);
    assert.equal((await emulator.stats())["e2e-throttled"].requests, 1, "no SDK retries");

    const breaks = (await json(await call(origin, "POST", "/v1/calls", { body: { agent_id: "breaks" } }))).id;
    const failed = parseSse(await (await call(origin, "POST", `/v1/calls/${breaks}/turns`, { body: { text: "hi" } })).text());
    assert.deepEqual(failed[0], { event: "token", data: { text: "Starting now. " } });
    assert.equal(failed.at(-1).event, "error");
    assert.equal(failed.at(-1).data.error.code, "model_unavailable");
  });

  test("bad input: 1 MB turn → 413, malformed JSON → 400, unknown call → 404, ended call → 409", async () => {
    await call(origin, "PUT", "/v1/agents/input", { body: { name: "In", system_prompt: "p", model: "m" } });
    const id = (await json(await call(origin, "POST", "/v1/calls", { body: { agent_id: "input" } }))).id;
    const huge = await call(origin, "POST", `/v1/calls/${id}/turns`, { body: { text: "x".repeat(1024 * 1024) } });
    assert.equal(huge.status, 413);
    assert.equal((await json(huge)).error.code, "payload_too_large");
    const malformed = await call(origin, "POST", `/v1/calls/${id}/turns`, { body: "{nope" });
    assert.equal(malformed.status, 400);
    assert.equal((await json(malformed)).error.code, "malformed_json");
    assert.equal((await call(origin, "POST", "/v1/calls/unknown/turns", { body: { text: "hi" } })).status, 404);
    assert.equal((await call(origin, "POST", `/v1/calls/${id}/end`, { body: { reason: "completed" } })).status, 200);
    const ended = await call(origin, "POST", `/v1/calls/${id}/turns`, { body: { text: "hi" } });
    assert.equal(ended.status, 409);
    assert.equal((await json(ended)).error.code, "call_ended");
  });
});
