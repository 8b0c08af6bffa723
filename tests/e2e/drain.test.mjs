// A rolling restart under a live phone call: all four Workers in workerd, origin processes
// sharing one database behind two local TCP proxies (two load-balancer addresses: the call's
// region, and every other region), the Bedrock emulator behind them. As an ECS rolling deploy
// does, each old origin's replacement starts and takes the proxy first, then the old one gets
// SIGTERM in the middle of a reply: the reply it is streaming finishes, new calls get 503
// `draining`, the relay socket closes with 1012, and the call's `CallSession` moves to its next
// target, so the caller's next turn is answered by another process. The caller's socket never
// closes and no turn is lost or cut.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { edgeHeaders, geoRegions, json, principalOf, startEmulator, startOrigin, startWorkers, tcpProxy, twilioSignature, wsClient } from "./harness.mjs";

const ACCOUNT = "AC" + "d7a1".padEnd(32, "0");
const TWILIO_TOKEN = "e2e-drain-twilio-auth-token-not-secret";
const TENANT = "tenant-drain";
const NUMBER = "+18005550177";
const MODEL = "e2e-drain";
const REPLY = "One. Two. Three. Four. Five.";
// A caller in New York: us-east-1 by the seed's region-code map.
const NEW_YORK = JSON.stringify({ country: "US", regionCode: "NY", continent: "NA", latitude: "40.71", longitude: "-74.01", colo: "EWR" });
const PRINCIPAL = principalOf(TENANT);

let emulator, edge, database, proxyA, proxyB;
const origins = [];


async function origin() {
  const started = await startOrigin(database);
  origins.push(started);
  return started;
}

/** Both origins share one database, as a region's tasks share Aurora. */
function sharedDatabase() {
  const id = `drain_${randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const env = { BEDROCK_DEFAULT_MODELS: MODEL, SHUTDOWN_GRACE_SECS: "10" };
  if (process.env.DATABASE_URL?.startsWith("postgres")) env.DATABASE_SCHEMA = id;
  else env.DATABASE_URL = `sqlite://${path.join(mkdtempSync(path.join(os.tmpdir(), "aybiza-drain-")), "calls.sqlite3")}?mode=rwc`;
  if (process.env.REDIS_URL) env.REDIS_KEY_PREFIX = `${id}:`;
  return env;
}

/** A signed request straight to an origin, as the edge sends it. */
function signed(origin, method, pathAndQuery, body) {
  const text = body === undefined ? "" : JSON.stringify(body);
  return fetch(`${origin.url}${pathAndQuery}`, {
    method,
    headers: { ...edgeHeaders({ method, pathAndQuery, body: text, principal: PRINCIPAL }), ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : text,
  });
}

function webhook(route, params) {
  const url = `${edge.url}${route}`;
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": twilioSignature(TWILIO_TOKEN, url, params), "mf-cf-blob": NEW_YORK },
    body: new URLSearchParams(params).toString(),
  });
}

before(async () => {
  emulator = await startEmulator({ ttftMs: 20, interTokenMs: 2 });
  await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 200, reply: REPLY });
  database = { ...sharedDatabase(), BEDROCK_ENDPOINT_URL: emulator.url };
  proxyA = await tcpProxy((await origin()).url);
  proxyB = await tcpProxy((await origin()).url);
  // The call's region (us-east-1) is behind proxy A; every other region behind proxy B, so the
  // call's next target after A is B, and after B another region behind B.
  edge = await startWorkers({
    originUrl: proxyA.url,
    vars: {
      "geo-router": { GEO_REGIONS: geoRegions((region) => (region === "us-east-1" ? proxyA.url : proxyB.url)) },
      "auth-validator": {
        JWT_ISSUER: "https://issuer.drain",
        JWT_AUDIENCE: "aybiza-drain",
        JWT_DEFAULT_PLAN: "pro",
        TWILIO_ACCOUNTS: JSON.stringify({ [ACCOUNT]: { tenant_id: TENANT, plan: "pro" } }),
      },
    },
    secrets: {
      "auth-validator": {
        JWT_HS256_SECRET: "e2e-drain-hs256-secret-0123456789abcdef",
        SESSION_TOKEN_SECRET: "e2e-drain-session-token-secret-0123456789",
        [`TWILIO_AUTH_TOKEN_${ACCOUNT}`]: TWILIO_TOKEN,
      },
    },
  });
  const limiterEnv = await edge.worker("rate-limiter").getEnv();
  await limiterEnv.RATE_LIMIT_KV.put("policies:global", JSON.stringify({ ip: { algorithm: "sliding_window", limit: 100000, window_ms: 60000 } }));
  const agent = await signed(proxyA, "PUT", "/v1/agents/drain", {
    name: "Counter",
    system_prompt: "You count.",
    greeting: "Hello.",
    model: MODEL,
    fallback_models: [],
    phone_numbers: [NUMBER],
  });
  assert.ok([200, 201].includes(agent.status), `agent: ${agent.status} ${await agent.text()}`);
});

after(async () => {
  await edge?.close();
  for (const started of origins) await started.stop();
  await proxyA?.close();
  await proxyB?.close();
  await emulator?.stop();
});

/** Sends a prompt; resolves once its first token arrived, with the rest of the reply to come. */
async function promptStarted(socket, text) {
  socket.send({ type: "prompt", voicePrompt: text, lang: "en-US", last: true });
  for (;;) {
    const message = await socket.next();
    if (message.type !== "text") continue;
    assert.ok(!message.last, "the reply is still streaming");
    return message.token;
  }
}

/**
 * Replaces the origin behind `proxy` as a rolling deploy does: the new process starts and takes
 * new connections, then the old one gets SIGTERM in the middle of a reply; checks it drains.
 */
async function rollMidReply(socket, proxy, old, prompt) {
  const replacement = await origin();
  const first = await promptStarted(socket, prompt);
  proxy.switchTo(replacement.url);
  const exited = old.stop("SIGTERM");
  // While its live turn streams, the draining origin still answers, but takes no new call.
  let created;
  for (let i = 0; i < 40; i += 1) {
    created = await signed(old, "POST", "/v1/calls", { agent_id: "drain" });
    if (created.status === 503) break;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  assert.equal(created.status, 503);
  assert.equal(created.headers.get("retry-after"), "2");
  assert.equal((await json(created)).error.code, "draining");
  const rest = await socket.reply();
  assert.equal(first + rest.join(""), REPLY, "the live turn finished, not cut");
  assert.equal(await exited, 0, "the origin exited cleanly once drained");
}

async function storedTurns(origin, id) {
  return (await json(await signed(origin, "GET", `/v1/calls/${id}/turns`))).turns;
}

describe("a rolling restart of two origin processes under a live call", () => {
  test("each origin drains mid-reply; the call moves on and no turn is lost", async () => {
    const sid = "CA" + randomBytes(16).toString("hex");
    const twiml = await (await webhook("/voice/twilio/incoming", { AccountSid: ACCOUNT, CallSid: sid, From: "+14155550100", To: NUMBER, CallStatus: "ringing", Direction: "inbound" })).text();
    assert.ok(twiml.includes("<ConversationRelay"), twiml);
    const url = `${edge.url.replace("http", "ws")}/voice/relay/${sid}`;
    const socket = await wsClient(url, { "x-twilio-signature": twilioSignature(TWILIO_TOKEN, url, {}) });
    socket.send({ type: "setup", sessionId: `VX${sid.slice(2)}`, callSid: sid, accountSid: ACCOUNT, from: "+14155550100", to: NUMBER, direction: "inbound", customParameters: { agent_id: "drain", greeting: "carrier" } });

    // The origin behind A is replaced: its reply finishes, then the call continues behind B.
    const [firstA, firstB] = origins;
    await rollMidReply(socket, proxyA, firstA, "Count for me.");
    socket.send({ type: "prompt", voicePrompt: "Again, please.", lang: "en-US", last: true });
    assert.equal((await socket.reply()).join(""), REPLY);
    assert.equal(socket.closed(), null, "the caller's socket stayed up");

    // Then the origin behind B: the call moves on again, to a process started meanwhile.
    await rollMidReply(socket, proxyB, firstB, "Once more.");
    socket.send({ type: "prompt", voicePrompt: "And the last time.", lang: "en-US", last: true });
    assert.equal((await socket.reply()).join(""), REPLY);
    assert.equal(socket.closed(), null, "the caller's socket stayed up");
    assert.equal(firstA.process.exitCode, 0);
    assert.equal(firstB.process.exitCode, 0);

    const turns = await storedTurns(proxyA, sid);
    assert.deepEqual(
      turns.map((t) => `${t.role}:${t.text}`),
      ["Count for me.", "Again, please.", "Once more.", "And the last time."].flatMap((prompt) => [`user:${prompt}`, `assistant:${REPLY}`]),
    );
    assert.ok(turns.every((t) => !t.interrupted), "no turn was cut");
    socket.close();
  });
});
