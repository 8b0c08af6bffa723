// Post-call webhooks, end to end: the four Workers in workerd, a development origin (the
// receiver is on loopback), the Bedrock emulator, PostgreSQL/Redis when the test command started
// them. An admin creates an endpoint through the edge's /api/v1/webhooks, a phone call is placed
// through the carrier's webhooks and relay, and the tenant's receiver gets call.started and
// call.ended, signed (checked with the documented snippet, docs/verify/verify-signature.mjs)
// with an idempotency key; the delivery log and a retry through the edge; scopes and the SSRF
// rule at the edge.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import http from "node:http";
import { hs256Jwt, json, startEmulator, startOrigin, startWorkers, twilioSignature, wsClient } from "./harness.mjs";
import { verifyAybizaSignature } from "../../docs/verify/verify-signature.mjs";

const ACCOUNT = "AC" + "7014".padEnd(32, "0");
const TWILIO_TOKEN = "e2e-webhooks-twilio-auth-token";
const HS256_SECRET = "e2e-webhooks-hs256-secret-0123456789abcdef";
const ISSUER = "https://issuer.webhooks.e2e";
const AUDIENCE = "aybiza-webhooks-e2e";
const TENANT = "tenant-webhooks";
const NUMBER = "+18005550114";
const MODEL = "e2e-webhooks";
const NEW_YORK = JSON.stringify({ country: "US", regionCode: "NY", continent: "NA", latitude: "40.71", longitude: "-74.01", colo: "EWR" });

const jwt = (claims) => hs256Jwt(HS256_SECRET, { iss: ISSUER, aud: AUDIENCE, ...claims });
const ADMIN = jwt({ sub: "admin", tenant_id: TENANT, scope: "calls:read calls:write agents:admin" });
const CALLS_ONLY = jwt({ sub: "caller", tenant_id: TENANT, scope: "calls:read calls:write" });

let emulator, origin, edge, receiver, secret;

/** The tenant's webhook receiver: records every request, checked with the documented snippet. */
function startReceiver() {
  const received = [];
  const server = http.createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      const raw = Buffer.concat(chunks);
      const header = request.headers["x-aybiza-signature"];
      received.push({
        header,
        key: request.headers["aybiza-idempotency-key"],
        type: request.headers["aybiza-event-type"],
        body: JSON.parse(raw.toString()),
        verified: verifyAybizaSignature(header, raw, secret),
      });
      response.writeHead(204).end();
    });
  });
  server.listen(0, "127.0.0.1");
  return {
    received,
    url: async () => {
      if (!server.listening) await new Promise((resolve) => server.once("listening", resolve));
      return `http://127.0.0.1:${server.address().port}/aybiza`;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

before(async () => {
  emulator = await startEmulator({ ttftMs: 20, interTokenMs: 2 });
  origin = await startOrigin({
    BEDROCK_ENDPOINT_URL: emulator.url,
    BEDROCK_DEFAULT_MODELS: MODEL,
    ORIGIN_ENVIRONMENT: "development",
    WEBHOOK_POLL_MS: "100",
  });
  edge = await startWorkers({
    originUrl: origin.url,
    vars: {
      "auth-validator": {
        JWT_ISSUER: ISSUER,
        JWT_AUDIENCE: AUDIENCE,
        JWT_DEFAULT_PLAN: "pro",
        TWILIO_ACCOUNTS: JSON.stringify({ [ACCOUNT]: { tenant_id: TENANT, plan: "pro" } }),
      },
    },
    secrets: {
      "auth-validator": {
        JWT_HS256_SECRET: HS256_SECRET,
        SESSION_TOKEN_SECRET: "e2e-webhooks-session-token-secret-0123456789",
        [`TWILIO_AUTH_TOKEN_${ACCOUNT}`]: TWILIO_TOKEN,
      },
    },
  });
  const created = await api("GET", "/api/v1/signing-secret");
  assert.equal(created.status, 201);
  secret = (await json(created)).secret;
  receiver = startReceiver();
  await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 2, reply: "Your table is booked." });
  const agent = await api("PUT", "/api/v1/agents/ava-hooks", {
    body: { name: "Ava", system_prompt: "You book tables.", model: MODEL, fallback_models: [], phone_numbers: [NUMBER] },
  });
  assert.ok([200, 201].includes(agent.status), `agent: ${agent.status} ${await agent.text()}`);
});

after(async () => {
  await edge?.close();
  await origin?.stop();
  await emulator?.stop();
  await receiver?.close();
});

function api(method, pathAndQuery, { body, token = ADMIN } = {}) {
  const text = body === undefined ? undefined : JSON.stringify(body);
  return fetch(`${edge.url}${pathAndQuery}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "mf-cf-blob": NEW_YORK, ...(text === undefined ? {} : { "content-type": "application/json" }) },
    body: text,
  });
}

function carrierPost(url, params) {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": twilioSignature(TWILIO_TOKEN, url, params), "mf-cf-blob": NEW_YORK },
    body: new URLSearchParams(params).toString(),
  });
}

async function until(predicate, message, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await predicate()) return;
    assert.ok(Date.now() < deadline, message);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe("post-call webhooks through the edge", () => {
  let endpoint;

  test("an admin manages endpoints at /api/v1/webhooks; scope and SSRF rule hold", async () => {
    const refused = await api("POST", "/api/v1/webhooks", { body: { url: await receiver.url() }, token: CALLS_ONLY });
    assert.equal(refused.status, 403, "agents:admin is needed");
    const internal = await api("POST", "/api/v1/webhooks", { body: { url: "https://169.254.169.254/latest" } });
    const internalBody = await json(internal);
    assert.equal(internal.status, 400, JSON.stringify(internalBody));
    assert.deepEqual([internalBody.error.code, internalBody.error.field], ["invalid_webhook", "url"]);
    assert.equal((await api("GET", "/api/v1/webhooks/we.bad")).status, 400);

    const created = await api("POST", "/api/v1/webhooks", { body: { url: await receiver.url(), events: ["call.started", "call.ended"] } });
    endpoint = await json(created);
    assert.equal(created.status, 201, JSON.stringify(endpoint));
    assert.match(endpoint.id, /^we_[0-9a-f]{32}$/);
    const patched = await api("PATCH", `/api/v1/webhooks/${endpoint.id}`, { body: { description: "CRM sync" } });
    assert.equal(patched.status, 200);
    assert.equal((await json(patched)).description, "CRM sync");
    const list = await json(await api("GET", "/api/v1/webhooks"));
    assert.deepEqual(list.endpoints.map((e) => e.id), [endpoint.id]);
  });

  test("a phone call's call.started and call.ended reach the receiver, signed, and are logged", async () => {
    const sid = "CA" + randomBytes(16).toString("hex");
    const answer = await carrierPost(`${edge.url}/voice/twilio/incoming`, { AccountSid: ACCOUNT, CallSid: sid, From: "+14155550100", To: NUMBER, CallStatus: "ringing", Direction: "inbound" });
    assert.equal(answer.status, 200, await answer.text());
    const url = `${edge.url.replace("http", "ws")}/voice/relay/${sid}`;
    const socket = await wsClient(url, { "x-twilio-signature": twilioSignature(TWILIO_TOKEN, url) });
    socket.send({ type: "setup", sessionId: `VX${sid.slice(2)}`, callSid: sid, accountSid: ACCOUNT, from: "+14155550100", to: NUMBER, direction: "inbound", customParameters: {} });
    socket.send({ type: "prompt", voicePrompt: "A table for two, please", lang: "en-US", last: true });
    assert.equal((await socket.reply()).join(""), "Your table is booked.");
    socket.close();
    assert.equal((await carrierPost(`${edge.url}/voice/twilio/status`, { AccountSid: ACCOUNT, CallSid: sid, CallStatus: "completed" })).status, 204);

    await until(() => receiver.received.some((r) => r.type === "call.ended"), "call.ended delivered");
    const started = receiver.received.find((r) => r.type === "call.started");
    const ended = receiver.received.find((r) => r.type === "call.ended");
    for (const delivery of [started, ended]) {
      assert.equal(delivery.verified, true, "the documented snippet accepts the signature");
      assert.match(delivery.header, /^t=\d+,v1=[0-9a-f]{64}$/);
      assert.equal(delivery.key, delivery.body.id, "the idempotency key is the event id");
      assert.equal(delivery.body.tenant_id, TENANT);
      assert.equal(delivery.body.data.call.id, sid);
    }
    assert.equal(started.body.type, "call.started");
    assert.equal(started.body.data.call.agent_id, "ava-hooks");
    const data = ended.body.data;
    assert.equal(data.end_reason, "completed");
    assert.deepEqual(
      data.transcript.map((line) => [line.role, line.text]).filter(([role]) => role === "user"),
      [["user", "A table for two, please"]],
    );
    assert.ok(data.transcript.some((line) => line.text === "Your table is booked."), JSON.stringify(data.transcript));
    assert.equal(data.usage.caller_turns, 1);
    assert.ok(data.timings.duration_ms >= 0);

    const log = await json(await api("GET", `/api/v1/webhooks/${endpoint.id}/deliveries`));
    assert.deepEqual(log.deliveries.map((d) => [d.event_type, d.status]).sort(), [["call.ended", "delivered"], ["call.started", "delivered"]]);

    // A retry through the edge sends the event again, with the same idempotency key.
    const count = receiver.received.length;
    const retried = await api("POST", `/api/v1/webhooks/${endpoint.id}/deliveries/${started.body.id}/retry`);
    assert.equal(retried.status, 202, await retried.text());
    await until(() => receiver.received.length > count, "the retried delivery");
    assert.equal(receiver.received.at(-1).key, started.body.id);
    assert.equal((await api("POST", `/api/v1/webhooks/${endpoint.id}/deliveries/evt_none/retry`)).status, 404);
    assert.equal((await api("DELETE", `/api/v1/webhooks/${endpoint.id}`)).status, 204);
    assert.equal((await api("GET", `/api/v1/webhooks/${endpoint.id}`)).status, 404);
  });
});
