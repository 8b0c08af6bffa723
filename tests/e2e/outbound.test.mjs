// Outbound calls end to end: the four Workers in workerd, the origin, the Bedrock emulator, and
// the carrier REST emulator (tests/carrier-emulator) standing in for Twilio's and Telnyx's APIs.
// `POST /api/v1/calls/outbound` places a call; the emulator checks the request as the carrier
// would, then drives the call as the carrier does — status callbacks signed as it signs them,
// the relay WebSocket from the call's markup, `setup` — while the test speaks as the callee.
// One stack for the file.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { hs256Jwt, json, signedCall, startEmulator, startOrigin, startWorkers, withTimeout } from "./harness.mjs";
import { startCarrierEmulator, telnyxHeaders, telnyxKeyPair, twilioSignature } from "../carrier-emulator/emulator.mjs";

const HS256_SECRET = "outbound-e2e-hs256-secret-0123456789abcdef";
const ISSUER = "https://issuer.outbound";
const AUDIENCE = "outbound";
const TENANT = "tenant-out";
const CPS_TENANT = "tenant-cps";
const BARE_TENANT = "tenant-bare";
const MODEL = "outbound-model";
const ACCOUNT = "AC" + "0a".repeat(16);
const CPS_ACCOUNT = "AC" + "0c".repeat(16);
const TWILIO_TOKEN = "outbound-e2e-twilio-token";
const CPS_TOKEN = "outbound-e2e-cps-token";
const TELNYX_ACCOUNT = "5c1b0a2e-7d3f-4c8e-9a61-2f0e5b7c9d14";
const TELNYX_KEY = "KEYoutbound0123456789";
const TELNYX_APP = "1773070540731319841";
const telnyxKeys = telnyxKeyPair();
// Ava calls from the first; the second is hers too, but the carrier never verified it.
const AVA_NUMBERS = ["+18005550111", "+18005550112"];
const TINA_NUMBER = "+18005550121";
const CPS_NUMBER = "+18005550131";
const BARE_NUMBER = "+18005550141";
const CALLEE = "+14155550123";
const VOICEMAIL = "Hi, this is Ava from the clinic. Please call us back.";

const token = (tenant, scope = "calls:read calls:write agents:admin") =>
  hs256Jwt(HS256_SECRET, { iss: ISSUER, aud: AUDIENCE, sub: "ops", tenant_id: tenant, scope });
const ADMIN = token(TENANT);

let emulator;
let origin;
let edge;
let carrier;

before(async () => {
  emulator = await startEmulator({ ttftMs: 5, interTokenMs: 1 });
  origin = await startOrigin({ BEDROCK_ENDPOINT_URL: emulator.url, BEDROCK_FIRST_TOKEN_TIMEOUT_MS: "500" });
  await emulator.script(MODEL, { reply: "We open at nine. We close at five." });
  carrier = await startCarrierEmulator({
    twilio: {
      accounts: {
        [ACCOUNT]: { token: TWILIO_TOKEN, numbers: [AVA_NUMBERS[0]] },
        [CPS_ACCOUNT]: { token: CPS_TOKEN, numbers: [CPS_NUMBER] },
      },
    },
    telnyx: { accounts: { [TELNYX_ACCOUNT]: { apiKey: TELNYX_KEY, applicationSid: TELNYX_APP, privateKey: telnyxKeys.privateKey, numbers: [TINA_NUMBER] } } },
  });
  // One description of the accounts for both Workers, as docs/configuration.md says.
  const twilioAccounts = JSON.stringify({ [ACCOUNT]: { tenant_id: TENANT, plan: "pro" }, [CPS_ACCOUNT]: { tenant_id: CPS_TENANT, plan: "pro" } });
  const telnyxAccounts = JSON.stringify({
    [TELNYX_ACCOUNT]: { tenant_id: TENANT, plan: "pro", public_key: telnyxKeys.publicKey, application_sid: TELNYX_APP, numbers: [TINA_NUMBER] },
  });
  const twilioTokens = { [`TWILIO_AUTH_TOKEN_${ACCOUNT}`]: TWILIO_TOKEN, [`TWILIO_AUTH_TOKEN_${CPS_ACCOUNT}`]: CPS_TOKEN };
  edge = await startWorkers({
    originUrl: origin.url,
    vars: {
      "auth-validator": { JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE, JWT_DEFAULT_PLAN: "pro", TWILIO_ACCOUNTS: twilioAccounts, TELNYX_ACCOUNTS: telnyxAccounts },
      "voice-router": { TWILIO_ACCOUNTS: twilioAccounts, TELNYX_ACCOUNTS: telnyxAccounts, TWILIO_API_BASE: carrier.url, TELNYX_API_BASE: carrier.url },
    },
    secrets: {
      "auth-validator": { JWT_HS256_SECRET: HS256_SECRET, SESSION_TOKEN_SECRET: "outbound-e2e-session-secret-0123456789abcd", ...twilioTokens },
      "voice-router": { ...twilioTokens, [`TELNYX_API_KEY_${TELNYX_ACCOUNT}`]: TELNYX_KEY },
    },
  });
  // One address runs every test: lift the per-IP limit. One live call per tenant, so a line
  // given back is observable; the main tenant's pacing raised so only the CPS test meets it.
  const limiter = await edge.worker("rate-limiter").getEnv();
  await limiter.RATE_LIMIT_KV.put("policies:global", JSON.stringify({ ip: { algorithm: "sliding_window", limit: 100000, window_ms: 60000 } }));
  await limiter.RATE_LIMIT_KV.put(
    `policies:tenant:${TENANT}`,
    JSON.stringify({ "tenant-calls": { algorithm: "concurrency", limit: 1, lease_ttl_ms: 60000 }, "carrier-cps": { algorithm: "gcra", limit: 1000, period_ms: 1000 } }),
  );
  const agents = [
    [TENANT, "ava", { greeting: "Hello, this is Ava.", voicemail_message: VOICEMAIL, phone_numbers: AVA_NUMBERS, voice: { voice: "en-US-Journey-O", language: "en-US" } }],
    [TENANT, "tina", { greeting: "Hi, Tina here.", phone_numbers: [TINA_NUMBER], voice: { voice: "Telnyx.NaturalHD.astra", language: "en" } }],
    [CPS_TENANT, "cps", { phone_numbers: [CPS_NUMBER] }],
    [BARE_TENANT, "bare", { phone_numbers: [BARE_NUMBER] }],
  ];
  for (const [tenant, id, spec] of agents) {
    const response = await api("PUT", `/api/v1/agents/${id}`, { token: token(tenant), body: { name: id, system_prompt: "You call patients back.", model: MODEL, fallback_models: [], ...spec } });
    assert.ok([200, 201].includes(response.status), `${id}: ${response.status} ${await response.text()}`);
  }
});

after(async () => {
  await edge?.close();
  await carrier?.close();
  await origin?.stop();
  await emulator?.stop();
});

function api(method, pathAndQuery, { body, token = ADMIN } = {}) {
  const text = body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body);
  return fetch(`${edge.url}${pathAndQuery}`, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(text === undefined ? {} : { "content-type": "application/json" }) },
    body: text,
  });
}

const outbound = (body, options) => api("POST", "/api/v1/calls/outbound", { body, ...options });
const state = async (id) => json(await api("GET", `/api/v1/calls/${id}`));
const atOrigin = async (id) => json(await signedCall(origin, "GET", `/v1/calls/${id}`, { principal: { tenant_id: TENANT, subject: "e2e", scopes: [], plan: "pro", method: "api_key" } }));

async function until(predicate, message, ms = 8_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await predicate()) return;
    assert.ok(Date.now() < deadline, message);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** Places a call and returns its id and the carrier's view of it. */
async function place(body, options) {
  const response = await outbound(body, options);
  const answer = await json(response);
  assert.equal(response.status, 202, JSON.stringify(answer));
  return { id: answer.call_id, answer, call: await carrier.nextCall() };
}

/** The tenant's one line is free: a new call is placed (then ended as the carrier would). */
async function lineIsFree() {
  const { id, call } = await place({ agent_id: "ava", to: CALLEE });
  assert.equal((await call.end("no-answer")).status, 204);
  assert.equal((await state(id)).end_reason, "no_answer");
}

describe("through Twilio", () => {
  test("answered by a person: queued → ringing → in progress, a conversation, then completed; the line comes back", async () => {
    const { id, answer, call } = await place({ agent_id: "ava", to: CALLEE, metadata: { campaign: "renewals" } });
    assert.match(id, /^call_/);
    assert.equal(answer.status, "queued");
    // What Twilio was asked: Calls.json with the agent's TwiML inline and the status route.
    assert.equal(call.carrier, "twilio");
    assert.equal(call.params.To, CALLEE);
    assert.equal(call.params.From, AVA_NUMBERS[0], "the agent's first number by default");
    assert.equal(call.params.StatusCallback, `${edge.url}/voice/twilio/status?call_id=${id}`);
    assert.deepEqual(call.params.StatusCallbackEvent, ["ringing", "answered", "completed"]);
    assert.equal(call.params.MachineDetection, undefined, "no detection unless asked");
    assert.equal(call.relay.url, `${edge.url.replace("http", "ws")}/voice/relay/${id}`);
    assert.equal(call.relay.attributes.welcomeGreeting, "Hello, this is Ava.");
    assert.deepEqual(call.relay.parameters, { agent_id: "ava", greeting: "carrier" });

    let seen = await state(id);
    assert.deepEqual([seen.status, seen.direction, seen.carrier, seen.carrier_call_id], ["queued", "outbound", "twilio", call.callSid]);
    assert.equal((await call.ring()).status, 204);
    assert.equal((await state(id)).status, "ringing");
    const socket = await call.answer();
    seen = await state(id);
    assert.deepEqual([seen.status, seen.carrier_status], ["active", "in-progress"]);

    socket.send({ type: "prompt", voicePrompt: "When are you open?", lang: "en-US", last: true });
    assert.equal(await socket.reply(), "We open at nine. We close at five.");
    socket.send({ type: "dtmf", digit: "1" });

    // The tenant's one line is taken while the call lives.
    const busy = await outbound({ agent_id: "ava", to: CALLEE });
    assert.equal(busy.status, 429);
    assert.equal((await json(busy)).error.code, "concurrent_calls_exceeded");

    assert.equal((await call.end("completed")).status, 204);
    seen = await state(id);
    assert.deepEqual([seen.status, seen.end_reason], ["ended", "completed"]);
    await withTimeout(socket.closed(), 5_000, "the session closed the carrier's socket");
    const record = await atOrigin(id);
    assert.deepEqual(
      [record.direction, record.carrier, record.from, record.to, record.metadata, record.end_reason],
      ["outbound", "twilio", AVA_NUMBERS[0], CALLEE, { campaign: "renewals" }, "completed"],
    );
    assert.equal(record.turn_count, 2, "a prompt and a key press");
    await lineIsFree();
  });

  test("answered by a machine: the voicemail message is spoken once the greeting ends, stored, and the call ends", async () => {
    const { id, call } = await place({ agent_id: "ava", to: CALLEE, machine_detection: "detect_message_end" });
    assert.equal(call.params.MachineDetection, "DetectMessageEnd");
    assert.equal(call.params.AsyncAmd, "true");
    assert.equal(call.params.AsyncAmdStatusCallback, call.params.StatusCallback);
    const socket = await call.answer();
    const started = Date.now();
    assert.equal((await call.detect("machine_end_beep")).status, 204);
    assert.deepEqual(await socket.next(), { type: "text", token: VOICEMAIL, last: true });
    const end = await socket.next(15_000);
    assert.equal(end.type, "end");
    assert.equal(JSON.parse(end.handoffData).reason, "voicemail_left");
    assert.ok(Date.now() - started >= 4_000, "the message had time to be said");
    await until(async () => (await state(id)).end_reason === "voicemail_left", "the edge's session ended with the voicemail");
    assert.equal((await state(id)).answered_by, "machine_end_beep");
    // The carrier hangs up afterwards: acknowledged, nothing changes.
    assert.equal((await call.end("completed")).status, 204);
    const record = await atOrigin(id);
    assert.deepEqual([record.answered_by, record.voicemail_message, record.end_reason], ["machine_end_beep", VOICEMAIL, "voicemail_left"]);
    assert.ok(record.voicemail_left_at_ms >= record.started_at_ms);
    await lineIsFree();
  });

  test("a machine found as its greeting starts (detect) is hung up on without a message", async () => {
    const { id, call } = await place({ agent_id: "ava", to: CALLEE, machine_detection: "detect" });
    assert.equal(call.params.MachineDetection, "Enable");
    const socket = await call.answer();
    assert.equal((await call.detect("machine_start")).status, 204);
    const end = await socket.next();
    assert.equal(end.type, "end", "no message is said over a greeting");
    assert.equal(JSON.parse(end.handoffData).reason, "machine_answered");
    await until(async () => (await state(id)).end_reason === "machine_answered", "the session ended");
    assert.equal((await atOrigin(id)).voicemail_message, undefined);
    assert.equal((await call.end("completed")).status, 204);
  });

  for (const [status, reason] of [
    ["busy", "busy"],
    ["no-answer", "no_answer"],
  ]) {
    test(`${status}: the call ends and its line is back at once`, async () => {
      const { id, call } = await place({ agent_id: "ava", to: CALLEE });
      assert.equal((await call.ring()).status, 204);
      assert.equal((await call.end(status)).status, 204);
      const seen = await state(id);
      assert.deepEqual([seen.status, seen.end_reason, seen.carrier_status], ["ended", reason, status]);
      // No wait for a lease to expire: the next call is placed at once.
      const next = await place({ agent_id: "ava", to: CALLEE });
      assert.equal((await next.call.end("canceled")).status, 204);
      assert.equal((await state(next.id)).end_reason, "canceled");
      assert.equal((await atOrigin(id)).end_reason, reason);
    });
  }

  test("calls per second are paced per carrier account: a second call within the second is 429 with Retry-After", async () => {
    const cps = token(CPS_TENANT);
    const first = await place({ agent_id: "cps", to: CALLEE }, { token: cps });
    const before = carrier.requests.length;
    const second = await outbound({ agent_id: "cps", to: CALLEE }, { token: cps });
    const error = await json(second);
    assert.equal(second.status, 429, JSON.stringify(error));
    assert.equal(error.error.code, "rate_limited");
    assert.ok(Number(second.headers.get("retry-after")) >= 1);
    assert.match(second.headers.get("ratelimit-policy") ?? "", /"carrier-cps";q=1/);
    assert.equal(carrier.requests.length, before, "the carrier was not asked");
    assert.equal((await first.call.end("completed")).status, 204);
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const later = await place({ agent_id: "cps", to: CALLEE }, { token: cps });
    assert.equal((await later.call.end("completed")).status, 204);
  });

  test("a caller id that is not one of the tenant's numbers is refused before the carrier is asked", async () => {
    const before = carrier.requests.length;
    const refused = await outbound({ agent_id: "ava", to: CALLEE, from: "+18005550999" });
    assert.equal(refused.status, 403);
    assert.equal((await json(refused)).error.code, "caller_id_not_allowed");
    // Another tenant's number is not this tenant's either.
    const theirs = await outbound({ agent_id: "ava", to: CALLEE, from: CPS_NUMBER });
    assert.equal(theirs.status, 403);
    assert.equal(carrier.requests.length, before);
    await lineIsFree();
  });

  test("a caller id the carrier refuses, a number it refuses, a carrier failing: clear errors, and the line comes back", async () => {
    // The tenant's own number, which the carrier never verified (Twilio 21210).
    const unverified = await outbound({ agent_id: "ava", to: CALLEE, from: AVA_NUMBERS[1] });
    const refusal = await json(unverified);
    assert.equal(unverified.status, 422, JSON.stringify(refusal));
    assert.equal(refusal.error.code, "carrier_refused_caller_id");
    assert.match(refusal.error.message, /not yet verified/);
    // A number the carrier refuses (Twilio 21211).
    carrier.refuseNext({ status: 400, body: { code: 21211, message: "The 'To' number +14155550123 is not a valid phone number.", status: 400 } });
    const invalid = await outbound({ agent_id: "ava", to: CALLEE });
    assert.equal(invalid.status, 422);
    assert.equal((await json(invalid)).error.code, "carrier_refused_destination");
    // The carrier failing, and refusing the edge's credentials: 502, generic.
    for (const status of [503, 401]) {
      carrier.refuseNext({ status, body: { code: 20003, message: "nope", status } });
      const failed = await outbound({ agent_id: "ava", to: CALLEE });
      const error = await json(failed);
      assert.equal(failed.status, 502, JSON.stringify(error));
      assert.equal(error.error.code, "carrier_unavailable");
      assert.ok(!JSON.stringify(error).includes(TWILIO_TOKEN));
    }
    carrier.refuseNext({ status: 429, body: { code: 20429, message: "Too Many Requests", status: 429 } });
    const slow = await outbound({ agent_id: "ava", to: CALLEE });
    assert.equal(slow.status, 503);
    assert.equal(slow.headers.get("retry-after"), "1");
    // Every refused call was ended, so the tenant's one line is free.
    await lineIsFree();
  });

  test("callbacks it cannot use are refused: another call's CallSid, a bad call id, an unknown call's end, a bad signature", async () => {
    const { id, call } = await place({ agent_id: "ava", to: CALLEE });
    const mismatch = await call.post({ CallStatus: "completed", CallSid: "CA" + "f".repeat(32) });
    assert.equal(mismatch.status, 409);
    assert.equal((await json(mismatch)).error.code, "carrier_call_mismatch");
    assert.equal((await state(id)).status, "queued", "the call goes on");
    const post = (url, params, signature) =>
      fetch(url, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature ?? twilioSignature(TWILIO_TOKEN, url, params) }, body: new URLSearchParams(params).toString() });
    const params = { AccountSid: ACCOUNT, CallSid: call.callSid, CallStatus: "completed" };
    const badId = `${edge.url}/voice/twilio/status?call_id=a.b`;
    assert.equal((await post(badId, params)).status, 400);
    const unknown = `${edge.url}/voice/twilio/status?call_id=call_nope`;
    assert.equal((await post(unknown, params)).status, 404);
    const progress = await post(unknown, { ...params, CallStatus: "ringing" });
    assert.equal(progress.status, 204, "progress about an unknown call is acknowledged");
    const forged = await post(`${edge.url}/voice/twilio/status?call_id=${id}`, params, twilioSignature("not-the-token", "x"));
    assert.equal(forged.status, 401);
    assert.equal((await state(id)).status, "queued");
    assert.equal((await call.end("completed")).status, 204);
  });
});

describe("through Telnyx", () => {
  test("answered by a person: JSON with a Bearer key, the relay opened by its URL's token, callbacks signed with Ed25519", async () => {
    const { id, call } = await place({ agent_id: "tina", to: CALLEE, machine_detection: "detect_message_end" });
    assert.equal(call.carrier, "telnyx");
    const request = carrier.requests.at(-1);
    assert.equal(request.path, `/v2/texml/Accounts/${TELNYX_ACCOUNT}/Calls`);
    assert.equal(request.headers.authorization, `Bearer ${TELNYX_KEY}`);
    assert.deepEqual(
      [call.params.ApplicationSid, call.params.From, call.params.StatusCallbackEvent, call.params.MachineDetection, call.params.AsyncAmd],
      [TELNYX_APP, TINA_NUMBER, "ringing answered completed", "DetectMessageEnd", true],
    );
    assert.equal(call.params.StatusCallback, `${edge.url}/voice/telnyx/status?call_id=${id}`);
    assert.match(call.relay.url, new RegExp(`/voice/relay/${id}\\?session_token=st_`));
    // TeXML: the attributes Telnyx documents, not Twilio's others.
    assert.equal(call.relay.attributes.voice, "Telnyx.NaturalHD.astra");
    assert.ok(call.markup.includes('<Parameter name="agent_id" value="tina"/>'), call.markup);

    assert.equal((await state(id)).carrier_call_id, undefined, "Telnyx's answer names no call id");
    assert.equal((await call.ring()).status, 204);
    let seen = await state(id);
    assert.deepEqual([seen.status, seen.carrier_call_id], ["ringing", call.callSid], "the first callback binds it");
    const socket = await call.answer();
    assert.equal((await state(id)).status, "active");
    socket.send({ type: "prompt", voicePrompt: "When are you open?", lang: "en", last: true });
    assert.equal(await socket.reply(), "We open at nine. We close at five.");
    assert.equal((await call.detect("human")).status, 204);
    await assert.rejects(socket.next(500), /no relay message/, "a person talks on");
    assert.equal((await state(id)).answered_by, "human");

    // A callback signed with another key is refused; one with a stale timestamp too.
    const body = new URLSearchParams({ AccountSid: TELNYX_ACCOUNT, CallSid: call.callSid, CallStatus: "completed" }).toString();
    const send = (headers) => fetch(call.params.StatusCallback, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", ...headers }, body });
    const forged = await send(telnyxHeaders(telnyxKeyPair().privateKey, body));
    assert.equal(forged.status, 401);
    assert.equal((await json(forged)).error.code, "telnyx_bad_signature");
    const stale = await send(telnyxHeaders(telnyxKeys.privateKey, body, Math.floor(Date.now() / 1000) - 600));
    assert.equal((await json(stale)).error.code, "telnyx_timestamp_stale");
    assert.equal((await state(id)).status, "active");

    assert.equal((await call.end("completed")).status, 204);
    seen = await state(id);
    assert.deepEqual([seen.status, seen.end_reason], ["ended", "completed"]);
    await withTimeout(socket.closed(), 5_000, "the session closed the socket");
    assert.equal((await atOrigin(id)).carrier, "telnyx");
    await lineIsFree();
  });

  test("a number Telnyx refuses is 422, and the line comes back", async () => {
    carrier.refuseNext({ status: 422, body: { errors: [{ code: "10015", title: "Invalid value", detail: "The 'To' number is not valid.", source: { pointer: "/To" } }] } });
    const refused = await outbound({ agent_id: "tina", to: CALLEE });
    const error = await json(refused);
    assert.equal(refused.status, 422, JSON.stringify(error));
    assert.equal(error.error.code, "carrier_refused_destination");
    await lineIsFree();
  });
});

describe("what the route refuses", () => {
  test("every bad request gets its status and code, and takes no line", async () => {
    const cases = [
      ["no credential", { agent_id: "ava", to: CALLEE }, { token: null }, 401, null],
      ["missing scope", { agent_id: "ava", to: CALLEE }, { token: token(TENANT, "calls:read") }, 403, "insufficient_scope"],
      ["not JSON", "{", {}, 400, "invalid_request"],
      ["an unknown field", { agent_id: "ava", to: CALLEE, speed: "fast" }, {}, 400, "invalid_request"],
      ["to not E.164", { agent_id: "ava", to: "4155550123" }, {}, 400, "invalid_request"],
      ["from not E.164", { agent_id: "ava", to: CALLEE, from: "ava" }, {}, 400, "invalid_request"],
      ["an unknown detection mode", { agent_id: "ava", to: CALLEE, machine_detection: "maybe" }, {}, 400, "invalid_request"],
      ["metadata not an object", { agent_id: "ava", to: CALLEE, metadata: [1] }, {}, 400, "invalid_request"],
      ["a bad agent id", { agent_id: "a/b", to: CALLEE }, {}, 400, "invalid_request"],
      ["an unknown agent", { agent_id: "nobody", to: CALLEE }, {}, 404, "unknown_agent"],
      ["a tenant without a carrier account", { agent_id: "bare", to: CALLEE }, { token: token(BARE_TENANT) }, 422, "outbound_not_configured"],
    ];
    const before = carrier.requests.length;
    for (const [name, body, options, status, code] of cases) {
      const response = await outbound(body, options);
      const answer = await json(response);
      assert.equal(response.status, status, `${name}: ${JSON.stringify(answer)}`);
      if (code) assert.equal(answer.error.code, code, name);
    }
    assert.equal(carrier.requests.length, before, "the carrier was never asked");
    assert.equal((await api("GET", "/api/v1/calls/outbound")).status, 405);
    await lineIsFree();
  });
});
