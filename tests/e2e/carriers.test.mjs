// What a live carrier sends and today's Bedrock does, end to end against the origin binary
// (signed as the edge signs), the Bedrock emulator binary behind the real AWS SDK, and
// PostgreSQL/Redis when the test command started them: every model failing, a silent caller,
// the interrupt's string form, a language switch, a guardrail's intervention, and the caller
// details of `setup`. The same calls through workerd follow once voice-router renders
// `shared::twiml::connect_agent` (phase 2 of issue 13).

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { json, originRelay, parseSse, principalOf, signedCall, startEmulator, startOrigin } from "./harness.mjs";

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
