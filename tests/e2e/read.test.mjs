// The read API through the edge (issue 14, "Through the edge"): the four Workers in workerd, two
// origins (two regions) sharing one database, the Bedrock emulator, PostgreSQL/Redis when the
// test command started them — one stack for the file. An API client lists its calls page by
// page, reads a transcript, follows a live events stream (the tenant's and one call's, resumed
// with Last-Event-ID) and reads its usage per day; then every refusal: 401, 403 for a missing
// scope, 404 for another tenant's call, 400 for a bad filter or cursor, 429 over the limit, and,
// with each region's load balancer losing its origin in turn, a failover and then 502.
//
// Each region's origin sits behind a small proxy standing in for its load balancer (an ALB with
// no healthy target answers 502). A stopped process cannot stand in for a dead region here:
// the test harness hands the Workers' outbound fetches to Node, and miniflare turns a refused
// connection into a 500 answer the edge must pass on, where workerd would fail the fetch.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync } from "node:fs";
import http from "node:http";
import { once } from "node:events";
import os from "node:os";
import path from "node:path";
import { geoRegions, hs256Jwt, json, parseSse, startEmulator, startOrigin, startWorkers, withTimeout } from "./harness.mjs";

const HS256_SECRET = "read-e2e-hs256-secret-0123456789abcdef-01";
const ISSUER = "https://issuer.read-e2e";
const AUDIENCE = "aybiza-read-e2e";
const TENANT = "tenant-read";
const MODEL = "read-e2e-model";
const REPLY = "We open at nine. We close at five.";
// A caller in New York: us-east-1 (origin A) by the seed's region-code map; us-west-2 is origin B.
const NEW_YORK = JSON.stringify({ country: "US", regionCode: "NY", continent: "NA", latitude: "40.71", longitude: "-74.01", colo: "EWR" });

const jwt = (claims) => hs256Jwt(HS256_SECRET, { iss: ISSUER, aud: AUDIENCE, ...claims });
const READER = jwt({ sub: "ops", tenant_id: TENANT, scope: "calls:read calls:write agents:admin" });
const WRITER_ONLY = jwt({ sub: "bot", tenant_id: TENANT, scope: "calls:write" });
const OTHER = jwt({ sub: "eve", tenant_id: "tenant-read-other", scope: "calls:read calls:write agents:admin" });
const LIMITED = jwt({ sub: "busy", tenant_id: "tenant-read-limited", scope: "calls:read" });

let emulator, originA, originB, regionA, regionB, edge;
/** The calls the first tests start, oldest first. */
const calls = [];

before(async () => {
  emulator = await startEmulator({ ttftMs: 20, interTokenMs: 2 });
  await emulator.script(MODEL, { ttft_ms: 20, inter_token_ms: 2, reply: REPLY });
  // Both regions' origins on one database, as regions share Aurora Global in production.
  const id = `read_${randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const database = { BEDROCK_ENDPOINT_URL: emulator.url, BEDROCK_DEFAULT_MODELS: MODEL };
  if (process.env.DATABASE_URL?.startsWith("postgres")) database.DATABASE_SCHEMA = id;
  else database.DATABASE_URL = `sqlite://${path.join(mkdtempSync(path.join(os.tmpdir(), "aybiza-read-")), "calls.sqlite3")}?mode=rwc`;
  if (process.env.REDIS_URL) database.REDIS_KEY_PREFIX = `${id}:`;
  originA = await startOrigin(database);
  originB = await startOrigin(database);
  regionA = await loadBalancer(originA.url);
  regionB = await loadBalancer(originB.url);
  edge = await startWorkers({
    originUrl: regionA.url,
    vars: {
      "geo-router": { GEO_REGIONS: geoRegions((region) => (region === "us-west-2" ? regionB.url : regionA.url)) },
      "auth-validator": { JWT_ISSUER: ISSUER, JWT_AUDIENCE: AUDIENCE, JWT_DEFAULT_PLAN: "pro" },
    },
    secrets: { "auth-validator": { JWT_HS256_SECRET: HS256_SECRET, SESSION_TOKEN_SECRET: "read-e2e-session-token-secret-0123456789ab" } },
  });
  // One address makes every request here: only the limits a test means to meet apply.
  const limiter = await edge.worker("rate-limiter").getEnv();
  await limiter.RATE_LIMIT_KV.put("policies:global", JSON.stringify({ ip: { algorithm: "sliding_window", limit: 100000, window_ms: 60000 } }));
  await limiter.RATE_LIMIT_KV.put(`policies:tenant:${TENANT}`, JSON.stringify({ principal: { algorithm: "gcra", limit: 100000, period_ms: 60000, burst: 1000 } }));
  await limiter.RATE_LIMIT_KV.put("policies:tenant:tenant-read-limited", JSON.stringify({ principal: { algorithm: "gcra", limit: 2, period_ms: 60000, burst: 2 } }));
  for (const [token, agent] of [
    [READER, "desk"],
    [READER, "sales"],
    [OTHER, "desk"],
  ]) {
    const put = await api("PUT", `/api/v1/agents/${agent}`, { token, body: { name: agent, system_prompt: "You answer briefly.", model: MODEL, fallback_models: [] } });
    assert.ok([200, 201].includes(put.status), `agent ${agent}: ${put.status} ${await put.text()}`);
  }
});

after(async () => {
  await edge?.close();
  await regionA?.close();
  await regionB?.close();
  await originA?.stop();
  await originB?.stop();
  await emulator?.stop();
});

/**
 * A region's load balancer in front of `target`: passes requests and answers through as they
 * stream; `down = true` makes it answer 502 as an ALB with no healthy target does. Counts what
 * reached it.
 */
async function loadBalancer(target) {
  const sockets = new Set();
  const balancer = { down: false, requests: 0 };
  const server = http.createServer((request, response) => {
    balancer.requests += 1;
    if (balancer.down) {
      request.resume();
      response.writeHead(502, { "content-type": "text/html" }).end("<html><body><h1>502 Bad Gateway</h1></body></html>");
      return;
    }
    const upstream = http.request(`${target}${request.url}`, { method: request.method, headers: request.headers }, (answer) => {
      response.writeHead(answer.statusCode, answer.headers);
      response.flushHeaders();
      answer.pipe(response);
    });
    upstream.on("error", () => (response.headersSent ? response.destroy() : response.writeHead(502).end()));
    response.on("close", () => upstream.destroy());
    request.pipe(upstream);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  balancer.url = `http://127.0.0.1:${server.address().port}`;
  balancer.close = async () => {
    for (const socket of sockets) socket.destroy();
    server.close();
  };
  return balancer;
}

/** An API request through the edge. */
function api(method, pathAndQuery, { body, token = READER, headers = {} } = {}) {
  const text = body === undefined ? undefined : JSON.stringify(body);
  return fetch(`${edge.url}${pathAndQuery}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(text === undefined ? {} : { "content-type": "application/json" }),
      "mf-cf-blob": NEW_YORK,
      ...headers,
    },
    body: text,
  });
}

async function startCall(agent = "desk", token = READER) {
  const created = await api("POST", "/api/v1/calls", { token, body: { agent_id: agent } });
  const call = await json(created);
  assert.equal(created.status, 201, JSON.stringify(call));
  return call.call_id;
}

async function say(callId, text, token = READER) {
  const turn = await api("POST", `/api/v1/calls/${callId}/turns`, { token, body: { text } });
  assert.equal(turn.status, 200);
  const events = parseSse(await turn.text());
  assert.equal(events.at(-1).event, "done", JSON.stringify(events.at(-1)));
}

async function endCall(callId, token = READER) {
  assert.equal((await api("POST", `/api/v1/calls/${callId}/end`, { token })).status, 200);
}

/**
 * An SSE response read as it arrives: `next(ms)` resolves with `{event, id, data}`, or
 * `"ended"` when the stream closed, or `"quiet"` when nothing came within `ms`.
 */
function events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  // A read that lost a race against the clock is kept for the next call, so no chunk is lost.
  let pending = null;
  const read = () => (pending ??= reader.read());
  return {
    async next(ms = 5000) {
      const deadline = Date.now() + ms;
      for (;;) {
        const end = buffer.indexOf("\n\n");
        if (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let event = "message";
          let id = null;
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trimStart();
          }
          if (data) return { event, id, data: JSON.parse(data) };
          continue;
        }
        const left = deadline - Date.now();
        if (left <= 0) return "quiet";
        const chunk = await Promise.race([read(), new Promise((resolve) => setTimeout(() => resolve("quiet"), left))]);
        if (chunk === "quiet") return "quiet";
        pending = null;
        if (chunk.done) return "ended";
        buffer += decoder.decode(chunk.value, { stream: true });
      }
    },
    /** The next `count` events as "event id". */
    async take(count, ms = 5000) {
      const seen = [];
      while (seen.length < count) {
        const next = await this.next(ms);
        assert.ok(typeof next === "object", `expected ${count} events, got ${JSON.stringify(seen)} then ${next}`);
        seen.push(`${next.event} ${next.id ?? "-"}`);
      }
      return seen;
    },
    close: () => reader.cancel(),
  };
}

/** Every page of the list through the edge with `limit`, as [page of ids, …]. */
async function pages(query, limit) {
  const all = [];
  let cursor = null;
  for (let i = 0; i < 50; i++) {
    const params = new URLSearchParams(query);
    params.set("limit", String(limit));
    if (cursor) params.set("cursor", cursor);
    const response = await api("GET", `/api/v1/calls?${params}`);
    const page = await json(response);
    assert.equal(response.status, 200, JSON.stringify(page));
    all.push(page.calls.map((call) => call.id));
    if (!page.next_cursor) return all;
    cursor = page.next_cursor;
  }
  throw new Error("more than 50 pages");
}

describe("the read API through the edge", () => {
  test("the call list: newest first, walked page by page with the opaque cursor, every filter applied", async () => {
    const startedAfter = Date.now() - 1;
    for (const agent of ["desk", "sales", "desk", "sales", "desk"]) calls.push(await startCall(agent));
    await endCall(calls[0]);
    await endCall(calls[3]);
    const newestFirst = [...calls].reverse();

    const walked = await pages({ started_after_ms: String(startedAfter) }, 2);
    assert.deepEqual(walked.map((page) => page.length), [2, 2, 1], "pages of two, the last one short and without a cursor");
    assert.deepEqual(walked.flat(), newestFirst);
    // Exactly a page's worth: one page, no cursor to an empty one.
    assert.deepEqual(await pages({ started_after_ms: String(startedAfter) }, 5), [newestFirst]);

    const page = await json(await api("GET", `/api/v1/calls?started_after_ms=${startedAfter}&limit=1`));
    assert.deepEqual(Object.keys(page).sort(), ["calls", "next_cursor"]);
    const [first] = page.calls;
    assert.equal(first.id, calls[4]);
    assert.equal(first.tenant_id, TENANT);
    assert.equal(first.agent_id, "desk");
    assert.equal(first.source, "api");
    assert.equal(first.status, "active");
    assert.equal(first.turn_count, 0);
    assert.equal(first.region, "us-east-1");
    assert.equal(typeof first.started_at_ms, "number");
    assert.match(page.next_cursor, /^[A-Za-z0-9_-]+$/, "opaque, URL-safe");

    const ids = async (query) => (await pages({ started_after_ms: String(startedAfter), ...query }, 100)).flat();
    assert.deepEqual(await ids({ status: "ended" }), [calls[3], calls[0]]);
    assert.deepEqual(await ids({ status: "active", agent_id: "desk" }), [calls[4], calls[2]]);
    assert.deepEqual(await ids({ agent_id: "sales" }), [calls[3], calls[1]]);
    assert.deepEqual(await ids({ source: "phone" }), []);
    assert.deepEqual(await ids({ source: "api" }), newestFirst);
    // Times are the origin's (the list's own `started_at_ms`).
    const listed = (await json(await api("GET", `/api/v1/calls?started_after_ms=${startedAfter}`))).calls;
    const third = listed.find((call) => call.id === calls[2]);
    assert.deepEqual(await ids({ started_before_ms: String(third.started_at_ms) }), newestFirst.filter((id) => calls.indexOf(id) < 2));
    // Another tenant lists only its own calls.
    const theirs = await json(await api("GET", "/api/v1/calls", { token: OTHER }));
    assert.deepEqual(theirs, { calls: [] });
  });

  test("a transcript: each turn with its model, time to first token, duration and interruptions", async () => {
    const callId = calls[4];
    await say(callId, "When are you open?");
    await say(callId, "And on Sundays?");
    const response = await api("GET", `/api/v1/calls/${callId}/turns`);
    assert.equal(response.status, 200);
    const transcript = await json(response);
    assert.equal(transcript.call_id, callId);
    assert.deepEqual(transcript.turns.map((turn) => `${turn.seq} ${turn.role}`), ["1 user", "2 assistant", "3 user", "4 assistant"]);
    const [asked, reply] = transcript.turns;
    assert.equal(asked.text, "When are you open?");
    assert.equal(reply.text, REPLY);
    assert.equal(reply.model, MODEL);
    assert.equal(reply.interrupted, false);
    assert.ok(reply.ttft_ms >= 20, `ttft ${reply.ttft_ms} ms (the emulator waits 20 ms)`);
    assert.ok(reply.duration_ms >= reply.ttft_ms, `duration ${reply.duration_ms} ms`);
    assert.ok(reply.output_tokens > 0);
    // The list counts the caller's turns.
    const listed = await json(await api("GET", `/api/v1/calls?limit=100`));
    assert.equal(listed.calls.find((call) => call.id === callId).turn_count, 2);
  });

  test("live events: the tenant's stream sees a call start, a turn and the end; the call's own stream replays, resumes and closes", async () => {
    const tenantStream = await api("GET", "/api/v1/events", { headers: { accept: "text/event-stream" } });
    assert.equal(tenantStream.status, 200);
    assert.match(tenantStream.headers.get("content-type"), /^text\/event-stream/);
    assert.ok(tenantStream.headers.get("x-request-id"));
    const tenant = events(tenantStream);
    assert.equal(await tenant.next(300), "quiet", "nothing before anything happens");

    const callId = await startCall("sales");
    const started = await tenant.next();
    assert.equal(started.event, "call_started");
    assert.equal(started.data.call_id, callId);
    assert.equal(started.data.tenant_id, TENANT);

    // The call's own stream, opened after it started: its history first (the start), then live.
    const own = events(await api("GET", `/api/v1/calls/${callId}/events`));
    assert.deepEqual(await own.take(1), ["call_started 0"]);
    assert.equal(await own.next(300), "quiet", "streamed as it comes, not buffered to the end");
    await say(callId, "When are you open?");
    assert.deepEqual(await own.take(2), ["turn_started 1", "turn_finished 2"]);
    const tenantTurn = [await tenant.next(), await tenant.next()];
    assert.deepEqual(tenantTurn.map((event) => `${event.event} ${event.data.call_id}`), [`turn_started ${callId}`, `turn_finished ${callId}`]);
    assert.equal(tenantTurn[1].data.model, MODEL);
    assert.ok(tenantTurn[1].data.ttft_ms >= 20);

    // A client back after event 1 (Last-Event-ID, as EventSource sends it) gets what followed.
    const resumed = events(await api("GET", `/api/v1/calls/${callId}/events`, { headers: { "last-event-id": "1" } }));
    assert.deepEqual(await resumed.take(1), ["turn_finished 2"]);

    await endCall(callId);
    for (const stream of [own, resumed]) {
      const ended = await stream.next();
      assert.equal(`${ended.event} ${ended.id}`, "call_ended end");
      assert.equal(ended.data.reason, "requested");
      assert.equal(await stream.next(), "ended", "the call's stream closes with the call");
    }
    const tenantEnded = await tenant.next();
    assert.equal(`${tenantEnded.event} ${tenantEnded.data.call_id}`, `call_ended ${callId}`);
    assert.equal(await tenant.next(300), "quiet", "the tenant's stream stays open for the next call");
    await tenant.close();

    // Nothing after the end: 204, so a browser's EventSource stops reconnecting.
    const done = await api("GET", `/api/v1/calls/${callId}/events`, { headers: { "last-event-id": "end" } });
    assert.equal(done.status, 204);
    const bad = await api("GET", `/api/v1/calls/${callId}/events`, { headers: { "last-event-id": "yesterday" } });
    assert.equal(bad.status, 400);
    assert.equal((await json(bad)).error.code, "invalid_request");
  });

  test("usage per day: calls, minutes, tokens in and out, tool calls", async () => {
    const response = await api("GET", "/api/v1/usage");
    assert.equal(response.status, 200);
    const usage = await json(response);
    assert.equal(usage.tenant_id, TENANT);
    const today = new Date().toISOString().slice(0, 10);
    assert.equal(usage.to, today);
    const day = usage.days.find((d) => d.day === today);
    assert.ok(day, JSON.stringify(usage));
    assert.equal(day.calls, 6, "five listed calls and the one followed live");
    assert.equal(day.turns, 3);
    // Three ended calls, each under a minute: a minute each, as carriers bill.
    assert.equal(day.minutes, 3);
    assert.equal(day.tool_calls, 0, "no tool calls yet");
    assert.ok(day.input_tokens > 0 && day.output_tokens > 0);
    assert.deepEqual(
      Object.keys(usage.totals).sort(),
      ["calls", "day", "input_tokens", "minutes", "output_tokens", "tool_calls", "turns"],
    );
    const ranged = await json(await api("GET", `/api/v1/usage?from=${today}&to=${today}`));
    assert.deepEqual(ranged.days, [day]);
    const reversed = await api("GET", "/api/v1/usage?from=2026-02-02&to=2026-02-01");
    assert.equal(reversed.status, 400);
    assert.equal((await json(reversed)).error.code, "invalid_range");
    assert.deepEqual((await json(await api("GET", "/api/v1/usage", { token: OTHER }))).days, []);
  });
});

describe("every refusal of the read routes", () => {
  const reads = () => ["/api/v1/calls", `/api/v1/calls/${otherCall}/turns`, `/api/v1/calls/${otherCall}/events`, "/api/v1/events", "/api/v1/usage"];
  let otherCall;

  before(async () => {
    otherCall = await startCall("desk", OTHER);
  });

  test("no credential is 401; a credential without calls:read is 403 insufficient_scope", async () => {
    for (const route of reads()) {
      const anonymous = await api("GET", route, { token: null });
      assert.equal(anonymous.status, 401, route);
      assert.equal((await json(anonymous)).error.code, "missing_credential", route);
      assert.match(anonymous.headers.get("www-authenticate") ?? "", /^Bearer/, route);
      const writer = await api("GET", route, { token: WRITER_ONLY });
      assert.equal(writer.status, 403, route);
      assert.match(writer.headers.get("www-authenticate") ?? "", /insufficient_scope/, route);
      await writer.arrayBuffer();
    }
  });

  test("another tenant's call, and a call that does not exist, are 404 unknown_call", async () => {
    for (const route of [`/api/v1/calls/${otherCall}/turns`, `/api/v1/calls/${otherCall}/events`, "/api/v1/calls/call_nope/turns", "/api/v1/calls/call_nope/events"]) {
      const response = await api("GET", route);
      assert.equal(response.status, 404, route);
      assert.equal((await json(response)).error.code, "unknown_call", route);
    }
    assert.equal((await api("GET", `/api/v1/calls/${otherCall}/turns`, { token: OTHER })).status, 200, "its own tenant reads it");
    assert.equal((await api("GET", "/api/v1/calls/a.b/turns")).status, 400);
  });

  test("a bad filter or cursor is 400 at the edge, before any origin", async () => {
    const before = regionA.requests + regionB.requests;
    for (const [query, code] of [
      ["stauts=active", "invalid_query"],
      ["status=paused", "invalid_query"],
      ["limit=0", "invalid_query"],
      ["limit=500", "invalid_query"],
      ["started_after_ms=tomorrow", "invalid_query"],
      ["started_after_ms=9&started_before_ms=3", "invalid_query"],
      ["agent_id=a%2Fb", "invalid_query"],
      ["cursor=bm90LWEtY3Vyc29y", "invalid_cursor"],
      ["cursor=%%%", "invalid_cursor"],
    ]) {
      const response = await api("GET", `/api/v1/calls?${query}`);
      const body = await json(response);
      assert.equal(response.status, 400, `${query}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, code, query);
      assert.ok(body.error.request_id, query);
    }
    assert.equal(regionA.requests + regionB.requests, before, "no origin was asked");
  });

  test("over the per-principal limit: 429 with Retry-After and the RateLimit headers", async () => {
    const statuses = [];
    for (let i = 0; i < 3; i++) {
      const response = await api("GET", "/api/v1/usage", { token: LIMITED });
      statuses.push(response.status);
      if (response.status === 429) {
        assert.ok(Number(response.headers.get("retry-after")) >= 1);
        assert.ok(response.headers.get("ratelimit-policy"));
      }
      await response.arrayBuffer();
    }
    assert.deepEqual(statuses, [200, 200, 429]);
  });

  test("reads fail over when the call's region is down; 502 when no region's origin answers", async () => {
    const callId = calls.at(-1);
    regionA.down = true;
    const triedA = regionA.requests;
    for (const route of ["/api/v1/calls?limit=1", `/api/v1/calls/${callId}/turns`, "/api/v1/usage"]) {
      const response = await api("GET", route);
      assert.equal(response.status, 200, `${route} through the next region: ${await response.clone().text()}`);
      await response.arrayBuffer();
    }
    const stream = events(await api("GET", `/api/v1/calls/${callId}/events`));
    assert.deepEqual(await stream.take(1), ["call_started 0"], "the call's stream from the next region");
    await stream.close();
    assert.ok(regionA.requests > triedA, "the call's own region was tried first");

    regionB.down = true;
    for (const route of ["/api/v1/calls", `/api/v1/calls/${callId}/turns`, `/api/v1/calls/${callId}/events`, "/api/v1/events", "/api/v1/usage"]) {
      const triedB = regionB.requests;
      const response = await withTimeout(api("GET", route), 30_000, route);
      assert.equal(response.status, 502, route);
      assert.ok(response.headers.get("x-request-id"), route);
      await response.arrayBuffer();
      assert.ok(regionB.requests > triedB, `${route}: every region was tried`);
    }
    regionA.down = false;
    regionB.down = false;
  });
});
