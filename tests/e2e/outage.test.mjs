// A database outage end to end (issue 20): the four Workers in workerd with every seed region
// configured, two origins sharing a PostgreSQL and a Redis of this file's own (so each can be
// stopped the hard way — `pg_ctl stop -m immediate`, the Redis process killed — and started
// again), the Bedrock emulator. The call's region (us-east-1) is served by origin A, every other
// region by origin B. A phone call goes on through the outage — every reply closes with
// `last: true`, every turn said meanwhile is stored once the database is back, in order, once —
// and new work is refused fast and honestly: a new call through the edge gets 503
// `database_unavailable` with `Retry-After`, a carrier's webhook its polite TwiML, both in under
// 2 s. Origin A killed during the outage: the call goes on at B with its history, and B stores
// what A had not. Redis down too: the journal is kept in process and written all the same.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  closedPortUrl,
  geoRegions,
  hs256Jwt,
  json,
  signedCall,
  startEmulator,
  startOrigin,
  startWorkers,
  tcpProxy,
  twilioSignature as signTwilio,
  wsClient,
} from "./harness.mjs";

const ACCOUNT = "AC" + "0a7a6e".padEnd(32, "0");
const TWILIO_TOKEN = "e2e-outage-twilio-auth-token";
const HS256_SECRET = "e2e-outage-hs256-secret-0123456789abcdef";
const ISSUER = "https://issuer.outage.e2e";
const AUDIENCE = "aybiza-outage-e2e";
const TENANT = "tenant-outage";
const NUMBER = "+18005550177";
const MODEL = "e2e-outage";
const NEW_YORK = JSON.stringify({ country: "US", regionCode: "NY", continent: "NA", latitude: "40.71", longitude: "-74.01", colo: "EWR" });
const REPLY = "We open at nine. We close at five. Parking is free on weekends. Ask me anything else.";

const ADMIN = hs256Jwt(HS256_SECRET, { iss: ISSUER, aud: AUDIENCE, sub: "admin", tenant_id: TENANT, scope: "calls:read calls:write agents:admin" });
const callSid = () => "CA" + randomBytes(16).toString("hex");

/** PostgreSQL's server binaries (Debian keeps them off PATH), as tests/stack/services.sh finds them. */
function postgresBin() {
  const base = "/usr/lib/postgresql";
  const versions = existsSync(base) ? readdirSync(base).sort((a, b) => Number(b) - Number(a)) : [];
  for (const version of versions) {
    const dir = path.join(base, version, "bin");
    if (existsSync(path.join(dir, "pg_ctl"))) return dir;
  }
  throw new Error("PostgreSQL server binaries not found: run tests/stack/setup.sh --with-databases");
}

/** Runs a PostgreSQL tool as the data directory's owner (initdb refuses root). */
function asOwner(tool, args) {
  const root = process.getuid?.() === 0;
  return root ? execFileSync("runuser", ["-u", "postgres", "--", tool, ...args]) : execFileSync(tool, args);
}

/** A PostgreSQL cluster of this file's own on a free loopback port: `stop()` (immediate), `start()`. */
async function startPostgres() {
  const bin = postgresBin();
  const dir = mkdtempSync(path.join(os.tmpdir(), "aybiza-outage-pg-"));
  chmodSync(dir, 0o777);
  const data = path.join(dir, "data");
  const port = new URL(await closedPortUrl()).port;
  asOwner(path.join(bin, "initdb"), ["-D", data, "--auth=trust", "--username=postgres", "--encoding=UTF8", "--no-sync"]);
  // An immediate stop is a crash of the server (not of the machine): a commit must have reached
  // the WAL before it is acknowledged (synchronous_commit on), or the last ones before the stop
  // are lost and the test would blame the origin; fsync can stay off, the OS keeps the file.
  const options = `-c listen_addresses=127.0.0.1 -p ${port} -k ${dir} -c fsync=off -c synchronous_commit=on`;
  const pgCtl = (...args) => asOwner(path.join(bin, "pg_ctl"), ["-D", data, ...args]);
  const start = () => pgCtl("-l", path.join(dir, "server.log"), "-w", "-t", "30", "-o", options, "start");
  start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    stop: () => pgCtl("-m", "immediate", "-w", "stop"),
    start,
    remove() {
      try {
        pgCtl("-m", "immediate", "-w", "stop");
      } catch {
        // already stopped
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A Redis of this file's own on a free loopback port: `stop()` kills it, `start()` starts it again. */
async function startRedis() {
  const port = new URL(await closedPortUrl()).port;
  let server;
  const start = async () => {
    server = spawn("redis-server", ["--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
    const deadline = Date.now() + 5_000;
    for (;;) {
      try {
        if (execFileSync("redis-cli", ["-p", port, "ping"]).toString().includes("PONG")) return;
      } catch {
        // not yet
      }
      assert.ok(Date.now() < deadline, "redis-server did not answer");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}`,
    start,
    async stop() {
      if (server.exitCode !== null || server.signalCode !== null) return;
      server.kill("SIGKILL");
      await once(server, "exit");
    },
  };
}

let emulator, postgres, redis, origin, originB, proxyA, edge;

before(async () => {
  emulator = await startEmulator({ ttftMs: 20, interTokenMs: 2 });
  await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 2, reply: REPLY });
  postgres = await startPostgres();
  redis = await startRedis();
  // Both origins share the database (one schema) and Redis (one key prefix), as replicas do.
  const shared = {
    DATABASE_URL: postgres.url,
    DATABASE_SCHEMA: "outage",
    DATABASE_PROBE_INTERVAL_MS: "100",
    REDIS_URL: redis.url,
    REDIS_KEY_PREFIX: "outage:",
    BEDROCK_ENDPOINT_URL: emulator.url,
    BEDROCK_DEFAULT_MODELS: MODEL,
  };
  origin = await startOrigin(shared);
  originB = await startOrigin(shared);
  // Every seed region is configured: the call's (us-east-1) at origin A, behind a load balancer
  // in miniature (as an ALB closes its connections when its target dies); the others at B.
  proxyA = await tcpProxy(origin.url);
  edge = await startWorkers({
    originUrl: proxyA.url,
    vars: {
      // Reports of refused requests would mark every region down (each answers 503 during
      // the outage); this file is about the database, so region health stays out of it.
      "geo-router": { GEO_REGIONS: geoRegions((region) => (region === "us-east-1" ? proxyA.url : originB.url)), GEO_REPORT_THRESHOLD: "0" },
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
        SESSION_TOKEN_SECRET: "e2e-outage-session-token-secret-0123456789",
        [`TWILIO_AUTH_TOKEN_${ACCOUNT}`]: TWILIO_TOKEN,
      },
    },
  });
  const limiterEnv = await edge.worker("rate-limiter").getEnv();
  await limiterEnv.RATE_LIMIT_KV.put("policies:global", JSON.stringify({ ip: { algorithm: "sliding_window", limit: 100000, window_ms: 60000 } }));
  const agent = await api("PUT", "/api/v1/agents/ava", {
    body: { name: "Ava", system_prompt: "You answer questions about opening hours.", model: MODEL, fallback_models: [], phone_numbers: [NUMBER], voice: { voice: "en-US-Journey-O", language: "en-US" } },
  });
  assert.ok([200, 201].includes(agent.status), `agent: ${agent.status} ${await agent.text()}`);
});

after(async () => {
  await edge?.close();
  await origin?.stop();
  await originB?.stop();
  await proxyA?.close();
  await emulator?.stop();
  await redis?.stop();
  postgres?.remove();
});

function api(method, pathAndQuery, { body, token = ADMIN } = {}) {
  const text = body === undefined ? undefined : JSON.stringify(body);
  return fetch(`${edge.url}${pathAndQuery}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(text === undefined ? {} : { "content-type": "application/json" }),
      "mf-cf-blob": NEW_YORK,
    },
    body: text,
  });
}

function incoming(sid) {
  const url = `${edge.url}/voice/twilio/incoming`;
  const params = { AccountSid: ACCOUNT, CallSid: sid, From: "+14155550100", To: NUMBER, CallStatus: "ringing", Direction: "inbound" };
  return fetch(url, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", "x-twilio-signature": signTwilio(TWILIO_TOKEN, url, params), "mf-cf-blob": NEW_YORK },
    body: new URLSearchParams(params).toString(),
  });
}

function carrierRelay(sid) {
  const url = `${edge.url.replace("http", "ws")}/voice/relay/${sid}`;
  return wsClient(url, { "x-twilio-signature": signTwilio(TWILIO_TOKEN, url) });
}

const principal = { tenant_id: TENANT, subject: "e2e", scopes: [], plan: "pro", method: "api_key" };

/** A signed request straight to an origin (as the edge would sign it): A unless told. */
async function originGet(pathAndQuery, at = origin) {
  return signedCall(at, "GET", pathAndQuery, { principal });
}

async function until(predicate, message, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await predicate()) return;
    assert.ok(Date.now() < deadline, message);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function ready(at = origin) {
  const response = await originGet("/ready", at);
  return { status: response.status, body: await response.json() };
}

/** The turns stored for a call: [role, text, interrupted], checked in order and none twice. */
async function storedTurns(sid, at) {
  const turns = (await json(await originGet(`/v1/calls/${sid}/turns`, at))).turns;
  const seqs = turns.map((t) => t.seq);
  assert.ok(seqs.every((seq, i) => i === 0 || seq > seqs[i - 1]), `in order, none twice: ${seqs}`);
  return turns.map((t) => [t.role, t.text, t.interrupted]);
}

/** A carrier's call through the edge: the webhook, the relay socket, its setup. */
async function phoneCall() {
  const sid = callSid();
  const twiml = await (await incoming(sid)).text();
  assert.ok(twiml.includes("<ConversationRelay"), twiml);
  const socket = await carrierRelay(sid);
  socket.send({ type: "setup", sessionId: `VX${sid.slice(2)}`, callSid: sid, accountSid: ACCOUNT, from: "+14155550100", to: NUMBER, direction: "inbound", customParameters: { agent_id: "ava", greeting: "carrier" } });
  return { sid, socket };
}

/** Says `words` as a final prompt and returns the whole reply (its talk cycle). */
async function ask(socket, words) {
  socket.send({ type: "prompt", voicePrompt: words, lang: "en-US", last: true });
  return talkCycle(socket);
}

/** The last conversation the model was given, as text. */
async function lastModelRequest() {
  const requests = await (await fetch(`${emulator.url}/control/models/${MODEL}/requests`)).json();
  return JSON.stringify(requests.at(-1)?.messages ?? []);
}

/** One talk cycle: every `text` up to `last: true`; fails on an `error` note before it. */
async function talkCycle(socket) {
  let text = "";
  for (;;) {
    const message = await socket.next();
    assert.notEqual(message.type, "error", `an error note instead of the reply: ${JSON.stringify(message)}`);
    if (message.type !== "text") continue;
    text += message.token;
    if (message.last) return text;
  }
}

describe("a database outage", () => {
  test("a live phone call goes on, every turn is kept in order and once; new work is refused fast with Retry-After", async (t) => {
    const sid = callSid();
    const twiml = await (await incoming(sid)).text();
    assert.ok(twiml.includes("<ConversationRelay"), twiml);
    const socket = await carrierRelay(sid);
    socket.send({ type: "setup", sessionId: `VX${sid.slice(2)}`, callSid: sid, accountSid: ACCOUNT, from: "+14155550100", to: NUMBER, direction: "inbound", customParameters: { agent_id: "ava", greeting: "carrier" } });
    socket.send({ type: "prompt", voicePrompt: "When do you open?", lang: "en-US", last: true });
    assert.equal(await talkCycle(socket), REPLY);

    // Stopped mid-reply: the reply streams on and closes its talk cycle.
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 60, reply: REPLY });
    socket.send({ type: "prompt", voicePrompt: "And on Sundays?", lang: "en-US", last: true });
    const first = await socket.next();
    assert.equal(first.type, "text", JSON.stringify(first));
    postgres.stop();
    assert.equal(first.token + (await talkCycle(socket)), REPLY);
    await until(async () => (await ready()).status === 503, "/ready says the database is down", 5_000);

    // Idle, during the outage: the caller presses a key and talks on.
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 2, reply: REPLY });
    socket.send({ type: "dtmf", digit: "5" });
    socket.send({ type: "prompt", voicePrompt: "Is parking free?", lang: "en-US", last: true });
    assert.equal(await talkCycle(socket), REPLY);
    socket.send({ type: "interrupt", utteranceUntilInterrupt: "We open at nine.", durationUntilInterruptMs: 900 });

    // New work meanwhile: refused fast, with the origin's code and Retry-After, through the edge.
    let started = Date.now();
    const refused = await api("POST", "/api/v1/calls", { body: { agent_id: "ava" } });
    const refusedIn = Date.now() - started;
    const body = await json(refused);
    assert.equal(refused.status, 503, JSON.stringify(body));
    assert.equal(body.error.code, "database_unavailable");
    assert.equal(refused.headers.get("retry-after"), "2");
    assert.ok(refusedIn < 2_000, `a new API call was refused in ${refusedIn} ms`);
    started = Date.now();
    const sorry = await incoming(callSid());
    const sorryIn = Date.now() - started;
    const sorryTwiml = await sorry.text();
    assert.equal(sorry.status, 200);
    assert.ok(sorryTwiml.includes("<Say") && sorryTwiml.includes("<Hangup/>") && !sorryTwiml.includes("<ConversationRelay"), sorryTwiml);
    assert.ok(sorryIn < 2_000, `a carrier's webhook got its TwiML in ${sorryIn} ms`);
    t.diagnostic(`during the outage: a new API call refused in ${refusedIn} ms, a carrier's webhook answered in ${sorryIn} ms`);

    const during = await ready();
    assert.equal(during.body.bindings.DATABASE.ok, false);
    // "And on Sundays?" was written before the stop; its reply, the key press, the third
    // prompt, its reply and the correction wait (the reply may have been written in time).
    await until(async () => (await ready()).body.journal.depth >= 4, "the turns wait in the journal", 5_000);
    assert.ok((await ready()).body.journal.oldest_age_ms > 0);

    postgres.start();
    await until(async () => (await ready()).status === 200, "the origin finds the database back");
    await until(async () => (await ready()).body.journal.depth === 0, "the journal is written");
    const turns = (await json(await originGet(`/v1/calls/${sid}/turns`))).turns;
    const said = turns.map((t) => [t.role, t.text, t.interrupted]);
    assert.deepEqual(said, [
      ["user", "When do you open?", false],
      ["assistant", REPLY, false],
      ["user", "And on Sundays?", false],
      ["assistant", REPLY, false],
      ["dtmf", "5", false],
      ["user", "Is parking free?", false],
      ["assistant", "We open at nine.", true],
    ]);
    const seqs = turns.map((t) => t.seq);
    assert.ok(seqs.every((seq, i) => i === 0 || seq > seqs[i - 1]), `in order, none twice: ${seqs}`);
    const after = await ready();
    assert.equal(after.body.journal.dropped, 0);
    assert.ok(after.body.journal.written_late >= 4, JSON.stringify(after.body.journal));
    const metrics = await (await originGet("/metrics")).text();
    assert.match(metrics, /^origin_journal_dropped_total 0$/m);
    assert.match(metrics, /^origin_database_up 1$/m);

    // The caller talks on, and new calls are taken again.
    socket.send({ type: "prompt", voicePrompt: "Thanks, bye.", lang: "en-US", last: true });
    assert.equal(await talkCycle(socket), REPLY);
    socket.close();
  });

  test("an origin killed during the outage: the call goes on at another with its history, and every turn is stored once", async (t) => {
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 2, reply: REPLY });
    const { sid, socket } = await phoneCall();
    assert.equal(await ask(socket, "When do you open?"), REPLY);

    postgres.stop();
    await until(async () => (await ready()).status === 503, "A finds the database down", 5_000);
    await until(async () => (await ready(originB)).status === 503, "B finds the database down", 5_000);
    // Said at A during the outage: journaled there, its context kept in Redis.
    assert.equal(await ask(socket, "Is parking free?"), REPLY);
    socket.send({ type: "dtmf", digit: "7" });
    await until(async () => (await ready()).body.journal.depth >= 3, "A's journal waits", 5_000);

    // A dies with those turns unwritten; the call's object reconnects to the next region (B).
    const killedAt = Date.now();
    await origin.stop("SIGKILL");
    assert.equal(await ask(socket, "And on Sundays?"), REPLY);
    t.diagnostic(`the first reply after A was killed ended ${Date.now() - killedAt} ms later`);
    const context = await lastModelRequest();
    assert.ok(context.includes("Is parking free?") && context.includes("When do you open?"), `B's model saw the call's history: ${context}`);
    assert.ok(originB.logs.some((line) => line.includes("taking a live call over")), "B took the call over");

    postgres.start();
    await until(async () => (await ready(originB)).status === 200, "B finds the database back");
    await until(async () => (await ready(originB)).body.journal.depth === 0, "B's journal is written");
    assert.deepEqual(await storedTurns(sid, originB), [
      ["user", "When do you open?", false],
      ["assistant", REPLY, false],
      ["user", "Is parking free?", false],
      ["assistant", REPLY, false],
      ["dtmf", "7", false],
      ["user", "And on Sundays?", false],
      ["assistant", REPLY, false],
    ]);
    assert.equal((await ready(originB)).body.journal.dropped, 0);
    assert.equal(await ask(socket, "Thanks, bye."), REPLY);
    socket.close();
  });

  test("Redis down as well: the journal is kept in process, the call goes on, new work is refused fast", async () => {
    await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 2, reply: REPLY });
    // Origin A is gone (killed above) and out of its load balancer: us-east-1 is served by B.
    proxyA.switchTo(originB.url);
    const { sid, socket } = await phoneCall();
    assert.equal(await ask(socket, "When do you open?"), REPLY);

    await redis.stop();
    postgres.stop();
    await until(async () => (await ready(originB)).status === 503, "B finds the database down", 5_000);
    assert.equal(await ask(socket, "Is parking free?"), REPLY);
    const during = await ready(originB);
    assert.equal(during.body.bindings.REDIS.ok, false, JSON.stringify(during.body.bindings));
    assert.ok(during.body.journal.depth >= 2, JSON.stringify(during.body.journal));

    const started = Date.now();
    const refused = await api("POST", "/api/v1/calls", { body: { agent_id: "ava" } });
    const refusedIn = Date.now() - started;
    assert.equal(refused.status, 503, await refused.text());
    assert.equal(refused.headers.get("retry-after"), "2");
    assert.ok(refusedIn < 2_000, `a new API call was refused in ${refusedIn} ms`);

    postgres.start();
    await until(async () => (await ready(originB)).body.journal.depth === 0, "the journal is written without Redis");
    assert.deepEqual(await storedTurns(sid, originB), [
      ["user", "When do you open?", false],
      ["assistant", REPLY, false],
      ["user", "Is parking free?", false],
      ["assistant", REPLY, false],
    ]);
    assert.equal((await ready(originB)).body.journal.dropped, 0);
    await redis.start();
    assert.equal(await ask(socket, "Thanks, bye."), REPLY);
    socket.close();
  });
});
