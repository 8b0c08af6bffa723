// Telnyx as the second carrier, end to end: the same phone call as voice.test.mjs's first test
// (webhook → markup → relay → tokens, interruption, DTMF, status callback, lease released), made
// by the carrier emulator as Telnyx makes it — form webhooks signed with Ed25519 over
// `timestamp|body`, TeXML with its `<ConversationRelay>`, a `v3:` call control id, the relay
// opened from the URL in the TeXML (Telnyx documents no signature on the handshake, so the URL
// carries a call-bound session token), Telnyx's `setup` — through the four Workers in workerd,
// the origin and the Bedrock emulator. One stack for the file.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { edgeHeaders, hs256Jwt, json, relaySocket, startEmulator, startOrigin, startWorkers, withTimeout } from "./harness.mjs";
import { startCarrierEmulator, telnyxHeaders, telnyxKeyPair, twilioSignature } from "../carrier-emulator/emulator.mjs";

const HS256_SECRET = "telnyx-e2e-hs256-secret-0123456789abcdef";
const TENANT = "tenant-telnyx";
const ACCOUNT = "9b7c2d1e-4f5a-4b6c-8d7e-0f1a2b3c4d5e";
const TWILIO_ACCOUNT = "AC" + "0d".repeat(16);
const TWILIO_TOKEN = "telnyx-e2e-twilio-token";
const NUMBER = "+13129457420";
const CALLER = "+35319605860";
const MODEL = "telnyx-voice";
const keys = telnyxKeyPair();
const ADMIN = hs256Jwt(HS256_SECRET, { iss: "https://issuer.telnyx", aud: "telnyx", sub: "admin", tenant_id: TENANT, scope: "calls:read calls:write agents:admin" });
// A caller in New York: us-east-1.
const NEW_YORK = JSON.stringify({ country: "US", regionCode: "NY", continent: "NA", latitude: "40.71", longitude: "-74.01", colo: "EWR" });

let emulator;
let origin;
let edge;
let carrier;

before(async () => {
  emulator = await startEmulator({ ttftMs: 20, interTokenMs: 2 });
  origin = await startOrigin({ BEDROCK_ENDPOINT_URL: emulator.url, BEDROCK_DEFAULT_MODELS: MODEL });
  await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 2, reply: "We open at nine. We close at five." });
  carrier = await startCarrierEmulator({
    telnyx: { accounts: { [ACCOUNT]: { apiKey: "unused", applicationSid: "unused", privateKey: keys.privateKey, numbers: [] } } },
    twilio: { accounts: { [TWILIO_ACCOUNT]: { token: TWILIO_TOKEN, numbers: [] } } },
  });
  edge = await startWorkers({
    originUrl: origin.url,
    vars: {
      "auth-validator": {
        JWT_ISSUER: "https://issuer.telnyx",
        JWT_AUDIENCE: "telnyx",
        JWT_DEFAULT_PLAN: "pro",
        TELNYX_ACCOUNTS: JSON.stringify({ [ACCOUNT]: { tenant_id: TENANT, plan: "pro", public_key: keys.publicKey } }),
        TWILIO_ACCOUNTS: JSON.stringify({ [TWILIO_ACCOUNT]: { tenant_id: TENANT, plan: "pro" } }),
      },
    },
    secrets: {
      "auth-validator": {
        JWT_HS256_SECRET: HS256_SECRET,
        SESSION_TOKEN_SECRET: "telnyx-e2e-session-token-secret-0123456789",
        [`TWILIO_AUTH_TOKEN_${TWILIO_ACCOUNT}`]: TWILIO_TOKEN,
      },
    },
  });
  const limiter = await edge.worker("rate-limiter").getEnv();
  await limiter.RATE_LIMIT_KV.put("policies:global", JSON.stringify({ ip: { algorithm: "sliding_window", limit: 100000, window_ms: 60000 } }));
  await limiter.RATE_LIMIT_KV.put(`policies:tenant:${TENANT}`, JSON.stringify({ "tenant-calls": { algorithm: "concurrency", limit: 1, lease_ttl_ms: 60000 } }));
  const agent = await api("PUT", "/api/v1/agents/tara", {
    body: {
      name: "Tara",
      system_prompt: "You answer questions about opening hours.",
      greeting: "Hello, this is Tara.",
      model: MODEL,
      fallback_models: [],
      phone_numbers: [NUMBER],
      voice: { voice: "Telnyx.NaturalHD.astra", language: "en", tts_provider: "telnyx", interruptible: "speech", hints: ["Tara"] },
    },
  });
  assert.ok([200, 201].includes(agent.status), `agent: ${agent.status} ${await agent.text()}`);
});

after(async () => {
  await edge?.close();
  await carrier?.close();
  await origin?.stop();
  await emulator?.stop();
});

function api(method, pathAndQuery, { body } = {}) {
  return fetch(`${edge.url}${pathAndQuery}`, {
    method,
    headers: { authorization: `Bearer ${ADMIN}`, "mf-cf-blob": NEW_YORK, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

const incoming = (extra = {}) => carrier.incoming({ carrier: "telnyx", account: ACCOUNT, edgeUrl: edge.url, from: CALLER, to: NUMBER, cf: NEW_YORK, ...extra });
const callIdOf = (twiml) => twiml.match(/\/voice\/relay\/(tx-[0-9a-f]{40})/)?.[1];

async function until(predicate, message, ms = 5_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await predicate()) return;
    assert.ok(Date.now() < deadline, message);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

describe("a phone call, as Telnyx makes it", () => {
  test("webhook → TeXML → relay → tokens, interruption, DTMF, status callback, lease released", async () => {
    const call = await incoming();
    assert.equal(call.response.status, 200, call.markup);
    assert.match(call.response.headers.get("content-type"), /^text\/xml/);
    const id = callIdOf(call.markup);
    assert.ok(id, `the relay URL names the edge's id for the v3 call: ${call.markup}`);
    assert.equal(call.relay.url.split("?")[0], `${edge.url.replace("http", "ws")}/voice/relay/${id}`);
    assert.match(call.relay.url, /\?session_token=st_/);
    // TeXML renders what Telnyx documents for <ConversationRelay>, and no more.
    assert.deepEqual(call.relay.attributes, {
      url: call.relay.url,
      welcomeGreeting: "Hello, this is Tara.",
      voice: "Telnyx.NaturalHD.astra",
      language: "en",
      dtmfDetection: "true",
      interruptible: "speech",
    });
    assert.deepEqual(call.relay.parameters, { agent_id: "tara", greeting: "carrier" });

    // The tenant may have one live call: a second caller hears that the lines are busy.
    const busy = await incoming();
    assert.ok(busy.markup.includes("<Say") && busy.markup.includes("<Hangup/>") && busy.markup.includes("busy"), busy.markup);

    const socket = await call.connect();
    socket.send({ type: "prompt", voicePrompt: "When are you open?", lang: "en", last: true });
    assert.equal(await socket.reply(), "We open at nine. We close at five.");

    // Interruption: a slow reply is cut off and the Bedrock stream cancelled.
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 60, reply: "Let me read you every opening hour of every day of the week, starting on Monday morning." });
    const cancelledBefore = (await emulator.stats())[MODEL]?.cancelled ?? 0;
    socket.send({ type: "prompt", voicePrompt: "Read me all the hours", lang: "en", last: true });
    assert.equal((await socket.next()).type, "text");
    socket.send({ type: "interrupt", utteranceUntilInterrupt: "Let me read", durationUntilInterruptMs: 400 });
    await until(async () => ((await emulator.stats())[MODEL]?.cancelled ?? 0) > cancelledBefore, "the Bedrock stream was cancelled");
    socket.send({ type: "dtmf", digit: "5" });
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 2, reply: "We open at nine. We close at five." });

    const state = await json(await api("GET", `/api/v1/calls/${id}`));
    assert.deepEqual([state.status, state.source, state.carrier, state.carrier_call_id], ["active", "phone", "telnyx", call.callSid]);
    assert.equal(state.region, "us-east-1");

    // Telnyx reports the end: the session ends and the lease goes back.
    const ended = await call.end("completed");
    assert.equal(ended.status, 204, await ended.text());
    const after = await json(await api("GET", `/api/v1/calls/${id}`));
    assert.deepEqual([after.status, after.end_reason], ["ended", "completed"]);
    assert.equal(await withTimeout(socket.closed(), 5_000, "the session closed the carrier's socket"), 1000);

    const pathAndQuery = `/v1/calls/${id}/turns`;
    const principal = { tenant_id: TENANT, subject: "e2e", scopes: [], plan: "pro", method: "api_key" };
    const turns = (await json(await fetch(`${origin.url}${pathAndQuery}`, { headers: edgeHeaders({ pathAndQuery, principal }) }))).turns;
    assert.deepEqual(
      turns.map((t) => [t.role, t.interrupted]),
      [["user", false], ["assistant", false], ["user", false], ["assistant", true], ["dtmf", false]],
    );
    const record = await json(await fetch(`${origin.url}/v1/calls/${id}`, { headers: edgeHeaders({ pathAndQuery: `/v1/calls/${id}`, principal }) }));
    assert.deepEqual([record.carrier_call_sid, record.carrier, record.direction], [call.callSid, "telnyx", "inbound"]);

    // The lease came back: a new call is answered with a relay, not "busy".
    const next = await incoming();
    assert.ok(next.markup.includes("<ConversationRelay"), next.markup);
    assert.equal((await next.end("no-answer")).status, 204);
  });

  test("a number with no agent is told so in TeXML", async () => {
    const call = await incoming({ to: "+13125550199" });
    assert.ok(call.markup.includes("not in service") && call.markup.includes("<Hangup/>"), call.markup);
  });

  test("a relay URL's token opens its own call only", async () => {
    const call = await incoming();
    const id = callIdOf(call.markup);
    const other = call.relay.url.replace(id, "tx-" + "0".repeat(40));
    await assert.rejects(relaySocket(other), (error) => error.status === 401 || error.status === 404);
    await assert.rejects(relaySocket(call.relay.url.split("?")[0]), (error) => error.status === 401, "no token, no signature");
    assert.equal((await call.end("completed")).status, 204);
  });
});

describe("what the Telnyx routes refuse", () => {
  const post = (route, body, headers) =>
    fetch(`${edge.url}/voice/telnyx/${route}`, { method: "POST", headers: { "content-type": "application/x-www-form-urlencoded", ...headers }, body });
  const form = (fields) => new URLSearchParams({ AccountSid: ACCOUNT, CallSid: "v3:abcdef", From: CALLER, To: NUMBER, ...fields }).toString();

  test("bad, stale, missing and foreign signatures are refused, and nothing is created", async () => {
    const body = form({ CallStatus: "ringing" });
    const cases = [
      ["signed with another key", telnyxHeaders(telnyxKeyPair().privateKey, body), 401, "telnyx_bad_signature"],
      ["a stale timestamp", telnyxHeaders(keys.privateKey, body, Math.floor(Date.now() / 1000) - 3600), 401, "telnyx_timestamp_stale"],
      ["no timestamp", { "telnyx-signature-ed25519": telnyxHeaders(keys.privateKey, body)["telnyx-signature-ed25519"] }, 401, "telnyx_timestamp_malformed"],
      ["not a signature", { ...telnyxHeaders(keys.privateKey, body), "telnyx-signature-ed25519": "c2hvcnQ=" }, 401, "telnyx_signature_malformed"],
      ["no credential", {}, 401, "missing_credential"],
    ];
    for (const [name, headers, status, code] of cases) {
      const response = await post("incoming", body, headers);
      const error = await json(response);
      assert.equal(response.status, status, `${name}: ${JSON.stringify(error)}`);
      assert.equal(error.error.code, code, name);
    }
    // A body naming an account that is not configured.
    const stranger = form({ AccountSid: "00000000-0000-0000-0000-000000000000" });
    const unknown = await post("incoming", stranger, telnyxHeaders(keys.privateKey, stranger));
    assert.equal((await json(unknown)).error.code, "telnyx_unknown_account");
    // Twilio's signature on Telnyx's route: a valid credential, the wrong carrier.
    const url = `${edge.url}/voice/telnyx/incoming`;
    const params = { AccountSid: TWILIO_ACCOUNT, CallSid: "CA" + "1".repeat(32), From: CALLER, To: NUMBER };
    const twilio = await post("incoming", new URLSearchParams(params).toString(), { "x-twilio-signature": twilioSignature(TWILIO_TOKEN, url, params) });
    assert.equal(twilio.status, 403);
    assert.equal((await json(twilio)).error.code, "wrong_carrier");
    assert.equal((await api("GET", `/api/v1/calls/tx-${"0".repeat(40)}`)).status, 404);
  });

  test("a signed webhook without a usable CallSid is 400; a status about an unknown call is 404 when final, 204 otherwise", async () => {
    const noSid = new URLSearchParams({ AccountSid: ACCOUNT, To: NUMBER }).toString();
    const refused = await post("incoming", noSid, telnyxHeaders(keys.privateKey, noSid));
    assert.equal(refused.status, 400);
    assert.equal((await json(refused)).error.code, "invalid_request");
    const final = form({ CallStatus: "completed" });
    assert.equal((await post("status", final, telnyxHeaders(keys.privateKey, final))).status, 404);
    const ringing = form({ CallStatus: "ringing" });
    assert.equal((await post("status", ringing, telnyxHeaders(keys.privateKey, ringing))).status, 204);
  });
});
