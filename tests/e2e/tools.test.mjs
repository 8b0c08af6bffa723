// The agent acts, end to end: the four Workers in workerd, a development origin (tools may be on
// loopback), the Bedrock emulator's tool use behind the real AWS SDK, PostgreSQL/Redis when the
// test command started them, and a tenant's tool server that checks X-Aybiza-Signature with the
// documented snippet (docs/verify/verify-signature.mjs; the Python one checks a request too).
// A phone call whose agent calls a slow tool (the caller hears the filler) and then transfers
// the caller — the carrier's <Connect action> callback is answered <Dial>, its whisper <Say>;
// an agent that ends a call itself (its lease is freed); an API client ending a call with
// handoff data; a tool timing out; SSRF refusals, at PUT through the edge and at call time on a
// production origin.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";
import {
  json,
  originRelay,
  principalOf,
  signedCall,
  startEmulator,
  startOrigin,
  startWorkers,
  twilioSignature,
  wsClient,
} from "./harness.mjs";
import { verifyAybizaSignature } from "../../docs/verify/verify-signature.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const ACCOUNT = "AC" + "7001".padEnd(32, "0");
const TWILIO_TOKEN = "e2e-tools-twilio-auth-token";
const HS256_SECRET = "e2e-tools-hs256-secret-0123456789abcdef";
const ISSUER = "https://issuer.tools.e2e";
const AUDIENCE = "aybiza-tools-e2e";
const TENANT = "tenant-tools";
const NUMBER = "+18005550177";
const MODEL = "e2e-tools";
const NEW_YORK = JSON.stringify({ country: "US", regionCode: "NY", continent: "NA", latitude: "40.71", longitude: "-74.01", colo: "EWR" });

function jwt(claims) {
  const now = Math.floor(Date.now() / 1000);
  const part = (object) => Buffer.from(JSON.stringify(object)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part({ iss: ISSUER, aud: AUDIENCE, iat: now, exp: now + 600, ...claims })}`;
  return `${signed}.${createHmac("sha256", HS256_SECRET).update(signed).digest("base64url")}`;
}
const ADMIN = jwt({ sub: "admin", tenant_id: TENANT, scope: "calls:read calls:write agents:admin" });
const CALLS_ONLY = jwt({ sub: "caller", tenant_id: TENANT, scope: "calls:read calls:write" });
const callSid = () => "CA" + randomBytes(16).toString("hex");

let emulator, origin, edge, tools, secret;

/**
 * The tenant's tool server: `POST /lookup` answers after `delayMs`, `/hang` never answers in
 * time. Every request is checked with the documented Node snippet against the tenant's secret.
 */
function startToolServer() {
  const received = [];
  const server = http.createServer((request, response) => {
    const chunks = [];
    request.on("data", (chunk) => chunks.push(chunk));
    request.on("end", () => {
      const raw = Buffer.concat(chunks);
      const header = request.headers["x-aybiza-signature"];
      const record = { path: request.url, header, raw, body: JSON.parse(raw.toString()), at: Date.now(), verified: verifyAybizaSignature(header, raw, secret) };
      received.push(record);
      if (!record.verified) {
        response.writeHead(401, { "content-type": "application/json" }).end('{"error":"bad signature"}');
        return;
      }
      const delay = request.url === "/hang" ? 5_000 : 700;
      setTimeout(() => {
        if (response.destroyed) return;
        response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ order: record.body.input.id, status: "shipped", eta: "tomorrow" }));
      }, delay);
    });
  });
  server.listen(0, "127.0.0.1");
  return {
    received,
    url: async (route) => {
      if (!server.listening) await new Promise((resolve) => server.once("listening", resolve));
      return `http://127.0.0.1:${server.address().port}${route}`;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

before(async () => {
  emulator = await startEmulator({ ttftMs: 20, interTokenMs: 2 });
  origin = await startOrigin({ BEDROCK_ENDPOINT_URL: emulator.url, BEDROCK_DEFAULT_MODELS: MODEL, ORIGIN_ENVIRONMENT: "development" });
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
        SESSION_TOKEN_SECRET: "e2e-tools-session-token-secret-0123456789",
        [`TWILIO_AUTH_TOKEN_${ACCOUNT}`]: TWILIO_TOKEN,
      },
    },
  });
  // One live call per tenant, so a freed lease shows; no per-IP limit in the way.
  const limiterEnv = await edge.worker("rate-limiter").getEnv();
  await limiterEnv.RATE_LIMIT_KV.put("policies:global", JSON.stringify({ ip: { algorithm: "sliding_window", limit: 100000, window_ms: 60000 } }));
  await limiterEnv.RATE_LIMIT_KV.put(`policies:tenant:${TENANT}`, JSON.stringify({ "tenant-calls": { algorithm: "concurrency", limit: 1, lease_ttl_ms: 60000 } }));

  // The first read of the signing secret creates it and is the only one to show it.
  const created = await api("GET", "/api/v1/signing-secret");
  const body = await json(created);
  assert.equal(created.status, 201, JSON.stringify(body));
  assert.equal(created.headers.get("cache-control"), "no-store");
  secret = body.secret;
  const again = await json(await api("GET", "/api/v1/signing-secret"));
  assert.equal(again.secret, undefined, "shown once");
  assert.equal(again.hint, body.hint);

  tools = startToolServer();
  await emulator.script(MODEL, {
    ttft_ms: 20,
    inter_token_ms: 2,
    reply: "How else can I help?",
    tool_use: [
      { when: "my order", rounds: [[{ name: "lookup_order", input: { id: "A-42" } }]], reply: "Your order A-42 ships tomorrow." },
      { when: "slow order", rounds: [[{ name: "stuck_lookup", input: { id: "B-7" } }]], reply: "unused", error_reply: "Sorry, I could not check that just now." },
      { when: "a person", rounds: [[{ name: "transfer_call", input: { target: "sales", summary: "Caller asks about order A-42." } }]], reply: "unused" },
      { when: "goodbye", rounds: [[{ name: "end_call", input: { reason: "done" } }]], reply: "unused" },
    ],
  });
  const agent = await api("PUT", "/api/v1/agents/ava-tools", {
    body: {
      name: "Ava",
      system_prompt: "You look up orders.",
      model: MODEL,
      fallback_models: [],
      phone_numbers: [NUMBER],
      filler_after_ms: 300,
      tools: [
        { name: "lookup_order", description: "Looks an order up.", input_schema: { type: "object", properties: { id: { type: "string" } }, required: ["id"] }, url: await tools.url("/lookup") },
        { name: "stuck_lookup", description: "Looks an order up slowly.", input_schema: { type: "object" }, url: await tools.url("/hang"), timeout_ms: 400 },
      ],
      builtin_tools: {
        end_call: { goodbye: "Thanks for calling Ava. Goodbye." },
        transfer_call: { targets: [{ name: "sales", to: "+14155550123", description: "Orders and sales" }], caller_id: "+18005550100", whisper: true },
      },
    },
  });
  assert.ok([200, 201].includes(agent.status), `agent: ${agent.status} ${await agent.text()}`);
});

after(async () => {
  await edge?.close();
  await origin?.stop();
  await emulator?.stop();
  await tools?.close();
});

function api(method, pathAndQuery, { body, token = ADMIN } = {}) {
  const text = body === undefined ? undefined : JSON.stringify(body);
  return fetch(`${edge.url}${pathAndQuery}`, {
    method,
    headers: { authorization: `Bearer ${token}`, "mf-cf-blob": NEW_YORK, ...(text === undefined ? {} : { "content-type": "application/json" }) },
    body: text,
  });
}

/** A carrier webhook to `url` (the edge's, as TwiML named it): form-encoded and signed. */
function carrierPost(url, params, { signature } = {}) {
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signature ?? twilioSignature(TWILIO_TOKEN, url, params), "mf-cf-blob": NEW_YORK },
    body: new URLSearchParams(params).toString(),
  });
}

const incoming = (sid) => carrierPost(`${edge.url}/voice/twilio/incoming`, { AccountSid: ACCOUNT, CallSid: sid, From: "+14155550100", To: NUMBER, CallStatus: "ringing", Direction: "inbound" });

async function connected(sid) {
  const url = `${edge.url.replace("http", "ws")}/voice/relay/${sid}`;
  const socket = await wsClient(url, { "x-twilio-signature": twilioSignature(TWILIO_TOKEN, url) });
  socket.send({ type: "setup", sessionId: `VX${sid.slice(2)}`, callSid: sid, accountSid: ACCOUNT, from: "+14155550100", to: NUMBER, direction: "inbound", customParameters: { agent_id: "ava-tools", greeting: "carrier" } });
  return socket;
}

const prompt = (text) => ({ type: "prompt", voicePrompt: text, lang: "en-US", last: true });

async function until(predicate, message, ms = 5_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await predicate()) return;
    assert.ok(Date.now() < deadline, message);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

/** The call as an API client sees it. */
const state = async (id) => json(await api("GET", `/api/v1/calls/${id}`));

describe("a phone call where the agent acts", () => {
  test("a slow signed tool (the caller hears the filler), then a transfer dialled by the action callback", async () => {
    const sid = callSid();
    const answer = await incoming(sid);
    const twiml = await answer.text();
    assert.equal(answer.status, 200, twiml);
    const action = `${edge.url}/voice/twilio/action?call_id=${sid}`;
    assert.ok(twiml.includes(`<Connect action="${action}"><ConversationRelay url=`), twiml);

    const socket = await connected(sid);
    const asked = Date.now();
    socket.send(prompt("Where is my order?"));
    // The tool takes 700 ms; after 300 ms of silence the caller hears the filler.
    const filler = await socket.next();
    assert.deepEqual(filler, { type: "text", token: "One moment, please. ", last: false });
    assert.ok(Date.now() - asked < 700, "the filler came before the tool answered");
    assert.equal((await socket.reply()).join(""), "Your order A-42 ships tomorrow.");
    const call = tools.received.at(-1);
    assert.equal(call.path, "/lookup");
    assert.equal(call.verified, true, "the documented Node snippet accepts the signature");
    assert.deepEqual(
      [call.body.call_id, call.body.agent_id, call.body.tool, call.body.input],
      [sid, "ava-tools", "lookup_order", { id: "A-42" }],
    );
    assert.match(call.header, /^t=\d+,v1=[0-9a-f]{64}$/);
    // The documented Python snippet accepts the same request, and refuses it with another secret.
    const python = (key) =>
      execFileSync("python3", ["-c", "import sys; sys.path.insert(0, sys.argv[1]); from verify_signature import verify_aybiza_signature as v; print(v(sys.argv[2], sys.stdin.buffer.read(), sys.argv[3]))", path.join(root, "docs/verify"), call.header, key], { input: call.raw })
        .toString()
        .trim();
    assert.equal(python(secret), "True");
    assert.equal(python("whsec_not-the-secret"), "False");
    assert.equal(verifyAybizaSignature(call.header, call.raw, secret, { now: Math.floor(call.at / 1000) + 301 }), false, "the tolerance holds");
    const stats = (await emulator.stats())[MODEL];
    assert.equal(stats.tool_result_mismatches, 0);
    assert.ok(stats.tool_results >= 1);

    // A transfer: the announcement, the end of the turn, then `end` with the handoff.
    socket.send(prompt("Can I talk to a person?"));
    assert.equal((await socket.reply()).join(""), "Please hold while I transfer your call.");
    const end = await socket.next();
    assert.equal(end.type, "end");
    const handoff = JSON.parse(end.handoffData);
    assert.deepEqual(handoff, { reason: "transfer", callId: sid, target: "+14155550123", summary: "Caller asks about order A-42.", callerId: "+18005550100", whisper: true });
    await until(() => socket.closed() !== null, "the session closed the carrier's socket");
    const ended = await state(sid);
    assert.deepEqual([ended.status, ended.end_reason], ["ended", "transferred"]);

    // The carrier's <Connect action> callback: <Dial> to the target, whispering the summary.
    const params = { AccountSid: ACCOUNT, CallSid: sid, CallStatus: "in-progress", SessionId: `VX${sid.slice(2)}`, SessionStatus: "ended", SessionDuration: "12", HandoffData: end.handoffData };
    const dial = await carrierPost(action, params);
    const dialTwiml = await dial.text();
    assert.equal(dial.status, 200, dialTwiml);
    assert.match(dial.headers.get("content-type"), /^text\/xml/);
    const whisperUrl = `${edge.url}/voice/twilio/whisper?text=Caller+asks+about+order+A-42.`;
    assert.equal(
      dialTwiml,
      `<?xml version="1.0" encoding="UTF-8"?><Response><Dial callerId="+18005550100"><Number url="${whisperUrl}">+14155550123</Number></Dial></Response>`,
    );
    // The carrier fetches the whisper for the person answering.
    const whisper = await carrierPost(whisperUrl, {});
    assert.equal(await whisper.text(), `<?xml version="1.0" encoding="UTF-8"?><Response><Say>Caller asks about order A-42.</Say></Response>`);
    // Forged or altered callbacks are refused.
    assert.equal((await carrierPost(action, { ...params, HandoffData: JSON.stringify({ ...handoff, target: "+19005550199" }) }, { signature: twilioSignature(TWILIO_TOKEN, action, params) })).status, 401);
    assert.equal((await carrierPost(whisperUrl.replace("A-42", "X"), {}, { signature: twilioSignature(TWILIO_TOKEN, whisperUrl, {}) })).status, 401);
    // A session that ended any other way hangs up.
    const plain = await carrierPost(action, { ...params, HandoffData: JSON.stringify({ reason: "agent_ended", callId: sid }) });
    assert.equal(await plain.text(), `<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>`);
    // A call this edge never handled is not transferred anywhere.
    const stranger = await carrierPost(action, { ...params, CallSid: callSid() });
    assert.match(await stranger.text(), /<Hangup\/>/);

    // The transfer freed the tenant's only line.
    const next = callSid();
    assert.ok((await (await incoming(next)).text()).includes("<ConversationRelay"), "the lease was released");
    assert.equal((await carrierPost(`${edge.url}/voice/twilio/status`, { AccountSid: ACCOUNT, CallSid: next, CallStatus: "completed" })).status, 204);
  });

  test("an agent that ends the call itself: the goodbye, end, the session over and its lease freed", async () => {
    const sid = callSid();
    assert.ok((await (await incoming(sid)).text()).includes("<ConversationRelay"));
    const socket = await connected(sid);
    socket.send(prompt("That's all, goodbye"));
    assert.equal((await socket.reply()).join(""), "Thanks for calling Ava. Goodbye.");
    const end = await socket.next();
    assert.deepEqual(JSON.parse(end.handoffData), { reason: "agent_ended", callId: sid });
    await until(() => socket.closed() !== null, "the session closed the carrier's socket");
    const ended = await state(sid);
    assert.deepEqual([ended.status, ended.end_reason], ["ended", "agent_ended"]);
    const next = callSid();
    assert.ok((await (await incoming(next)).text()).includes("<ConversationRelay"), "the lease was released");
    assert.equal((await carrierPost(`${edge.url}/voice/twilio/status`, { AccountSid: ACCOUNT, CallSid: next, CallStatus: "completed" })).status, 204);
  });

  test("a tool timing out: the model is told, apologises, and the call goes on", async () => {
    const sid = callSid();
    assert.ok((await (await incoming(sid)).text()).includes("<ConversationRelay"));
    const socket = await connected(sid);
    const asked = Date.now();
    socket.send(prompt("Check my slow order"));
    const tokens = await socket.reply();
    assert.equal(tokens.join(""), "One moment, please. Sorry, I could not check that just now.");
    assert.ok(Date.now() - asked < 2_500, "the 400 ms deadline held");
    socket.send(prompt("Where is my order?"));
    assert.match((await socket.reply()).join(""), /ships tomorrow/, "the call goes on");
    socket.close();
    const stored = await json(await signedCall(origin, "GET", `/v1/calls/${sid}/turns`, { principal: principalOf(TENANT) }));
    const timedOut = stored.turns.find((turn) => turn.tool_calls?.[0]?.name === "stuck_lookup");
    assert.deepEqual([timedOut.tool_calls[0].outcome, timedOut.tool_calls[0].error], ["timeout", "the tool did not answer within 400 ms"]);
    assert.equal((await carrierPost(`${edge.url}/voice/twilio/status`, { AccountSid: ACCOUNT, CallSid: sid, CallStatus: "completed" })).status, 204);
  });
});

describe("ending a call through the API, with handoff data", () => {
  test("the client's reason and handoff data reach the relay's end; bad bodies are 400", async () => {
    const created = await json(await api("POST", "/api/v1/calls", { body: { agent_id: "ava-tools" } }));
    const socket = await wsClient(created.relay_url.replace("http", "ws"));
    socket.send({ type: "setup", callSid: created.call_id, customParameters: {} });
    for (const bad of [{ reason: "" }, { handoff_data: "x".repeat(5_000) }, { reson: "typo" }]) {
      const refused = await api("POST", `/api/v1/calls/${created.call_id}/end`, { body: bad });
      assert.equal(refused.status, 400, JSON.stringify(bad));
      assert.equal((await json(refused)).error.code, "invalid_request");
    }
    const ended = await api("POST", `/api/v1/calls/${created.call_id}/end`, { body: { reason: "transfer", handoff_data: { target: "+14155550124", summary: "VIP", queue: "gold" } } });
    assert.equal(ended.status, 200, await ended.clone().text());
    assert.equal((await json(ended)).end_reason, "requested");
    let end;
    do end = await socket.next(); while (end.type !== "end");
    assert.deepEqual(JSON.parse(end.handoffData), {
      reason: "transfer",
      callId: created.call_id,
      target: "+14155550124",
      summary: "VIP",
      data: { target: "+14155550124", summary: "VIP", queue: "gold" },
    });
  });
});

describe("the signing secret through the edge", () => {
  test("needs agents:admin; rotation shows the new value once and keeps the old one signing", async () => {
    const forbidden = await api("GET", "/api/v1/signing-secret", { token: CALLS_ONLY });
    assert.equal(forbidden.status, 403);
    const rotated = await api("POST", "/api/v1/signing-secret/rotate", { body: { previous_valid_for_secs: 600 } });
    const body = await json(rotated);
    assert.equal(rotated.status, 200, JSON.stringify(body));
    assert.match(body.secret, /^whsec_[A-Za-z0-9_-]{43}$/);
    assert.notEqual(body.secret, secret);
    assert.ok(body.previous_expires_at_ms > Date.now());
    const before = tools.received.length;
    const created = await json(await api("POST", "/api/v1/calls", { body: { agent_id: "ava-tools" } }));
    const turn = await api("POST", `/api/v1/calls/${created.call_id}/turns`, { body: { text: "Where is my order?" } });
    assert.equal(turn.status, 200);
    await turn.text();
    const call = tools.received[before];
    assert.equal(call.header.split(",").filter((part) => part.startsWith("v1=")).length, 2, "both secrets sign during the grace");
    assert.ok(verifyAybizaSignature(call.header, call.raw, body.secret) && verifyAybizaSignature(call.header, call.raw, secret));
    secret = body.secret;
    assert.equal((await api("POST", `/api/v1/calls/${created.call_id}/end`)).status, 200);
    const wrong = await api("POST", "/api/v1/signing-secret/rotate", { body: { previous_valid_for_secs: -1 } });
    assert.equal(wrong.status, 400);
  });
});

describe("SSRF", () => {
  test("internal tool URLs are refused at PUT through the edge, and names resolving inward at call time", async () => {
    for (const url of ["https://169.254.169.254/latest/meta-data", "https://10.0.0.5/orders", "http://tools.example.com/orders"]) {
      const refused = await api("PUT", "/api/v1/agents/ssrf", {
        body: { name: "x", system_prompt: "p", tools: [{ name: "t", description: "d", input_schema: { type: "object" }, url }] },
      });
      const body = await json(refused);
      assert.equal(refused.status, 400, url);
      assert.equal(body.error.field, "tools[0].url", JSON.stringify(body));
    }

    // A production origin (the default): a name resolving to loopback is refused when called.
    const production = await startOrigin({ BEDROCK_ENDPOINT_URL: emulator.url, BEDROCK_DEFAULT_MODELS: MODEL });
    try {
      const principal = principalOf("tenant-ssrf");
      const port = new URL(await tools.url("/lookup")).port;
      const put = await signedCall(production, "PUT", "/v1/agents/inward", {
        principal,
        body: { name: "x", system_prompt: "p", model: MODEL, fallback_models: [], tools: [{ name: "lookup_order", description: "d", input_schema: { type: "object" }, url: `https://localhost:${port}/lookup` }] },
      });
      assert.equal(put.status, 201, await put.text());
      const local = await signedCall(production, "PUT", "/v1/agents/plain", {
        principal,
        body: { name: "x", system_prompt: "p", tools: [{ name: "lookup_order", description: "d", input_schema: { type: "object" }, url: `http://127.0.0.1:${port}/lookup` }] },
      });
      assert.equal(local.status, 400, "http to loopback only on a development origin");
      const { id } = await json(await signedCall(production, "POST", "/v1/calls", { principal, body: { agent_id: "inward" } }));
      const socket = await originRelay(production, id, principal);
      socket.send({ type: "setup", callSid: id, customParameters: {} });
      const before = tools.received.length;
      socket.send(prompt("Where is my order?"));
      assert.equal(await socket.reply(), "Your order A-42 ships tomorrow.");
      assert.equal(tools.received.length, before, "nothing reached the tool server");
      const turns = (await json(await signedCall(production, "GET", `/v1/calls/${id}/turns`, { principal }))).turns;
      assert.deepEqual([turns[1].tool_calls[0].outcome, turns[1].tool_calls[0].error], ["refused", "the tool's address may not be reached from here"]);
      const metrics = await (await signedCall(production, "GET", "/metrics")).text();
      assert.match(metrics, /origin_tool_calls_total\{kind="tenant",outcome="refused"\} 1/);
      socket.close();
    } finally {
      await production.stop();
    }
  });
});

test("the documentation carries the snippets the tests run", () => {
  const docs = readFileSync(path.join(root, "docs/configuration.md"), "utf8");
  for (const file of ["docs/verify/verify-signature.mjs", "docs/verify/verify_signature.py"]) {
    const code = readFileSync(path.join(root, file), "utf8").trim();
    assert.ok(docs.includes(code), `docs/configuration.md shows ${file} as it is`);
  }
});
