// voice-router end to end: all four Workers in workerd, two origins (two regions) sharing one
// database, the Bedrock emulator behind them, PostgreSQL/Redis when the test command started
// them. A test client speaks to the edge exactly as the carrier does (signed webhooks, a signed
// relay handshake, ConversationRelay messages, the status callback) and as an API client does
// (JWT, SSE turns), and every rejection path is tried.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac, randomBytes, randomUUID } from "node:crypto";
import http from "node:http";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  edgeHeaders,
  geoRegions,
  json,
  parseSse,
  startEmulator,
  startOrigin,
  startWorkers,
  twilioSignature as signTwilio,
  wsClient,
} from "./harness.mjs";

const ACCOUNT = "AC" + "e2e".padEnd(32, "0");
const TWILIO_TOKEN = "e2e-twilio-auth-token-not-secret";
const HS256_SECRET = "e2e-hs256-secret-0123456789abcdef-0123";
const ISSUER = "https://issuer.e2e";
const AUDIENCE = "aybiza-e2e";
const TENANT = "tenant-voice";
const NUMBER = "+18005550101";
const MODEL = "e2e-voice";
// A caller in New York: us-east-1 by the seed's region-code map.
const NEW_YORK = JSON.stringify({ country: "US", regionCode: "NY", continent: "NA", latitude: "40.71", longitude: "-74.01", colo: "EWR" });

const b64url = (data) => Buffer.from(data).toString("base64url");
function jwt(claims) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, iat: now, exp: now + 600, ...claims }));
  const signature = createHmac("sha256", HS256_SECRET).update(`${header}.${body}`).digest("base64url");
  return `${header}.${body}.${signature}`;
}
const ADMIN = jwt({ sub: "admin", tenant_id: TENANT, scope: "calls:read calls:write agents:admin" });
const OTHER_TENANT = jwt({ sub: "eve", tenant_id: "tenant-other", scope: "calls:read calls:write" });

/** Twilio's request signature over the URL and the parameters, with this suite's token. */
const twilioSignature = (url, params = {}) => signTwilio(TWILIO_TOKEN, url, params);

const callSid = () => "CA" + randomBytes(16).toString("hex");

let emulator, originA, originB, edge;

/** The two regions' origins share one database, as regions share Aurora Global in production. */
function sharedDatabase() {
  const id = `voice_${randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const env = { BEDROCK_DEFAULT_MODELS: MODEL };
  if (process.env.DATABASE_URL?.startsWith("postgres")) env.DATABASE_SCHEMA = id;
  else env.DATABASE_URL = `sqlite://${path.join(mkdtempSync(path.join(os.tmpdir(), "aybiza-voice-")), "calls.sqlite3")}?mode=rwc`;
  if (process.env.REDIS_URL) env.REDIS_KEY_PREFIX = `${id}:`;
  return env;
}

async function startEdge({ regionOrigin, voiceVars = {} }) {
  const stack = await startWorkers({
    originUrl: originA.url,
    vars: {
      "geo-router": { GEO_REGIONS: geoRegions(regionOrigin) },
      "auth-validator": {
        JWT_ISSUER: ISSUER,
        JWT_AUDIENCE: AUDIENCE,
        JWT_DEFAULT_PLAN: "pro",
        TWILIO_ACCOUNTS: JSON.stringify({ [ACCOUNT]: { tenant_id: TENANT, plan: "pro" } }),
      },
      "voice-router": { CORS_ORIGINS: "https://app.example.com", ...voiceVars },
    },
    secrets: {
      "auth-validator": {
        JWT_HS256_SECRET: HS256_SECRET,
        SESSION_TOKEN_SECRET: "e2e-session-token-secret-0123456789abcdef",
        [`TWILIO_AUTH_TOKEN_${ACCOUNT}`]: TWILIO_TOKEN,
      },
    },
  });
  // Every test here comes from one address: lift the per-IP limit so only the limits a test sets
  // apply; at most one live call per tenant, so lease release is observable.
  const limiterEnv = await stack.worker("rate-limiter").getEnv();
  await limiterEnv.RATE_LIMIT_KV.put("policies:global", JSON.stringify({ ip: { algorithm: "sliding_window", limit: 100000, window_ms: 60000 } }));
  await limiterEnv.RATE_LIMIT_KV.put(`policies:tenant:${TENANT}`, JSON.stringify({ "tenant-calls": { algorithm: "concurrency", limit: 1, lease_ttl_ms: 60000 } }));
  await limiterEnv.RATE_LIMIT_KV.put("policies:tenant:tenant-limited", JSON.stringify({ principal: { algorithm: "gcra", limit: 2, period_ms: 60000, burst: 2 } }));
  return stack;
}

before(async () => {
  emulator = await startEmulator({ ttftMs: 20, interTokenMs: 2 });
  const database = { ...sharedDatabase(), BEDROCK_ENDPOINT_URL: emulator.url };
  originA = await startOrigin(database);
  originB = await startOrigin(database);
  await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 2, reply: "We open at nine. We close at five." });
  edge = await startEdge({ regionOrigin: (region) => (region === "us-west-2" ? originB.url : originA.url) });
  const agent = await api("PUT", "/api/v1/agents/ava", {
    body: { name: "Ava", system_prompt: "You answer questions about opening hours.", greeting: "Hello, this is Ava.", model: MODEL, fallback_models: [], phone_numbers: [NUMBER], voice: { voice: "en-US-Journey-O", language: "en-US" } },
  });
  assert.ok([200, 201].includes(agent.status), `agent: ${agent.status} ${await agent.text()}`);
});

after(async () => {
  await edge?.close();
  await originA?.stop();
  await originB?.stop();
  await emulator?.stop();
});

/** An API request through the edge. */
function api(method, pathAndQuery, { body, token = ADMIN, headers = {}, cf = NEW_YORK } = {}) {
  const text = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
  return fetch(`${edge.url}${pathAndQuery}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(text === undefined ? {} : { "content-type": "application/json" }),
      "mf-cf-blob": cf,
      ...headers,
    },
    body: text,
  });
}

/** A carrier webhook: form-encoded, signed over the URL as called and the parameters. */
function webhook(route, params, { signature } = {}) {
  const url = `${edge.url}${route}`;
  return fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      "x-twilio-signature": signature ?? twilioSignature(url, params),
      "mf-cf-blob": NEW_YORK,
    },
    body: new URLSearchParams(params).toString(),
  });
}

function incoming(sid, extra = {}) {
  return webhook("/voice/twilio/incoming", { AccountSid: ACCOUNT, CallSid: sid, From: "+14155550100", To: NUMBER, CallStatus: "ringing", Direction: "inbound", ...extra });
}

function statusCallback(sid, status) {
  return webhook("/voice/twilio/status", { AccountSid: ACCOUNT, CallSid: sid, CallStatus: status });
}

/** Opens a relay WebSocket as the carrier does (signed handshake) or with a URL token. */
const relay = (url, headers = {}) => wsClient(url, headers);

function carrierRelay(sid) {
  const url = `${edge.url.replace("http", "ws")}/voice/relay/${sid}`;
  return relay(url, { "x-twilio-signature": twilioSignature(url) });
}

function setup(sid) {
  return { type: "setup", sessionId: `VX${sid.slice(2)}`, callSid: sid, accountSid: ACCOUNT, from: "+14155550100", to: NUMBER, direction: "inbound", customParameters: { agent_id: "ava", greeting: "carrier" } };
}

/** The origin's stored turns of a call (read directly, signed as the edge would). */
async function storedTurns(origin, id) {
  const pathAndQuery = `/v1/calls/${id}/turns`;
  const principal = { tenant_id: TENANT, subject: "e2e", scopes: [], plan: "pro", method: "api_key" };
  const response = await fetch(`${origin.url}${pathAndQuery}`, { headers: edgeHeaders({ pathAndQuery, principal }) });
  return (await json(response)).turns;
}

async function until(predicate, message, ms = 5_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await predicate()) return;
    assert.ok(Date.now() < deadline, message);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}


describe("a phone call, as the carrier makes it", () => {
  test("webhook → TwiML → relay → tokens, interruption, DTMF, status callback, lease released", async () => {
    const sid = callSid();
    const answer = await incoming(sid);
    const twiml = await answer.text();
    assert.equal(answer.status, 200, twiml);
    assert.match(answer.headers.get("content-type"), /^text\/xml/);
    const relayUrl = `${edge.url.replace("http", "ws")}/voice/relay/${sid}`;
    assert.ok(twiml.includes(`<ConversationRelay url="${relayUrl}"`), twiml);
    assert.ok(twiml.includes('welcomeGreeting="Hello, this is Ava."'), twiml);
    assert.ok(twiml.includes('voice="en-US-Journey-O" language="en-US"'), twiml);
    assert.ok(twiml.includes('<Parameter name="greeting" value="carrier"/>'), twiml);

    // The tenant may have one live call: a second caller hears that the lines are busy.
    const busy = await (await incoming(callSid())).text();
    assert.ok(busy.includes("<Say") && busy.includes("<Hangup/>") && busy.includes("busy"), busy);

    const socket = await carrierRelay(sid);
    socket.send(setup(sid));
    socket.send({ type: "prompt", voicePrompt: "When are you open?", lang: "en-US", last: true });
    const tokens = await socket.reply();
    assert.equal(tokens.join(""), "We open at nine. We close at five.");

    // Interruption: a slow reply is cut off and the Bedrock stream is cancelled.
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 60, reply: "Let me read you every opening hour of every day of the week, starting on Monday morning." });
    const cancelledBefore = (await emulator.stats())[MODEL]?.cancelled ?? 0;
    socket.send({ type: "prompt", voicePrompt: "Read me all the hours", lang: "en-US", last: true });
    const first = await socket.next();
    assert.equal(first.type, "text");
    socket.send({ type: "interrupt", utteranceUntilInterrupt: "Let me read", durationUntilInterruptMs: 400 });
    await until(async () => ((await emulator.stats())[MODEL]?.cancelled ?? 0) > cancelledBefore, "the Bedrock stream was cancelled");
    socket.send({ type: "dtmf", digit: "5" });
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 2, reply: "We open at nine. We close at five." });

    // The call as an API client sees it.
    const state = await json(await api("GET", `/api/v1/calls/${sid}`));
    assert.equal(state.status, "active");
    assert.equal(state.region, "us-east-1");
    assert.equal(state.source, "phone");
    assert.ok(state.turn_count >= 1, JSON.stringify(state));

    // The carrier reports the end: the session ends and the lease goes back.
    const ended = await statusCallback(sid, "completed");
    assert.equal(ended.status, 204, await ended.text());
    const after = await json(await api("GET", `/api/v1/calls/${sid}`));
    assert.equal(after.status, "ended");
    assert.equal(after.end_reason, "completed");
    await until(() => socket.closed() !== null, "the session closed the carrier's socket");

    const turns = await storedTurns(originA, sid);
    assert.deepEqual(
      turns.map((t) => [t.role, t.interrupted]),
      [["user", false], ["assistant", false], ["user", false], ["assistant", true], ["dtmf", false]],
    );
    assert.equal(turns[3].text, "Let me read");

    // The lease came back: a new call is answered with a relay, not "busy".
    const next = callSid();
    const again = await (await incoming(next)).text();
    assert.ok(again.includes("<ConversationRelay"), again);
    assert.equal((await statusCallback(next, "no-answer")).status, 204);
  });

  test("a status that is not final is acknowledged and changes nothing", async () => {
    const sid = callSid();
    assert.ok((await (await incoming(sid)).text()).includes("<ConversationRelay"));
    assert.equal((await statusCallback(sid, "in-progress")).status, 204);
    assert.equal((await json(await api("GET", `/api/v1/calls/${sid}`))).status, "active");
    assert.equal((await statusCallback(sid, "busy")).status, 204);
    assert.equal((await json(await api("GET", `/api/v1/calls/${sid}`))).end_reason, "busy");
  });

  test("a number with no agent is told so in TwiML", async () => {
    const twiml = await (await incoming(callSid(), { To: "+18005550199" })).text();
    assert.ok(twiml.includes("not in service") && twiml.includes("<Hangup/>"), twiml);
  });
});

describe("an API client's call", () => {
  test("create → turn over SSE (streamed) → read → end; the relay URL's token is bound to the call", async () => {
    const created = await api("POST", "/api/v1/calls", { body: { agent_id: "ava" } });
    const call = await json(created);
    assert.equal(created.status, 201, JSON.stringify(call));
    assert.match(call.call_id, /^call_/);
    assert.equal(call.region, "us-east-1");
    assert.match(call.relay_url, new RegExp(`/voice/relay/${call.call_id}\\?session_token=st_`));

    const turn = await api("POST", `/api/v1/calls/${call.call_id}/turns`, { body: { text: "When are you open?" } });
    assert.equal(turn.status, 200);
    assert.match(turn.headers.get("content-type"), /^text\/event-stream/);
    assert.equal(turn.headers.get("x-content-type-options"), "nosniff");
    const events = parseSse(await turn.text());
    assert.equal(events.filter((e) => e.event === "token").map((e) => e.data.text).join(""), "We open at nine. We close at five.");
    assert.equal(events.at(-1).event, "done");

    const read = await json(await api("GET", `/api/v1/calls/${call.call_id}`));
    assert.equal(read.turn_count, 1);

    // The relay URL works for this call, and its token opens no other call.
    const socket = await relay(call.relay_url.replace("http", "ws"));
    socket.close();
    const other = callSid();
    await assert.rejects(relay(call.relay_url.replace(call.call_id, other).replace("http", "ws")), (error) => error.status === 401 || error.status === 404);

    const end = await api("POST", `/api/v1/calls/${call.call_id}/end`);
    assert.equal(end.status, 200);
    assert.equal((await json(end)).status, "ended");
    const late = await api("POST", `/api/v1/calls/${call.call_id}/turns`, { body: { text: "hello?" } });
    assert.equal(late.status, 409);
    assert.equal((await json(late)).error.code, "call_ended");
    const again = await api("POST", `/api/v1/calls/${call.call_id}/end`);
    assert.equal(again.status, 409);
  });

  test("another tenant's call does not exist for it", async () => {
    const call = await json(await api("POST", "/api/v1/calls", { body: { agent_id: "ava" } }));
    const peek = await api("GET", `/api/v1/calls/${call.call_id}`, { token: OTHER_TENANT });
    assert.equal(peek.status, 404);
    assert.equal((await api("POST", `/api/v1/calls/${call.call_id}/end`, { token: OTHER_TENANT })).status, 404);
    assert.equal((await api("POST", `/api/v1/calls/${call.call_id}/end`)).status, 200);
  });
});

describe("every rejection", () => {
  test("a webhook with a bad signature is 401, and nothing is created", async () => {
    const sid = callSid();
    const params = { AccountSid: ACCOUNT, CallSid: sid, From: "+14155550100", To: NUMBER, CallStatus: "ringing" };
    const wrongKey = createHmac("sha1", "not-the-token").update("x").digest("base64");
    const response = await webhook("/voice/twilio/incoming", params, { signature: wrongKey });
    assert.equal(response.status, 401);
    assert.equal((await json(response)).error.code, "twilio_bad_signature");
    assert.equal((await api("GET", `/api/v1/calls/${sid}`)).status, 404, "no session was created");
  });

  test("spoofed edge headers are never believed", async () => {
    const spoofed = { tenant_id: "tenant-other", subject: "x", scopes: ["calls:write", "calls:read"], plan: "pro", method: "api_key" };
    const forged = {
      "x-edge-principal": Buffer.from(JSON.stringify(spoofed)).toString("base64url"),
      "x-edge-signature": "v1=" + "0".repeat(64),
      "x-edge-timestamp": String(Math.floor(Date.now() / 1000)),
      "x-request-id": "forged",
    };
    const anonymous = await api("POST", "/api/v1/calls", { body: { agent_id: "ava" }, token: null, headers: forged });
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get("www-authenticate") ?? "", /^Bearer/);
    assert.notEqual(anonymous.headers.get("x-request-id"), "forged");
    // With a real credential, the call belongs to the credential's tenant, not the spoofed one.
    const created = await json(await api("POST", "/api/v1/calls", { body: { agent_id: "ava" }, headers: forged }));
    assert.equal((await api("GET", `/api/v1/calls/${created.call_id}`)).status, 200);
    assert.equal((await api("GET", `/api/v1/calls/${created.call_id}`, { token: OTHER_TENANT })).status, 404);
    await api("POST", `/api/v1/calls/${created.call_id}/end`);
  });

  test("a country outside the API allow-list is 403; the carrier's routes are not country-filtered", async () => {
    const blocked = await api("GET", "/api/v1/calls/anything", { cf: JSON.stringify({ country: "BR" }) });
    assert.equal(blocked.status, 403);
    assert.equal((await json(blocked)).error.code, "country_not_allowed");
    assert.equal(blocked.headers.get("x-frame-options"), "DENY");
  });

  test("over the per-principal limit: 429 with Retry-After and the RateLimit headers", async () => {
    const limited = jwt({ sub: "busy", tenant_id: "tenant-limited", scope: "calls:read" });
    const first = await api("GET", "/api/v1/calls/none", { token: limited });
    assert.equal(first.status, 404);
    assert.match(first.headers.get("ratelimit-policy") ?? "", /"principal";q=2/);
    await api("GET", "/api/v1/calls/none", { token: limited });
    const refused = await api("GET", "/api/v1/calls/none", { token: limited });
    assert.equal(refused.status, 429);
    assert.equal((await json(refused)).error.code, "rate_limited");
    assert.ok(Number(refused.headers.get("retry-after")) >= 1);
    assert.match(refused.headers.get("ratelimit") ?? "", /"principal";r=0/);
    assert.equal(refused.headers.get("ratelimit-remaining"), "0");
  });

  test("a body over the limit is 413 before it is read", async () => {
    const response = await api("POST", "/api/v1/calls", { body: JSON.stringify({ agent_id: "ava", pad: "x".repeat(300 * 1024) }) });
    assert.equal(response.status, 413);
    assert.equal((await json(response)).error.code, "payload_too_large");
  });

  test("unknown calls: 404 on read, end, turn and relay; a relay without an upgrade is 426", async () => {
    assert.equal((await api("GET", "/api/v1/calls/call_nope")).status, 404);
    assert.equal((await api("POST", "/api/v1/calls/call_nope/turns", { body: { text: "hi" } })).status, 404);
    const sid = callSid();
    await assert.rejects(carrierRelay(sid), (error) => error.status === 404);
    const plain = await fetch(`${edge.url}/voice/relay/${sid}`);
    assert.equal(plain.status, 426);
    assert.equal((await api("GET", "/api/v1/calls/bad.id")).status, 400);
  });

  test("a missing scope is 403 with the insufficient_scope challenge", async () => {
    const reader = jwt({ sub: "reader", tenant_id: TENANT, scope: "calls:read" });
    const response = await api("POST", "/api/v1/calls", { body: { agent_id: "ava" }, token: reader });
    assert.equal(response.status, 403);
    assert.match(response.headers.get("www-authenticate") ?? "", /insufficient_scope/);
  });

  test("CORS: configured origins get a preflight and exposed headers; others are refused", async () => {
    const preflight = await fetch(`${edge.url}/api/v1/calls`, {
      method: "OPTIONS",
      headers: { origin: "https://app.example.com", "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get("access-control-allow-origin"), "https://app.example.com");
    const refused = await fetch(`${edge.url}/api/v1/calls`, { method: "OPTIONS", headers: { origin: "https://evil.example", "access-control-request-method": "POST" } });
    assert.equal(refused.status, 403);
    const actual = await api("GET", "/api/v1/calls/none", { headers: { origin: "https://app.example.com" } });
    assert.equal(actual.headers.get("access-control-allow-origin"), "https://app.example.com");
    assert.match(actual.headers.get("access-control-expose-headers") ?? "", /ratelimit/);
    assert.match(actual.headers.get("content-security-policy") ?? "", /default-src 'none'/);
    assert.ok(actual.headers.get("strict-transport-security"));
  });
});

describe("what a client meets, checked from outside", () => {
  const originLogged = (id) => [...originA.logs, ...originB.logs].some((line) => line.includes(id));

  test("every answer carries X-Request-Id, and the origin logs the same id", async () => {
    const answers = [];
    const keep = async (name, response, forwarded) => {
      await response.arrayBuffer();
      const id = response.headers.get("x-request-id");
      assert.ok(id, `${name} (${response.status}) has no x-request-id`);
      answers.push({ name, id, forwarded });
      return response;
    };
    await keep("agent read", await api("GET", "/api/v1/agents/ava"), true);
    const created = await api("POST", "/api/v1/calls", { body: { agent_id: "ava" } });
    const call = await created.clone().json();
    await keep("call created", created, true);
    await keep("call read", await api("GET", `/api/v1/calls/${call.call_id}`), false);
    const turn = await keep("SSE turn", await api("POST", `/api/v1/calls/${call.call_id}/turns`, { body: { text: "When are you open?" } }), true);
    assert.match(turn.headers.get("content-type"), /^text\/event-stream/);
    await keep("call ended", await api("POST", `/api/v1/calls/${call.call_id}/end`), false);
    const sid = callSid();
    const twiml = await keep("TwiML", await incoming(sid), true);
    assert.match(twiml.headers.get("content-type"), /^text\/xml/);
    const status = await keep("status callback", await statusCallback(sid, "completed"), false);
    assert.equal(status.status, 204);
    assert.equal(new Set(answers.map((a) => a.id)).size, answers.length, "one id per request");
    for (const { name, id, forwarded } of answers.filter((a) => a.forwarded)) {
      await until(() => originLogged(id), `the origin logged ${name}'s request id ${id}`);
    }
  });

  test("a status callback signed over a JSON body (bodySHA256) ends the call and frees its line", async () => {
    const sid = callSid();
    assert.ok((await (await incoming(sid)).text()).includes("<ConversationRelay"));
    const body = JSON.stringify({ AccountSid: ACCOUNT, CallSid: sid, CallStatus: "completed" });
    const url = `${edge.url}/voice/twilio/status?bodySHA256=${createHash("sha256").update(body).digest("hex")}`;
    const ended = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-twilio-signature": twilioSignature(url), "mf-cf-blob": NEW_YORK },
      body,
    });
    assert.equal(ended.status, 204, await ended.text());
    const state = await json(await api("GET", `/api/v1/calls/${sid}`));
    assert.deepEqual([state.status, state.end_reason], ["ended", "completed"]);
    const next = callSid();
    assert.ok((await (await incoming(next)).text()).includes("<ConversationRelay"), "the line is free again");
    assert.equal((await statusCallback(next, "completed")).status, 204);
  });

  test("another tenant's credential on a call's relay socket is 404, as on the API", async () => {
    const call = await json(await api("POST", "/api/v1/calls", { body: { agent_id: "ava" } }));
    const socketUrl = `${edge.url.replace("http", "ws")}/voice/relay/${call.call_id}`;
    await assert.rejects(relay(socketUrl, { authorization: `Bearer ${OTHER_TENANT}` }), (error) => {
      assert.equal(error.status, 404, error.body);
      assert.equal(JSON.parse(error.body).error.code, "unknown_call");
      return true;
    });
    assert.equal((await api("GET", `/api/v1/calls/${call.call_id}`, { token: OTHER_TENANT })).status, 404);
    assert.equal((await api("POST", `/api/v1/calls/${call.call_id}/end`)).status, 200);
  });

  test("the edge counts a call's turns as the origin does: prompts and key presses, interrupted or not", async () => {
    const sid = callSid();
    assert.ok((await (await incoming(sid)).text()).includes("<ConversationRelay"));
    const socket = await carrierRelay(sid);
    socket.send(setup(sid));
    socket.send({ type: "prompt", voicePrompt: "When are you open?", lang: "en-US", last: true });
    await socket.reply();
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 60, reply: "Let me read you every opening hour of every day of the week, starting on Monday morning." });
    socket.send({ type: "prompt", voicePrompt: "Read me all the hours", lang: "en-US", last: true });
    assert.equal((await socket.next()).type, "text");
    socket.send({ type: "interrupt", utteranceUntilInterrupt: "Let me read", durationUntilInterruptMs: 400 });
    socket.send({ type: "dtmf", digit: "5" });
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 2, reply: "We open at nine. We close at five." });
    const pathAndQuery = `/v1/calls/${sid}`;
    const principal = { tenant_id: TENANT, subject: "e2e", scopes: [], plan: "pro", method: "api_key" };
    const atOrigin = async () => (await json(await fetch(`${originA.url}${pathAndQuery}`, { headers: edgeHeaders({ pathAndQuery, principal }) }))).turn_count;
    await until(async () => (await atOrigin()) === 3, "the origin stored three caller turns");
    const atEdge = (await json(await api("GET", `/api/v1/calls/${sid}`))).turn_count;
    assert.equal(atEdge, 3);
    socket.close();
    assert.equal((await statusCallback(sid, "completed")).status, 204);
  });

  test("an origin answering Cloudflare's 522 is failed over like a 502", async () => {
    let refused = 0;
    const proxy = http.createServer((request, response) => {
      refused += 1;
      request.resume();
      response.writeHead(522, { "content-type": "text/html" }).end("<h1>Connection timed out</h1>");
    });
    proxy.listen(0, "127.0.0.1");
    await new Promise((resolve) => proxy.once("listening", resolve));
    const proxied = `http://127.0.0.1:${proxy.address().port}`;
    const quick = await startEdge({ regionOrigin: (region) => (region === "us-east-1" ? proxied : originB.url) });
    try {
      const read = await fetch(`${quick.url}/api/v1/agents/ava`, { headers: { authorization: `Bearer ${ADMIN}`, "mf-cf-blob": NEW_YORK } });
      assert.equal(read.status, 200, await read.clone().text());
      assert.equal((await read.json()).id, "ava");
      assert.ok(refused >= 1, "the first region was tried");
    } finally {
      await quick.close();
      proxy.close();
    }
  });
});

describe("calls that vanish, and sessions that are evicted", () => {
  test("the session outlives its Durable Object's eviction", async () => {
    const call = await json(await api("POST", "/api/v1/calls", { body: { agent_id: "ava" } }));
    await edge.worker("voice-router").evictDurableObject("CallSession", { name: call.call_id });
    const state = await json(await api("GET", `/api/v1/calls/${call.call_id}`));
    assert.equal(state.status, "active");
    assert.equal(state.region, "us-east-1");
    assert.equal((await api("POST", `/api/v1/calls/${call.call_id}/end`)).status, 200);
  });

  test("the idle alarm ends a call nobody ends, and its lease goes back", async () => {
    // A second edge whose calls idle out after 1 s (its own storage; the same origins).
    const quick = await startEdge({ regionOrigin: () => originB.url, voiceVars: { CALL_IDLE_TIMEOUT_SECS: "1" } });
    try {
      const post = (route, body) => fetch(`${quick.url}${route}`, { method: "POST", headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json", "mf-cf-blob": NEW_YORK }, body: JSON.stringify(body) });
      const first = await json(await post("/api/v1/calls", { agent_id: "ava" }));
      assert.ok(first.call_id, JSON.stringify(first));
      assert.equal((await post("/api/v1/calls", { agent_id: "ava" })).status, 429, "one live call per tenant");
      await until(
        async () => (await json(await fetch(`${quick.url}/api/v1/calls/${first.call_id}`, { headers: { authorization: `Bearer ${ADMIN}`, "mf-cf-blob": NEW_YORK } }))).end_reason === "idle_timeout",
        "the alarm ended the idle call",
        10_000,
      );
      const second = await post("/api/v1/calls", { agent_id: "ava" });
      assert.equal(second.status, 201, "the idle call's lease was released");
    } finally {
      await quick.close();
    }
  });
});

describe("the origin dies mid-call", () => {
  test("the call continues through the next region with its conversation intact", async () => {
    const sid = callSid();
    assert.ok((await (await incoming(sid)).text()).includes("<ConversationRelay"));
    const socket = await carrierRelay(sid);
    socket.send(setup(sid));
    socket.send({ type: "prompt", voicePrompt: "When are you open?", lang: "en-US", last: true });
    assert.equal((await socket.reply()).join(""), "We open at nine. We close at five.");

    await originA.stop("SIGKILL");
    socket.send({ type: "prompt", voicePrompt: "And on Sundays?", lang: "en-US", last: true });
    assert.equal((await socket.reply()).join(""), "We open at nine. We close at five.");
    assert.equal(socket.closed(), null, "the caller's socket stayed up");

    const state = await json(await api("GET", `/api/v1/calls/${sid}`));
    assert.equal(state.region, "us-west-2");
    const turns = await storedTurns(originB, sid);
    assert.deepEqual(turns.map((t) => t.role), ["user", "assistant", "user", "assistant"]);
    assert.equal(turns[2].text, "And on Sundays?");
    assert.equal((await statusCallback(sid, "completed")).status, 204);
  });
});
