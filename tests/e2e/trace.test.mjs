// One trace per call, end to end: the four Workers in workerd, the origin exporting its spans
// over OTLP/HTTP (JSON) to a receiver in this process (./otlp.mjs), the Bedrock emulator with
// the agent's first model down. A phone call made as the carrier makes it (signed webhook with a
// W3C `traceparent`, signed relay handshake without one) must come out as one trace: the
// origin's request spans are children of the edge's spans, the relay's turn holds the model
// attempts, the failed one says why the chain fell back, the answering one has its first token.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { geoRegions, principalOf, signedCall, startEmulator, startOrigin, startWorkers, twilioSignature as signTwilio, until, wsClient } from "./harness.mjs";
import { startOtlpReceiver } from "./otlp.mjs";

const ACCOUNT = "AC" + "7ace".padEnd(32, "0");
const TWILIO_TOKEN = "e2e-trace-twilio-auth-token-not-secret";
const TENANT = "tenant-trace";
const NUMBER = "+18005550177";
const DOWN = "trace-model-down";
const UP = "trace-model-up";
const REPLY = "We open at nine.";
const SERVICE = "origin-trace-e2e";
const NEW_YORK = JSON.stringify({ country: "US", regionCode: "NY", continent: "NA", latitude: "40.71", longitude: "-74.01", colo: "EWR" });
// OTLP/JSON span kinds (opentelemetry-proto trace.proto `SpanKind`).
const SERVER = 2;

let emulator, receiver, origin, edge;

before(async () => {
  emulator = await startEmulator({ ttftMs: 20, interTokenMs: 2 });
  receiver = await startOtlpReceiver();
  origin = await startOrigin({
    BEDROCK_ENDPOINT_URL: emulator.url,
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    OTEL_SERVICE_NAME: SERVICE,
    // The batch processor's export interval (OpenTelemetry SDK variable): spans arrive quickly.
    OTEL_BSP_SCHEDULE_DELAY: "100",
  });
  await emulator.script(DOWN, { fault: { kind: "unavailable" } });
  await emulator.script(UP, { ttft_ms: 20, inter_token_ms: 2, reply: REPLY });
  edge = await startWorkers({
    originUrl: origin.url,
    vars: {
      "geo-router": { GEO_REGIONS: geoRegions(() => origin.url) },
      "auth-validator": {
        JWT_ISSUER: "https://issuer.trace",
        JWT_AUDIENCE: "trace",
        JWT_DEFAULT_PLAN: "pro",
        TWILIO_ACCOUNTS: JSON.stringify({ [ACCOUNT]: { tenant_id: TENANT, plan: "pro" } }),
      },
    },
    secrets: { "auth-validator": { JWT_HS256_SECRET: "e2e-trace-hs256-secret-0123456789abcdef", [`TWILIO_AUTH_TOKEN_${ACCOUNT}`]: TWILIO_TOKEN } },
  });
  // One address runs every test: lift the per-IP limit.
  const limiter = await edge.worker("rate-limiter").getEnv();
  await limiter.RATE_LIMIT_KV.put("policies:global", JSON.stringify({ ip: { algorithm: "sliding_window", limit: 100000, window_ms: 60000 } }));
  const agent = await signedCall(origin, "PUT", "/v1/agents/tracy", {
    principal: principalOf(TENANT),
    body: { name: "Tracy", system_prompt: "You answer questions about opening hours.", greeting: "Hello.", model: DOWN, fallback_models: [UP], phone_numbers: [NUMBER], voice: { voice: "en-US-Journey-O", language: "en-US" } },
  });
  assert.ok([200, 201].includes(agent.status), `agent: ${agent.status} ${await agent.text()}`);
});

after(async () => {
  await edge?.close();
  await origin?.stop();
  await emulator?.stop();
  await receiver?.close();
});

const callSid = () => "CA" + randomBytes(16).toString("hex");

/** A carrier webhook through the edge, signed, with `headers` besides. */
function webhook(route, params, headers = {}) {
  const url = `${edge.url}${route}`;
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signTwilio(TWILIO_TOKEN, url, params), "mf-cf-blob": NEW_YORK, ...headers },
    body: new URLSearchParams(params).toString(),
  });
}

const incoming = (sid, headers) =>
  webhook("/voice/twilio/incoming", { AccountSid: ACCOUNT, CallSid: sid, From: "+14155550100", To: NUMBER, CallStatus: "ringing", Direction: "inbound" }, headers);
const completed = (sid) => webhook("/voice/twilio/status", { AccountSid: ACCOUNT, CallSid: sid, CallStatus: "completed" });

const requestSpan = (path) => receiver.spans.find((span) => span.name === "request" && span.attributes.path === path);
/** What the collector holds, for a failure's message. */
const received = () => `${receiver.spans.length} spans (${[...new Set(receiver.spans.map((span) => `${span.name} ${span.attributes.path ?? ""}`))].join(", ")}); refused: ${receiver.refused.join(", ") || "none"}`;
const hex = (bytes) => randomBytes(bytes).toString("hex");

describe("one trace per call", () => {
  test("webhook → edge → origin → relay → turn → model attempts, one trace with its parent links", async () => {
    const carrier = { traceId: hex(16), spanId: hex(8) };
    const sid = callSid();
    const answer = await incoming(sid, { traceparent: `00-${carrier.traceId}-${carrier.spanId}-01` });
    assert.equal(answer.status, 200, await answer.text());

    // The relay handshake carries no traceparent (a carrier's does not): the call's session
    // continues the trace the webhook started.
    const url = `${edge.url.replace("http", "ws")}/voice/relay/${sid}`;
    const socket = await wsClient(url, { "x-twilio-signature": signTwilio(TWILIO_TOKEN, url) });
    socket.send({ type: "setup", sessionId: `VX${sid.slice(2)}`, callSid: sid, accountSid: ACCOUNT, from: "+14155550100", to: NUMBER, direction: "inbound", customParameters: {} });
    assert.equal((await socket.reply()).join(""), "Hello.", "the origin says the greeting");
    socket.send({ type: "prompt", voicePrompt: "When are you open?", lang: "en-US", last: true });
    assert.equal((await socket.reply()).join(""), REPLY);
    assert.equal((await completed(sid)).status, 204);
    await until(() => socket.closed() !== null, "the session closed the carrier's socket");

    // The relay's request span ends with the call, and is exported after it.
    const relay = await until(() => requestSpan(`/v1/calls/${sid}/relay`), () => `the relay's span reached the collector: ${received()}`);
    const end = await until(() => requestSpan(`/v1/calls/${sid}/end`), () => `the end's span reached the collector: ${received()}`);
    const trace = receiver.spans.filter((span) => span.traceId === carrier.traceId);

    // The carrier's trace id, kept by the edge on every forward; the origin's service name.
    assert.equal(relay.traceId, carrier.traceId, "the relay is in the webhook's trace");
    assert.equal(end.traceId, carrier.traceId, "the call's end is in the webhook's trace");
    assert.ok(trace.every((span) => span.service === SERVICE), "service.name from OTEL_SERVICE_NAME");
    const requests = trace.filter((span) => span.name === "request");
    const webhookForwards = requests.filter((span) => span !== relay && span !== end);
    assert.ok(
      webhookForwards.some((span) => span.attributes.path === "/v1/calls" && span.attributes.method === "POST"),
      `the webhook's call start is in the trace: ${requests.map((s) => s.attributes.path)}`,
    );

    // Each origin request is a server span whose parent is an edge span: not the carrier's
    // (the edge named its own), not one of the origin's. One edge span per edge request: the
    // webhook's forwards share one; the session's relay and end each have their own.
    const ids = new Set(trace.map((span) => span.spanId));
    for (const span of requests) {
      assert.equal(span.kind, SERVER, span.attributes.path);
      assert.match(span.parentSpanId, /^[0-9a-f]{16}$/, span.attributes.path);
      assert.notEqual(span.parentSpanId, carrier.spanId, "the edge names its own span");
      assert.ok(!ids.has(span.parentSpanId), "the parent is the edge's, remote");
      assert.match(span.attributes.request_id, /.+/, "the request id beside the trace id");
      assert.equal(span.attributes.trace_id, carrier.traceId);
    }
    assert.equal(new Set(webhookForwards.map((span) => span.parentSpanId)).size, 1, "one edge span for the webhook");
    assert.equal(new Set([webhookForwards[0].parentSpanId, relay.parentSpanId, end.parentSpanId]).size, 3);

    // The turn under the relay, the attempts under the turn.
    const turns = trace.filter((span) => span.name === "turn");
    assert.equal(turns.length, 1);
    const [turn] = turns;
    assert.equal(turn.parentSpanId, relay.spanId);
    assert.equal(turn.attributes.call_id, sid);
    assert.equal(turn.attributes.model, UP);
    assert.equal(turn.attributes.fallbacks, 1);
    const attempts = trace.filter((span) => span.name === "model_attempt").sort((a, b) => a.attributes.attempt - b.attributes.attempt);
    assert.deepEqual(
      attempts.map((span) => [span.parentSpanId, span.attributes.model, span.attributes.outcome, span.attributes.fallback_reason ?? null]),
      [
        [turn.spanId, DOWN, "fell_back", "unavailable"],
        [turn.spanId, UP, "answered", null],
      ],
    );
    const firstTokens = attempts[1].events.filter((event) => event.name === "first_token");
    assert.equal(firstTokens.length, 1, "the first token is an event of the attempt that answered");
    assert.ok(firstTokens[0].attributes.ttft_ms >= 0);
    assert.deepEqual(attempts[0].events.filter((event) => event.name === "first_token"), []);

    // Database writes: the call's creation under the webhook's forward, the turns (written
    // behind by the call's journal) under the relay.
    const writes = trace.filter((span) => span.name === "db.write");
    const creation = webhookForwards.find((span) => span.attributes.path === "/v1/calls");
    assert.ok(writes.some((span) => span.attributes["db.operation"] === "create_call" && span.parentSpanId === creation.spanId), "create_call under the call's start");
    assert.ok(writes.some((span) => span.attributes["db.operation"] === "append_journaled" && span.parentSpanId === relay.spanId), "the turns' writes under the relay");
    assert.ok(writes.some((span) => span.attributes["db.operation"] === "end_call" && span.parentSpanId === end.spanId), "end_call under the end");

    // The origin's log lines carry the trace id beside the request id.
    const logged = origin.logs
      .map((line) => {
        try {
          return JSON.parse(line);
        } catch {
          return null;
        }
      })
      .filter((record) => record?.span?.trace_id === carrier.traceId && record.span.request_id);
    assert.ok(logged.length >= requests.length, `log lines with the trace id: ${logged.length}`);
    assert.deepEqual(receiver.refused, []);
  });

  test("a webhook without a valid traceparent starts a trace at the edge, which the call keeps", async () => {
    const sid = callSid();
    // Upper-case hex is not a traceparent (W3C Trace Context): the edge starts a new trace.
    const invalid = `00-${hex(16).toUpperCase()}-${hex(8)}-01`;
    const answer = await incoming(sid, { traceparent: invalid });
    assert.equal(answer.status, 200, await answer.text());
    assert.equal((await completed(sid)).status, 204);
    const end = await until(() => requestSpan(`/v1/calls/${sid}/end`), () => `the end's span reached the collector: ${received()}`);
    assert.match(end.traceId, /^[0-9a-f]{32}$/);
    assert.notEqual(end.traceId, "0".repeat(32));
    assert.notEqual(end.traceId, invalid.slice(3, 35).toLowerCase());
    const start = receiver.spans.find((span) => span.traceId === end.traceId && span.name === "request" && span.attributes.path === "/v1/calls");
    assert.ok(start, "the webhook's call start and the session's end share the trace the edge started");
    assert.notEqual(start.parentSpanId, end.parentSpanId);
  });
});
