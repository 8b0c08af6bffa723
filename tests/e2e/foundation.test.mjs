// The foundation as a client sees it: every service answers /health, failures are JSON with a
// request id, a dead origin shows in the edge's health, geo-router's Cron Trigger probes the origin.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { closedPortUrl, json, SEED_REGIONS, startStack, startWorkers, WORKERS } from "./harness.mjs";

describe("the whole stack", () => {
  let stack;
  before(async () => {
    stack = await startStack();
  });
  after(async () => {
    await stack?.close();
  });

  test("voice-router /health answers for all four Workers and the origin", async () => {
    const response = await fetch(`${stack.edge.url}/health`);
    const body = await json(response);
    assert.equal(response.status, 200, JSON.stringify(body));
    assert.equal(body.service, "voice-router");
    assert.equal(body.status, "ok");
    assert.match(response.headers.get("content-type"), /^application\/json/);
    const expected = {
      AUTH: "auth-validator@",
      RATE_LIMITER: "rate-limiter@",
      GEO_ROUTER: "geo-router@",
      ORIGIN: "origin@",
    };
    for (const [binding, service] of Object.entries(expected)) {
      assert.equal(body.bindings[binding]?.ok, true, `${binding}: ${JSON.stringify(body.bindings[binding])}`);
      assert.ok(body.bindings[binding].version.startsWith(service), body.bindings[binding].version);
    }
    assert.equal(body.bindings.CALL_SESSION?.ok, true, "CallSession Durable Object answered");
    assert.equal(body.bindings.RATE_LIMITER_OBJECTS?.ok, true, "rate-limiter's RateLimiter objects answer voice-router directly");
  });

  test("each internal Worker reports its own bindings", async () => {
    const expected = {
      "auth-validator": ["AUTH_KV"],
      "rate-limiter": ["RATE_LIMITER", "RATE_LIMIT_KV"],
      "geo-router": ["GEO_KV"],
    };
    for (const worker of WORKERS.filter((w) => w !== "voice-router")) {
      const response = await stack.edge.worker(worker).fetch("https://internal/health");
      const body = await json(response);
      assert.equal(response.status, 200, `${worker}: ${JSON.stringify(body)}`);
      assert.equal(body.service, worker);
      assert.deepEqual(Object.keys(body.bindings).sort(), expected[worker].sort());
      assert.ok(Object.values(body.bindings).every((b) => b.ok), JSON.stringify(body));
    }
  });

  test("the origin answers /health directly", async () => {
    const response = await fetch(`${stack.origin.url}/health`);
    const body = await json(response);
    assert.equal(response.status, 200);
    assert.equal(body.service, "origin");
  });

  test("an unknown route is a JSON 404 carrying a request id", async () => {
    const response = await fetch(`${stack.edge.url}/no/such/route`);
    const body = await json(response);
    assert.equal(response.status, 404);
    assert.equal(body.error.code, "not_found");
    assert.ok(body.error.request_id.length > 0);
    assert.equal(response.headers.get("x-request-id"), body.error.request_id);
  });

  test("a wrong method on /health is a JSON 405", async () => {
    const response = await fetch(`${stack.edge.url}/health`, { method: "POST" });
    const body = await json(response);
    assert.equal(response.status, 405);
    assert.equal(body.error.code, "method_not_allowed");
  });

  test("the public edge mints its own request id; internal Workers keep the hop's", async () => {
    const forged = "forged-by-client";
    const edge = await fetch(`${stack.edge.url}/nope`, { headers: { "x-request-id": forged } });
    assert.notEqual(edge.headers.get("x-request-id"), forged);
    await edge.body?.cancel();

    const internal = await stack.edge.worker("auth-validator").fetch("https://internal/nope", {
      headers: { "x-request-id": "hop-42" },
    });
    assert.equal((await json(internal)).error.request_id, "hop-42");
  });

  test("geo-router's Cron Trigger probes the origin for every region and stores the health table", async () => {
    const geo = stack.edge.worker("geo-router");
    const before = Date.now();
    const result = await geo.scheduled({ cron: "* * * * *" });
    assert.equal(result.outcome, "ok");
    const env = await geo.getEnv();
    const table = JSON.parse((await env.GEO_KV.get("health:v1")) ?? "null");
    assert.ok(table, "the cron wrote health:v1");
    assert.ok(table.probed_at_ms >= before - 1000, `probed at ${table.probed_at_ms}, expected >= ${before}`);
    assert.deepEqual(Object.keys(table.regions).sort(), [...SEED_REGIONS].sort());
    for (const [region, health] of Object.entries(table.regions)) {
      assert.equal(health.state, "up", `${region}: ${JSON.stringify(health)}`);
      assert.equal(health.last_probe.ok, true);
      assert.equal(health.last_probe.status, 200);
      assert.ok(health.last_probe.at_ms >= before - 1000);
    }
  });

  test("the origin exits cleanly on SIGTERM", async () => {
    const { startOrigin } = await import("./harness.mjs");
    const origin = await startOrigin();
    const code = await origin.stop("SIGTERM");
    assert.equal(code, 0);
    // The drain (issue 18): new calls refused, relay sockets closed after their live turn.
    assert.ok(origin.logs.some((line) => line.includes("draining")), origin.logs.join("\n"));
    assert.ok(origin.logs.some((line) => line.includes("origin stopped")), origin.logs.join("\n"));
  });
});

describe("with the origin down", () => {
  let edge;
  before(async () => {
    edge = await startWorkers({ originUrl: await closedPortUrl() });
  });
  after(async () => {
    await edge?.close();
  });

  test("voice-router /health is 503 and names the origin as the failing binding", async () => {
    const response = await fetch(`${edge.url}/health`);
    const body = await json(response);
    assert.equal(response.status, 503);
    assert.equal(body.status, "degraded");
    assert.equal(body.bindings.ORIGIN.ok, false);
    assert.ok(body.bindings.ORIGIN.error, "carries a cause");
    assert.equal(body.bindings.AUTH.ok, true, "the other bindings still answer");
  });
});
