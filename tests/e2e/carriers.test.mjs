// What a live carrier sends and today's Bedrock does, end to end against the origin binary
// (signed as the edge signs), the Bedrock emulator binary behind the real AWS SDK, and
// PostgreSQL/Redis when the test command started them: every model failing, a silent caller,
// the interrupt's string form, a language switch, a guardrail's intervention, and the caller
// details of `setup`. Then the same calls as a carrier makes them through the edge: the four
// Workers in workerd, TwiML rendered from the agent's settings, the relay through the call's
// `CallSession`, and the session ended by the agent's `end`.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import {
  hs256Jwt,
  json,
  originRelay,
  parseSse,
  principalOf,
  relaySocket,
  signedCall,
  startEmulator,
  startOrigin,
  startWorkers,
} from "./harness.mjs";

const TENANT = principalOf("carrier-tenant");
const call = (origin, method, pathAndQuery, options = {}) => signedCall(origin, method, pathAndQuery, { principal: TENANT, ...options });

describe("carriers and models as they really are, against the origin", () => {
  let emulator;
  let origin;
  before(async () => {
    emulator = await startEmulator({ ttftMs: 5, interTokenMs: 1 });
    origin = await startOrigin({ BEDROCK_ENDPOINT_URL: emulator.url, BEDROCK_FIRST_TOKEN_TIMEOUT_MS: "300" });
  });
  after(async () => {
    await origin?.stop();
    await emulator?.stop();
  });

  async function agent(id, spec) {
    const response = await call(origin, "PUT", `/v1/agents/${id}`, { body: { name: id, system_prompt: "p", fallback_models: [], ...spec } });
    assert.ok([200, 201].includes(response.status), `${response.status} ${await response.text()}`);
  }

  /** A new call of `agentId` with its relay open and set up as Twilio documents `setup`. */
  async function connected(agentId, setup = {}) {
    const created = await call(origin, "POST", "/v1/calls", { body: { agent_id: agentId } });
    const { id } = await json(created);
    const socket = await originRelay(origin, id, TENANT);
    socket.send({ type: "setup", sessionId: "VX1", accountSid: "AC1", parentCallSid: "", callSid: id, from: "+18005550100", to: "+18005550101", direction: "inbound", callStatus: "RINGING", customParameters: {}, ...setup });
    return { id, socket };
  }

  const turns = async (id) => (await json(await call(origin, "GET", `/v1/calls/${id}/turns`))).turns;
  const prompt = (text, lang = "en-US") => ({ type: "prompt", voicePrompt: text, lang, last: true });

  test("every model failing: the caller hears the apology as text … last:true, and the next prompt works", async () => {
    await emulator.script("e2e-busy", { fault: { kind: "throttle" } });
    await emulator.script("e2e-down", { fault: { kind: "unavailable" } });
    await agent("apologetic", { model: "e2e-busy", fallback_models: ["e2e-down"], fallback_utterance: "Sorry, say that again?" });
    const { id, socket } = await connected("apologetic");
    socket.send(prompt("Are you open?"));
    assert.equal(await socket.reply(), "Sorry, say that again?");
    assert.equal((await socket.next()).code, "model_unavailable", "a note for the edge's log");
    const [, failed] = await turns(id);
    assert.deepEqual([failed.text, failed.failure_reason], ["Sorry, say that again?", "unavailable"]);

    await emulator.script("e2e-busy", { reply: "Yes, until five." });
    socket.send(prompt("Are you open?"));
    assert.equal(await socket.reply(), "Yes, until five.");
    socket.close();

    // The API turn, in its own shape: the apology as tokens, then `error`.
    await emulator.script("e2e-busy", { fault: { kind: "throttle" } });
    const apiCall = (await json(await call(origin, "POST", "/v1/calls", { body: { agent_id: "apologetic" } }))).id;
    const events = parseSse(await (await call(origin, "POST", `/v1/calls/${apiCall}/turns`, { body: { text: "hi" } })).text());
    assert.equal(events.filter((e) => e.event === "token").map((e) => e.data.text).join(""), "Sorry, say that again?");
    assert.equal(events.at(-1).event, "error");
    assert.equal(events.at(-1).data.error.code, "model_unavailable");
  });

  test("a silent caller is reprompted, told goodbye, and the session ended with end", async () => {
    await agent("idle", { model: "e2e-idle", idle_reprompt_secs: 1, idle_reprompts: 1, idle_reprompt: "Still there?", idle_goodbye: "Goodbye." });
    const { id, socket } = await connected("idle");
    const started = Date.now();
    assert.deepEqual(await socket.next(3_000), { type: "text", token: "Still there?", last: true });
    assert.ok(Date.now() - started >= 900, "a second of silence first");
    assert.deepEqual(await socket.next(3_000), { type: "text", token: "Goodbye.", last: true });
    const end = await socket.next(3_000);
    assert.equal(end.type, "end");
    assert.deepEqual(JSON.parse(end.handoffData), { reason: "idle_timeout", callId: id });
    assert.equal(await socket.closed(), 1000);
    const state = await json(await call(origin, "GET", `/v1/calls/${id}`));
    assert.deepEqual([state.status, state.end_reason], ["ended", "idle_timeout"]);
  });

  test("an interrupt with durationUntilInterruptMs as a string cancels the Bedrock stream", async () => {
    await emulator.script("e2e-long", { ttft_ms: 5, inter_token_ms: 40, reply: "Life is a complex set of things. And it goes on and on and on." });
    await agent("long", { model: "e2e-long" });
    const { id, socket } = await connected("long");
    socket.send(prompt("Tell me about life"));
    assert.equal((await socket.next()).token, "Life is a complex set of things. ");
    socket.send({ type: "interrupt", utteranceUntilInterrupt: "Life is a complex set of", durationUntilInterruptMs: "460" });
    const deadline = Date.now() + 3_000;
    while ((await emulator.stats())["e2e-long"]?.cancelled !== 1) {
      assert.ok(Date.now() < deadline, "the emulator saw the stream cancelled");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await assert.rejects(socket.next(300), /no relay message/, "not refused as malformed: nothing comes back");
    const [, heard] = await turns(id);
    assert.deepEqual([heard.text, heard.interrupted], ["Life is a complex set of", true]);
  });

  test("a caller switching to a configured <Language> gets a language message, and answers in it", async () => {
    await emulator.script("e2e-lang", { reply: "Claro." });
    await agent("polyglot", {
      model: "e2e-lang",
      voice: { language: "en-US", languages: [{ code: "es-ES", tts_provider: "Google", voice: "es-ES-Neural2-B" }] },
    });
    const { id, socket } = await connected("polyglot");
    socket.send(prompt("Hola", "es-ES"));
    assert.deepEqual(await socket.next(), { type: "language", ttsLanguage: "es-ES", transcriptionLanguage: "es-ES" });
    assert.equal(await socket.reply(), "Claro.");
    const [request] = await (await fetch(`${emulator.url}/control/models/e2e-lang/requests`)).json();
    assert.match(request.system.at(-1).text, /BCP 47 tag es-ES/);
    assert.equal((await turns(id))[0].lang, "es-ES");
  });

  test("a guardrail intervening mid-reply ends the turn with its message, stored and counted", async () => {
    await emulator.script("e2e-guarded", {
      reply: "Here is how. First you take the",
      guardrail: { after_tokens: 3, message: " Sorry, I can't help with that." },
    });
    await agent("guarded", { model: "e2e-guarded", guardrail: { identifier: "gr1abc", version: "2" } });
    const { id, socket } = await connected("guarded");
    socket.send(prompt("How do I do the bad thing?"));
    assert.equal(await socket.reply(), "Here is how. Sorry, I can't help with that.");
    const stats = (await emulator.stats())["e2e-guarded"];
    assert.equal(stats.guardrail_interventions, 1);
    assert.deepEqual(stats.last_guardrail_config, { guardrailIdentifier: "gr1abc", guardrailVersion: "2", trace: "enabled", streamProcessingMode: "sync" });
    const [, reply] = await turns(id);
    assert.equal(reply.stop_reason, "guardrail_intervened");
    const metrics = await (await call(origin, "GET", "/metrics", { principal: null })).text();
    assert.match(metrics, /origin_guardrail_interventions_total\{model="e2e-guarded"\} 1/);
  });

  test("setup's caller name, forwarded-from and call type are stored with the call; info is let be", async () => {
    await agent("listener", { model: "e2e-listener" });
    const { id, socket } = await connected("listener", { callerName: "Ada Lovelace", forwardedFrom: "+18005550102", callType: "PSTN" });
    socket.send({ type: "info", name: "agentSpeaking", value: "off" });
    socket.send(prompt("hi"));
    assert.match(await socket.reply(), /^I heard 1 message/);
    const state = await json(await call(origin, "GET", `/v1/calls/${id}`));
    assert.deepEqual([state.caller_name, state.forwarded_from, state.call_type], ["Ada Lovelace", "+18005550102", "PSTN"]);
  });
});

describe("the same calls through the edge, as a carrier makes them", () => {
  const ACCOUNT = "AC" + "ca12e5".padEnd(32, "0");
  const TWILIO_TOKEN = "carriers-e2e-twilio-auth-token";
  const HS256_SECRET = "carriers-e2e-hs256-secret-0123456789abcdef";
  const EDGE_TENANT = "tenant-carriers";
  const ADMIN = hs256Jwt(HS256_SECRET, { iss: "https://issuer.carriers", aud: "carriers", sub: "admin", tenant_id: EDGE_TENANT, scope: "calls:read calls:write agents:admin" });
  let emulator;
  let origin;
  let edge;
  let numbers = 0;

  before(async () => {
    emulator = await startEmulator({ ttftMs: 5, interTokenMs: 1 });
    origin = await startOrigin({ BEDROCK_ENDPOINT_URL: emulator.url, BEDROCK_FIRST_TOKEN_TIMEOUT_MS: "300" });
    edge = await startWorkers({
      originUrl: origin.url,
      vars: {
        "auth-validator": {
          JWT_ISSUER: "https://issuer.carriers",
          JWT_AUDIENCE: "carriers",
          JWT_DEFAULT_PLAN: "pro",
          TWILIO_ACCOUNTS: JSON.stringify({ [ACCOUNT]: { tenant_id: EDGE_TENANT, plan: "pro" } }),
        },
      },
      secrets: { "auth-validator": { JWT_HS256_SECRET: HS256_SECRET, [`TWILIO_AUTH_TOKEN_${ACCOUNT}`]: TWILIO_TOKEN } },
    });
    // One address runs every test: lift the per-IP limit; one live call per tenant, so a line
    // freed by an ended session is observable.
    const limiter = await edge.worker("rate-limiter").getEnv();
    await limiter.RATE_LIMIT_KV.put("policies:global", JSON.stringify({ ip: { algorithm: "sliding_window", limit: 100000, window_ms: 60000 } }));
    await limiter.RATE_LIMIT_KV.put(`policies:tenant:${EDGE_TENANT}`, JSON.stringify({ "tenant-calls": { algorithm: "concurrency", limit: 1, lease_ttl_ms: 60000 } }));
  });
  after(async () => {
    await edge?.close();
    await origin?.stop();
    await emulator?.stop();
  });

  const twilioSignature = (url, params = {}) =>
    createHmac("sha1", TWILIO_TOKEN)
      .update(Object.keys(params).sort().reduce((acc, key) => acc + key + params[key], url))
      .digest("base64");

  /** An agent through the edge's API, answering a number of its own; returns the number. */
  async function agent(id, spec) {
    numbers += 1;
    const number = `+1800555${String(1000 + numbers)}`;
    const response = await fetch(`${edge.url}/api/v1/agents/${id}`, {
      method: "PUT",
      headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: JSON.stringify({ name: id, system_prompt: "p", fallback_models: [], phone_numbers: [number], ...spec }),
    });
    assert.ok([200, 201].includes(response.status), `${response.status} ${await response.text()}`);
    return number;
  }

  /** A carrier webhook: form-encoded, signed over the URL and the parameters. */
  function carrierPost(route, params) {
    const url = `${edge.url}${route}`;
    return fetch(url, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": twilioSignature(url, params) },
      body: new URLSearchParams(params).toString(),
    });
  }

  /** The carrier's incoming-call webhook for `number`; its TwiML, and the call's relay set up. */
  async function phoneCall(number) {
    const sid = "CA" + randomBytes(16).toString("hex");
    const params = { AccountSid: ACCOUNT, CallSid: sid, From: "+14155550100", To: number, CallStatus: "ringing", Direction: "inbound" };
    const twiml = await (await carrierPost("/voice/twilio/incoming", params)).text();
    assert.ok(twiml.includes("<ConversationRelay"), twiml);
    const relayUrl = `${edge.url.replace("http", "ws")}/voice/relay/${sid}`;
    const socket = await relaySocket(relayUrl, { "x-twilio-signature": twilioSignature(relayUrl) });
    const parameters = Object.fromEntries([...twiml.matchAll(/<Parameter name="([^"]+)" value="([^"]*)"\/>/g)].map((m) => [m[1], m[2]]));
    socket.send({ type: "setup", sessionId: `VX${sid.slice(2)}`, accountSid: ACCOUNT, callSid: sid, from: "+14155550100", to: number, direction: "inbound", callStatus: "RINGING", customParameters: parameters });
    return { sid, twiml, socket };
  }

  const state = async (sid) => json(await fetch(`${edge.url}/api/v1/calls/${sid}`, { headers: { authorization: `Bearer ${ADMIN}` } }));
  const hangUp = async (sid) => {
    const response = await carrierPost("/voice/twilio/status", { AccountSid: ACCOUNT, CallSid: sid, CallStatus: "completed" });
    assert.equal(response.status, 204);
  };
  const prompt = (text, lang = "en-US") => ({ type: "prompt", voicePrompt: text, lang, last: true });

  test("the TwiML carries the agent's settings and <Language> elements; a caller switching language is followed", async () => {
    await emulator.script("edge-lang", { reply: "Claro." });
    const number = await agent("edge-polyglot", {
      model: "edge-lang",
      greeting: "Hello & welcome",
      voice: { language: "en-US", interruptible: "speech", languages: [{ code: "es-ES", tts_provider: "Google", voice: "es-ES-Neural2-B" }] },
    });
    const { sid, twiml, socket } = await phoneCall(number);
    assert.match(twiml, /welcomeGreeting="Hello &amp; welcome"/);
    assert.match(twiml, /interruptible="speech"/);
    assert.match(twiml, /<Language code="es-ES"[^>]*ttsProvider="Google"[^>]*voice="es-ES-Neural2-B"/);
    socket.send(prompt("Hola", "es-ES"));
    assert.deepEqual(await socket.next(), { type: "language", ttsLanguage: "es-ES", transcriptionLanguage: "es-ES" });
    assert.equal(await socket.reply(), "Claro.");
    socket.close();
    await hangUp(sid);
  });

  test("every model failing: the caller hears the apology (the origin's note stays at the edge), and the next prompt works", async () => {
    await emulator.script("edge-down", { fault: { kind: "unavailable" } });
    const number = await agent("edge-apologetic", { model: "edge-down", fallback_utterance: "Sorry, say that again?" });
    const { sid, socket } = await phoneCall(number);
    socket.send(prompt("Are you open?"));
    assert.equal(await socket.reply(), "Sorry, say that again?");
    await emulator.script("edge-down", { reply: "Yes, until five." });
    socket.send(prompt("Are you open?"));
    assert.equal(await socket.reply(), "Yes, until five.", "no error note reached the carrier in between");
    socket.close();
    await hangUp(sid);
  });

  test("an interrupt with durationUntilInterruptMs as a string cancels the model's stream through the edge", async () => {
    await emulator.script("edge-long", { ttft_ms: 5, inter_token_ms: 40, reply: "Life is a complex set of things. And it goes on and on and on." });
    const number = await agent("edge-long", { model: "edge-long" });
    const { sid, socket } = await phoneCall(number);
    socket.send(prompt("Tell me about life"));
    assert.equal((await socket.next()).token, "Life is a complex set of things. ");
    socket.send({ type: "interrupt", utteranceUntilInterrupt: "Life is a complex set of", durationUntilInterruptMs: "460" });
    const deadline = Date.now() + 3_000;
    while ((await emulator.stats())["edge-long"]?.cancelled !== 1) {
      assert.ok(Date.now() < deadline, "the emulator saw the stream cancelled");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    socket.close();
    await hangUp(sid);
  });

  test("a guardrail's intervention reaches the caller as the end of the reply", async () => {
    await emulator.script("edge-guarded", { reply: "Here is how. First you take the", guardrail: { after_tokens: 3, message: " Sorry, I can't help with that." } });
    const number = await agent("edge-guarded", { model: "edge-guarded", guardrail: { identifier: "gr1abc", version: "2" } });
    const { sid, socket } = await phoneCall(number);
    socket.send(prompt("How do I do the bad thing?"));
    assert.equal(await socket.reply(), "Here is how. Sorry, I can't help with that.");
    socket.close();
    await hangUp(sid);
  });

  test("a silent caller is reprompted and told goodbye; the agent's end ends the edge's session and frees the line", async () => {
    const number = await agent("edge-idle", { model: "edge-idle", idle_reprompt_secs: 1, idle_reprompts: 1, idle_reprompt: "Still there?", idle_goodbye: "Goodbye." });
    const { sid, socket } = await phoneCall(number);
    assert.deepEqual(await socket.next(3_000), { type: "text", token: "Still there?", last: true });
    assert.deepEqual(await socket.next(3_000), { type: "text", token: "Goodbye.", last: true });
    const end = await socket.next(3_000);
    assert.equal(end.type, "end");
    assert.equal(JSON.parse(end.handoffData).reason, "idle_timeout");
    assert.equal(await socket.closed(), 1000, "the session closed the carrier's socket after the end");
    const ended = await state(sid);
    assert.deepEqual([ended.status, ended.end_reason], ["ended", "idle_timeout"]);
    // The tenant may hold one live call: the next one is answered, so the lease came back.
    const next = await phoneCall(number);
    next.socket.close();
    await hangUp(next.sid);
  });
});
