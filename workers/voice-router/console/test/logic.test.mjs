// The console's logic without a browser: the ConversationRelay side of the playground, the agent
// form's mapping to AgentSpec JSON and back, error routing to fields, routes and credentials, the
// event-stream parser of the live pages and what the Calls and Usage pages compute.
// The TypeScript modules are bundled by esbuild (as the build does) and imported.
//   node --test workers/voice-router/console/test/

import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import * as esbuild from "esbuild";

const src = path.join(import.meta.dirname, "..", "src");

/** One module of src/, bundled to ESM and imported. */
async function load(name) {
  const { outputFiles } = await esbuild.build({ entryPoints: [path.join(src, name)], bundle: true, format: "esm", write: false, target: "es2022" });
  return import(`data:text/javascript;base64,${Buffer.from(outputFiles[0].text).toString("base64")}`);
}

const relay = await load("relay.ts");
const fields = await load("agent_fields.ts");
const route = await load("route.ts");
const session = await load("session.ts");
const live = await load("live.ts");
const format = await load("format.ts");

test("relay: setup first; a prompt, streamed tokens, the turn closed by last:true, time to first token", () => {
  const c = new relay.Conversation();
  const setup = c.setup("call_1", "ava");
  assert.equal(setup.type, "setup");
  assert.equal(setup.callSid, "call_1");
  assert.deepEqual(setup.customParameters, { agentId: "ava", client: "console" });

  // The greeting arrives unasked: no time to first token.
  c.receive({ type: "text", token: "Hello.", last: false }, 5);
  c.receive({ type: "text", token: "", last: true }, 6);
  assert.deepEqual(c.entries, [{ kind: "agent", text: "Hello.", done: true, interrupted: false, heard: "Hello.", ttftMs: null }]);
  assert.equal(c.busy, false);

  assert.deepEqual(c.say("When are you open?", 100), [{ type: "prompt", voicePrompt: "When are you open?", lang: "en-US", last: true }]);
  assert.equal(c.busy, true);
  assert.equal(c.reply, null, "no reply before its first token");
  assert.equal(c.receive({ type: "text", token: "We open ", last: false }, 340), "We open ");
  c.receive({ type: "text", token: "at nine.", last: false }, 360);
  assert.equal(c.reply.text, "We open at nine.");
  assert.equal(c.reply.ttftMs, 240);
  c.receive({ type: "text", token: "", last: true }, 380);
  assert.equal(c.reply, null);
  assert.equal(c.busy, false);
  assert.equal(c.entries.at(-1).done, true);

  // A turn closed without a word (the model chain failed) ends the wait, and says so.
  c.say("Anyone there?", 500);
  c.receive({ type: "text", token: "", last: true }, 900);
  assert.equal(c.busy, false);
  assert.deepEqual(c.entries.at(-1), { kind: "event", text: "The agent gave no reply (its models did not answer)" });
});

test("relay: speaking over a reply sends interrupt (what was heard, for how long) before the prompt", () => {
  const c = new relay.Conversation();
  c.say("Tell me everything.", 0);
  c.receive({ type: "text", token: "Item one, ", last: false }, 200);
  c.receive({ type: "text", token: "item two, ", last: false }, 450);
  const sent = c.say("Stop.", 1000);
  assert.deepEqual(sent[0], { type: "interrupt", utteranceUntilInterrupt: "Item one, item two, ", durationUntilInterruptMs: 800 });
  assert.equal(sent[1].type, "prompt");
  const cut = c.entries[1];
  assert.equal(cut.interrupted, true);
  assert.equal(cut.done, true);
  // With speech on, what was heard is what was spoken, not what was shown.
  const d = new relay.Conversation();
  d.say("Go.", 0);
  d.receive({ type: "text", token: "One. Two. ", last: false }, 10);
  assert.equal(d.interrupt(20, "One. ").utteranceUntilInterrupt, "One. ");
  assert.equal(d.interrupt(30), null, "nothing plays: nothing to interrupt");
});

test("relay: dtmf, the agent's actions and the end of the call", () => {
  const c = new relay.Conversation();
  assert.deepEqual(c.dtmf("5"), { type: "dtmf", digit: "5" });
  c.receive({ type: "sendDigits", digits: "12w3" }, 0);
  c.receive({ type: "play", source: "https://example.com/hold.mp3" }, 0);
  c.receive({ type: "text", token: "Goodbye", last: false }, 0);
  c.receive({ type: "end", handoffData: JSON.stringify({ reason: "requested", callId: "call_1" }) }, 0);
  c.receive("not an object", 0);
  c.receive({ type: "unknown" }, 0);
  assert.equal(c.ended, true);
  assert.equal(c.busy, false);
  assert.deepEqual(
    c.entries.map((e) => e.kind + ":" + (e.text ?? e.digit)),
    ["dtmf:5", "event:The agent sends the digits 12w3", "event:The agent plays https://example.com/hold.mp3", "agent:Goodbye", "event:Call ended (requested)"],
  );
  c.closed(1000, "call ended");
  assert.equal(c.entries.length, 5, "a close after `end` adds nothing");
  const d = new relay.Conversation();
  d.say("Hi", 0);
  d.receive({ type: "text", token: "Hel", last: false }, 1);
  d.closed(1000, "call ended");
  assert.equal(d.ended, true);
  assert.equal(d.busy, false);
  assert.equal(d.entries.at(-1).text, "The relay closed (1000: call ended)");
  assert.equal(relay.KEYPAD.length, 12);
  const page = { href: "https://edge.example.com/console/" };
  assert.equal(relay.websocketUrl("https://edge.example.com/voice/relay/c?session_token=st_x", page), "wss://edge.example.com/voice/relay/c?session_token=st_x");
  assert.equal(relay.websocketUrl("http://127.0.0.1:8787/voice/relay/c", page), "ws://127.0.0.1:8787/voice/relay/c");
  assert.equal(relay.websocketUrl("wss://edge.example.com/voice/relay/c", page), "wss://edge.example.com/voice/relay/c");
});

test("agent form: an edit keeps the fields the form does not show; empty means absent, by kind", () => {
  const agent = {
    id: "ava",
    tenant_id: "t",
    version: 3,
    created_at_ms: 1,
    updated_at_ms: 2,
    name: "Ava",
    system_prompt: "Be brief.",
    greeting: "Hi.",
    fallback_models: [],
    inference: { max_tokens: 300, temperature: 0.2, stop_sequences: ["END"] },
    voice: { voice: "v", language: "en-US" },
    phone_numbers: ["+14155550100"],
    guardrails: { blocked_topics: ["x"] },
  };
  const values = fields.formOf(agent, agent.id);
  assert.equal(values.id, "ava");
  assert.equal(values["inference.temperature"], "0.2");
  assert.equal(values["fallback_models#default"], "", "an explicit empty chain is not the default");
  assert.equal(values["model"], "");
  const { spec, errors } = fields.specOf({ ...values, greeting: "  ", "inference.top_p": "0.9", phone_numbers: "+14155550100\n\n +14155550101 " }, agent);
  assert.deepEqual(errors, {});
  assert.equal(spec.id, undefined);
  assert.equal(spec.version, undefined);
  assert.equal(spec.greeting, undefined, "blank optional text is absent");
  assert.equal(spec.model, undefined);
  assert.deepEqual(spec.fallback_models, []);
  assert.deepEqual(spec.inference, { max_tokens: 300, temperature: 0.2, top_p: 0.9, stop_sequences: ["END"] });
  assert.deepEqual(spec.phone_numbers, ["+14155550100", "+14155550101"]);
  assert.deepEqual(spec.guardrails, { blocked_topics: ["x"] }, "a field the form does not know survives");

  const fresh = fields.formOf(null);
  assert.equal(fresh["fallback_models#default"], "1");
  const made = fields.specOf({ ...fresh, name: "", system_prompt: "", "inference.max_tokens": "12x" }, null);
  assert.equal(made.spec.name, "", "required text is sent empty, for the origin to name");
  assert.equal(made.spec.fallback_models, undefined, "the default chain is an absent field");
  assert.deepEqual(made.errors, { "inference.max_tokens": "Max tokens must be a number" });
});

test("agent form: JSON fields (tools) read and write values, refuse text that is not JSON", () => {
  const tool = { name: "lookup", description: "d", input_schema: { type: "object" }, url: "https://t.example/x" };
  const agent = { name: "A", system_prompt: "p", tools: [tool], builtin_tools: {}, filler_after_ms: 700 };
  const values = fields.formOf(agent, "a");
  assert.deepEqual(JSON.parse(values.tools), [tool]);
  assert.equal(values.builtin_tools, "", "an empty object shows as an empty box");
  assert.equal(values.filler_after_ms, "700");
  const kept = fields.specOf(values, agent);
  assert.deepEqual(kept.errors, {});
  assert.deepEqual(kept.spec.tools, [tool]);
  assert.equal(kept.spec.builtin_tools, undefined, "empty means absent (the origin's default)");
  const edited = fields.specOf({ ...values, builtin_tools: '{"end_call": {}}', tools: "" }, agent);
  assert.deepEqual(edited.spec.builtin_tools, { end_call: {} });
  assert.equal(edited.spec.tools, undefined);
  const broken = fields.specOf({ ...values, tools: "[{" }, agent);
  assert.match(broken.errors.tools, /^Tools \(JSON\) is not JSON: /);
});

test("agent form: errors land on the field they name, by field or by stable code", () => {
  assert.equal(fields.fieldOfError({ field: "inference.temperature", code: "invalid_agent" }), "inference.temperature");
  assert.equal(fields.fieldOfError({ field: null, code: "invalid_id" }), "id");
  assert.equal(fields.fieldOfError({ field: null, code: "phone_number_taken" }), "phone_numbers");
  assert.equal(fields.fieldOfError({ field: "not_in_the_form", code: "invalid_agent" }), null, "unknown fields go to the form's top");
  assert.equal(fields.fieldOfError({ field: null, code: "invalid_json" }), null);
  assert.equal(fields.fieldOfError({ field: "tools[0].url", code: "invalid_agent" }), "tools", "inside a JSON field: that field");
  assert.equal(fields.fieldOfError({ field: "builtin_tools.transfer_call.targets", code: "invalid_agent" }), "builtin_tools");
  assert.equal(fields.fieldOfError({ field: "toolsmith", code: "invalid_agent" }), null, "a prefix is not a path");
  assert.ok(fields.isAgentId("front-desk_2"));
  assert.ok(!fields.isAgentId("front desk"));
  assert.ok(!fields.isAgentId("x".repeat(65)));
  // Every field path is unique (it is the error's address).
  assert.equal(new Set(fields.FIELDS.map((f) => f.path)).size, fields.FIELDS.length);
});

test("routes and credentials", () => {
  assert.deepEqual(route.parseRoute(""), { page: "agents" });
  assert.deepEqual(route.parseRoute("#/agents/new"), { page: "agent", id: null });
  assert.deepEqual(route.parseRoute("#/agents/front%20desk"), { page: "agent", id: "front desk" });
  assert.deepEqual(route.parseRoute("#/playground/ava"), { page: "playground", agentId: "ava" });
  assert.deepEqual(route.parseRoute("#/nowhere"), { page: "agents" });
  assert.deepEqual(route.parseRoute("#/calls"), { page: "calls" });
  assert.deepEqual(route.parseRoute("#/calls/CA123"), { page: "call", id: "CA123" });
  assert.deepEqual(route.parseRoute("#/usage"), { page: "usage" });
  assert.equal(route.href.call("call_1"), "#/calls/call_1");
  assert.equal(route.titleOf({ page: "call", id: "c1" }), "Call c1");
  assert.deepEqual(route.NAV.map((item) => item.label), ["Agents", "Playground", "Calls", "Usage"]);
  assert.equal(route.href.agent("a b"), "#/agents/a%20b");
  assert.equal(session.credentialKind("ak_" + "x".repeat(16)), "api_key");
  assert.equal(session.credentialKind("ak_short"), null);
  assert.equal(session.credentialKind("aaa.bbb.ccc"), "jwt");
  assert.equal(session.credentialKind("Bearer aaa.bbb.ccc"), null);
  assert.deepEqual(session.jwtClaims(`x.${Buffer.from('{"tenant_id":"t1"}').toString("base64url")}.y`), { tenant_id: "t1" });
  assert.equal(session.jwtClaims("x.!!!.y"), null);
});

test("event streams: messages split across chunks and line endings, ids kept, comments skipped", () => {
  const parser = new live.SseParser();
  assert.deepEqual(parser.push(": live\n\nevent: call_started\nid: 0\nda"), []);
  assert.deepEqual(parser.push('ta: {"kind":"call_started"}\n\n'), [{ event: "call_started", id: "0", data: '{"kind":"call_started"}' }]);
  // CRLF and CR line ends, a CRLF split between chunks, two data lines joined by a newline.
  assert.deepEqual(parser.push("event: turn_finished\r\nid: 2\r"), []);
  assert.deepEqual(parser.push("\ndata: a\rdata: b\r\n\r\n"), [{ event: "turn_finished", id: "2", data: "a\nb" }]);
  // No event name: "message"; the id stays the last one set; no data: nothing dispatched.
  assert.deepEqual(parser.push("data:x\n\nevent: ignored\n\n"), [{ event: "message", id: "2", data: "x" }]);
  assert.equal(parser.lastEventId, "2");
  assert.deepEqual(parser.push("id: end\nevent: call_ended\ndata: {}\n\n").map((m) => m.id), ["end"]);
  assert.equal(parser.lastEventId, "end", "what a reconnect sends as Last-Event-ID");
  assert.deepEqual([0, 1, 2, 3, 5, 9].map(live.retryDelayMs), [250, 1000, 2000, 4000, 15000, 15000]);
});

test("calls and usage: durations, the latency series, usage days filled over the range", () => {
  assert.deepEqual([0, 850, 4200, 65_000, 3_725_000, -1].map(format.duration), ["0 ms", "850 ms", "4.2 s", "1 min 05 s", "1 h 02 min", "—"]);
  assert.equal(format.callLength({ started_at_ms: 1000, ended_at_ms: 4000 }, 9000), 3000);
  assert.equal(format.callLength({ started_at_ms: 1000 }, 9000), 8000, "a live call lasts until now");
  assert.equal(format.callLength({ started_at_ms: 9500 }, 9000), 0, "a start stamped by a clock a little ahead");
  const turns = [
    { seq: 1, role: "assistant", text: "Hello.", interrupted: false, created_at_ms: 1 },
    { seq: 2, role: "user", text: "Hi", interrupted: false, created_at_ms: 2 },
    { seq: 3, role: "assistant", text: "We open…", interrupted: true, model: "m", ttft_ms: 240, duration_ms: 900, created_at_ms: 3 },
    { seq: 4, role: "dtmf", text: "5", interrupted: false, created_at_ms: 4 },
    { seq: 5, role: "assistant", text: "Sorry.", interrupted: false, failure_reason: "throttled", ttft_ms: 80, created_at_ms: 5 },
  ];
  // The greeting has no model timing: it is not a point.
  assert.deepEqual(format.latencySeries(turns), { seq: [3, 5], ttft: [240, 80], duration: [900, 80] });
  assert.deepEqual(turns.map(format.speaker), ["Agent", "Caller", "Agent", "Key press", "Agent"]);
  assert.deepEqual(format.daysBetween("2024-02-27", "2024-03-01"), ["2024-02-27", "2024-02-28", "2024-02-29", "2024-03-01"]);
  assert.deepEqual(format.daysBetween("2024-03-02", "2024-03-01"), []);
  const day = (d, calls) => ({ day: d, calls, turns: 0, input_tokens: 0, output_tokens: 0, minutes: calls * 2, tool_calls: 0 });
  const filled = format.usageDays({ tenant_id: "t", from: "2026-11-19", to: "2026-11-21", days: [day("2026-11-20", 3)], totals: day("total", 3) });
  assert.deepEqual(filled.map((d) => [d.day, d.calls, d.minutes]), [["2026-11-19", 0, 0], ["2026-11-20", 3, 6], ["2026-11-21", 0, 0]]);
});
