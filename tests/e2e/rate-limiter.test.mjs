// rate-limiter as voice-router meets it over its service binding, and its objects as voice-router's
// RATE_LIMITER_OBJECTS binding meets them: exact limits under concurrent
// bursts, state that survives a restart, leases reclaimed by the Durable Object's alarm, shadow
// mode, KV policies, bad input, and the degraded path (objects that throw, fail or hang) in both
// failure modes.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { json, rewrittenConfig, startWorkers, TEST_SECRETS, workerName } from "./harness.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const SECRET = TEST_SECRETS["rate-limiter"].RATE_LIMIT_KEY_SECRET;

/** The Durable Object instance name rate-limiter uses for `key` under `policy`. */
const objectName = (policy, key) => createHmac("sha256", SECRET).update(`${policy}:${key}`).digest("hex");

/** A key no other test uses. */
const fresh = (label) => `${label}-${randomUUID()}`;

describe("rate-limiter", () => {
  let edge;
  let limiter;
  let kv;

  before(async () => {
    edge = await startWorkers({
      // KV read on every request, so a test's policy applies at once; a generous deadline so a
      // busy 2-core machine never turns a slow answer into a degraded one.
      vars: { "rate-limiter": { POLICY_CACHE_TTL_MS: "0", LIMITER_TIMEOUT_MS: "15000" } },
    });
    limiter = edge.worker("rate-limiter");
    kv = (await limiter.getEnv()).RATE_LIMIT_KV;
  });
  after(async () => {
    await edge?.close();
  });

  async function post(path, body) {
    const response = await limiter.fetch(`https://rate-limiter${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    return { status: response.status, body: await json(response) };
  }
  const check = (...checks) => post("/check", { checks });
  const lease = (op, body) => post(`/leases/${op}`, body);

  /** The hex id of the object deciding for `key` under `policy`. */
  async function objectId(policy, key) {
    const env = await limiter.getEnv();
    return env.RATE_LIMITER.idFromName(objectName(policy, key)).toString();
  }

  /** Leases the alarm of `prefix`'s object reclaimed so far, per its log lines. */
  function reclaimedByAlarm(prefix) {
    const pattern = new RegExp(`^RateLimiter ${prefix}: alarm reclaimed (\\d+) expired lease`);
    return edge.server
      .getLogs()
      .map((l) => pattern.exec(l.message))
      .reduce((sum, match) => sum + (match ? Number(match[1]) : 0), 0);
  }

  describe("exactness", () => {
    test("a concurrent burst of 250 against the 100/min IP seed admits exactly 100", async () => {
      const key = fresh("203.0.113");
      const answers = await Promise.all(Array.from({ length: 250 }, () => check({ policy: "ip", key })));
      assert.ok(answers.every((a) => a.status === 200), JSON.stringify(answers.find((a) => a.status !== 200)));
      const decisions = answers.map((a) => a.body.decisions[0]);
      assert.equal(decisions.filter((d) => d.degraded).length, 0, "no decision degraded");
      const allowed = decisions.filter((d) => d.allowed);
      assert.equal(allowed.length, 100);
      // Decided one after the other: each remaining count from 99 down to 0 exactly once.
      assert.deepEqual(allowed.map((d) => d.remaining).sort((a, b) => a - b), [...Array(100).keys()]);
      for (const refused of decisions.filter((d) => !d.allowed)) {
        assert.equal(refused.remaining, 0);
        assert.ok(refused.retry_after_ms > 0 && refused.retry_after_ms <= 60_060, refused.retry_after_ms);
        assert.equal(refused.limit, 100);
        assert.equal(refused.window_ms, 60_000);
        assert.equal(refused.policy, "ip");
      }
      assert.ok(answers.filter((a) => !a.body.allowed).length === 150);
    });

    test("a GCRA burst admits exactly the burst, with costs above one", async () => {
      const tenant = fresh("t-gcra");
      // One unit an hour after the burst: nothing refills during the test.
      await kv.put(
        `policies:tenant:${tenant}`,
        JSON.stringify({ principal: { algorithm: "gcra", limit: 1, period_ms: 3_600_000, burst: 30 } }),
      );
      const key = `${tenant}/u1`;
      const answers = await Promise.all(
        Array.from({ length: 40 }, () => check({ policy: "principal", key, tenant, cost: 2 })),
      );
      const allowed = answers.filter((a) => a.body.decisions[0].allowed);
      assert.equal(allowed.length, 15, "30 units at 2 each");
      const refused = answers.find((a) => !a.body.decisions[0].allowed).body.decisions[0];
      // Two units at an hour each, less the little time the burst itself took.
      assert.ok(refused.retry_after_ms <= 2 * 3_600_000 && refused.retry_after_ms > 2 * 3_600_000 - 60_000, refused.retry_after_ms);
      const peek = await check({ policy: "principal", key, tenant, cost: 0 });
      assert.equal(peek.body.decisions[0].allowed, true, "cost 0 only reads");
      assert.equal(peek.body.decisions[0].remaining, 0);
    });

    test("a refused cost does not block a smaller one that fits", async () => {
      const key = fresh("192.0.2.77");
      assert.equal((await check({ policy: "ip", key, cost: 95 })).body.allowed, true);
      const big = await check({ policy: "ip", key, cost: 10 });
      assert.equal(big.body.allowed, false);
      assert.equal(big.body.decisions[0].remaining, 5);
      assert.equal((await check({ policy: "ip", key, cost: 10 })).body.allowed, false, "refused again");
      const small = await check({ policy: "ip", key, cost: 5 });
      assert.equal(small.body.allowed, true, "5 units still fit");
      assert.equal(small.body.decisions[0].remaining, 0);
    });

    test("one request checks IP and principal; the refusing one governs, both count", async () => {
      const ip = fresh("198.51.100");
      const tenant = fresh("t-both");
      await kv.put(
        `policies:tenant:${tenant}`,
        JSON.stringify({ principal: { algorithm: "sliding_window", limit: 2, window_ms: 3_600_000 } }),
      );
      const both = () =>
        check({ policy: "ip", key: ip }, { policy: "principal", key: `${tenant}/u1`, tenant });
      for (const expected of [true, true, false]) {
        const { status, body } = await both();
        assert.equal(status, 200);
        assert.equal(body.allowed, expected);
        assert.deepEqual(body.decisions.map((d) => d.policy), ["ip", "principal"], "in request order");
        assert.equal(body.decisions[0].allowed, true);
      }
      const ipAfter = await check({ policy: "ip", key: ip, cost: 0 });
      assert.equal(ipAfter.body.decisions[0].remaining, 97, "the refused request still counted for the IP");
    });

    test("in order: the checks after a refusal are neither counted nor answered", async () => {
      const ip = fresh("198.51.100");
      const tenant = fresh("t-order");
      await kv.put(`policies:tenant:${tenant}`, JSON.stringify({ ip: { algorithm: "sliding_window", limit: 1, window_ms: 3_600_000 } }));
      const inOrder = () =>
        post("/check", {
          checks: [
            { policy: "ip", key: ip, tenant },
            { policy: "principal", key: `${tenant}/u1`, tenant },
          ],
          in_order: true,
        });
      const first = await inOrder();
      assert.equal(first.status, 200);
      assert.equal(first.body.allowed, true);
      assert.deepEqual(first.body.decisions.map((d) => [d.policy, d.allowed]), [["ip", true], ["principal", true]]);
      const principalAfterFirst = (await check({ policy: "principal", key: `${tenant}/u1`, tenant, cost: 0 })).body.decisions[0].remaining;
      for (let i = 0; i < 3; i++) {
        const refused = await inOrder();
        assert.equal(refused.body.allowed, false);
        assert.deepEqual(refused.body.decisions.map((d) => [d.policy, d.allowed]), [["ip", false]], "the principal's check is not answered");
      }
      const principalAfter = (await check({ policy: "principal", key: `${tenant}/u1`, tenant, cost: 0 })).body.decisions[0].remaining;
      assert.equal(principalAfter, principalAfterFirst, "nor counted");
    });

    test("keys are namespaced: the same key under another policy is another limiter", async () => {
      const key = fresh("same");
      await Promise.all(Array.from({ length: 100 }, () => check({ policy: "ip", key })));
      assert.equal((await check({ policy: "ip", key })).body.allowed, false);
      const principal = await check({ policy: "principal", key });
      assert.equal(principal.body.allowed, true);
      assert.equal(principal.body.decisions[0].remaining, 59);
    });
  });

  describe("state", () => {
    test("lives in the object named by the keyed hash of namespace and key", async () => {
      const key = fresh("192.0.2.55");
      const id = await objectId("ip", key);
      assert.ok(!(await limiter.listDurableObjectIds("RATE_LIMITER")).includes(id));
      await check({ policy: "ip", key, cost: 7 });
      const ids = await limiter.listDurableObjectIds("RATE_LIMITER");
      assert.ok(ids.includes(id), "the object named HMAC(secret, 'ip:' + key) holds the state");
      assert.ok(!ids.includes(await objectId("principal", key)), "not the other namespace's");
    });

    test("survives eviction and a restart of the runtime", async () => {
      const key = fresh("192.0.2.1");
      await Promise.all(Array.from({ length: 100 }, () => check({ policy: "ip", key })));
      await limiter.evictDurableObject("RATE_LIMITER", { name: objectName("ip", key) });
      let again = await check({ policy: "ip", key });
      assert.equal(again.body.allowed, false, "after eviction");
      assert.equal(again.body.decisions[0].degraded, false);

      await edge.server.update((options) => options);
      limiter = edge.worker("rate-limiter");
      kv = (await limiter.getEnv()).RATE_LIMIT_KV;
      again = await check({ policy: "ip", key });
      assert.equal(again.body.allowed, false, "after the restart");
      assert.equal(again.body.decisions[0].remaining, 0);
      const other = await check({ policy: "ip", key: fresh("192.0.2.2") });
      assert.equal(other.body.decisions[0].remaining, 99, "and other keys start fresh");
    });
  });

  describe("concurrent-call leases", () => {
    async function threeCallTenant(extra = {}) {
      const tenant = fresh("t-calls");
      await kv.put(
        `policies:tenant:${tenant}`,
        JSON.stringify({ "tenant-calls": { algorithm: "concurrency", limit: 3, ...extra } }),
      );
      return tenant;
    }
    const body = (tenant, leaseId) => ({ policy: "tenant-calls", key: tenant, tenant, lease_id: leaseId });

    test("the cap holds under a concurrent burst; release frees a slot; retries do not double count", async () => {
      const tenant = await threeCallTenant();
      const answers = await Promise.all(
        Array.from({ length: 12 }, (_, i) => lease("acquire", body(tenant, `CA${i}`))),
      );
      const granted = answers.filter((a) => a.body.decision.allowed);
      assert.equal(granted.length, 3);
      for (const a of granted) assert.ok(a.body.lease.expires_at_ms > Date.now() + 50_000);
      const refused = answers.find((a) => !a.body.decision.allowed);
      assert.equal(refused.body.lease, undefined);
      assert.ok(refused.body.decision.retry_after_ms > 50_000, "until the first lease expires");

      const held = granted[0].body.lease.lease_id;
      const retried = await lease("acquire", body(tenant, held));
      assert.equal(retried.body.decision.allowed, true, "a held id renews");
      assert.equal(retried.body.decision.remaining, 0);

      assert.deepEqual((await lease("release", body(tenant, held))).body, { released: true, degraded: false });
      assert.deepEqual((await lease("release", body(tenant, held))).body, { released: false, degraded: false });
      const next = await lease("acquire", body(tenant, "CA-next"));
      assert.equal(next.body.decision.allowed, true);
      assert.equal(next.body.decision.remaining, 0);
    });

    test("renew extends a live lease; an unknown lease is 404 lease_not_held", async () => {
      const tenant = await threeCallTenant();
      const first = await lease("acquire", body(tenant, "CA1"));
      const renewed = await lease("renew", body(tenant, "CA1"));
      assert.equal(renewed.status, 200);
      assert.ok(renewed.body.lease.expires_at_ms >= first.body.lease.expires_at_ms);
      const missing = await lease("renew", body(tenant, "CA-never"));
      assert.equal(missing.status, 404);
      assert.equal(missing.body.error.code, "lease_not_held");
    });

    test("the Durable Object's alarm reclaims the leases of vanished calls", async () => {
      // Leases of one second, the shortest a policy allows. The alarm is a real timer, so this
      // is the one test that waits (about a second); the expiry arithmetic itself is tested in
      // shared with an injected clock.
      const tenant = await threeCallTenant({ lease_ttl_ms: 1_000 });
      for (const id of ["a", "b", "c"]) {
        assert.equal((await lease("acquire", body(tenant, id))).body.decision.allowed, true);
      }
      assert.equal((await lease("acquire", body(tenant, "d"))).body.decision.allowed, false);
      // The three calls vanish: nobody renews, releases or asks the object anything.
      edge.server.clearLogs();
      const prefix = objectName("tenant-calls", tenant).slice(0, 12);
      const deadline = Date.now() + 15_000;
      while (reclaimedByAlarm(prefix) < 3 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      assert.equal(reclaimedByAlarm(prefix), 3, "the alarm reclaimed the three leases");
      const d = await lease("acquire", body(tenant, "d"));
      assert.equal(d.body.decision.allowed, true);
      assert.equal(d.body.decision.remaining, 2, "all three slots came back");
    });

    test("a lease route on a rate policy is refused", async () => {
      const { status, body: answer } = await lease("acquire", { policy: "ip", key: "k", lease_id: "CA1" });
      assert.equal(status, 400);
      assert.equal(answer.error.code, "wrong_policy_kind");
    });
  });

  describe("policies", () => {
    test("shadow mode decides and counts but never denies", async () => {
      const tenant = fresh("t-shadow");
      await kv.put(
        `policies:tenant:${tenant}`,
        JSON.stringify({
          principal: { algorithm: "sliding_window", limit: 3, window_ms: 3_600_000, shadow: true },
          "tenant-calls": { algorithm: "concurrency", limit: 1, shadow: true },
        }),
      );
      edge.server.clearLogs();
      const key = `${tenant}/u1`;
      const answers = await Promise.all(Array.from({ length: 10 }, () => check({ policy: "principal", key, tenant })));
      assert.ok(answers.every((a) => a.body.allowed && a.body.decisions[0].allowed && a.body.decisions[0].shadow));
      const wouldRefuse = answers.filter((a) => a.body.decisions[0].retry_after_ms > 0);
      assert.equal(wouldRefuse.length, 7, "counted: the fourth and later would have been refused");
      const logged = edge.server.getLogs().filter((l) => l.message.includes("shadow policy principal would refuse"));
      assert.equal(logged.length, 7, "each would-be refusal is logged");

      const calls = { policy: "tenant-calls", key: tenant, tenant };
      assert.equal((await lease("acquire", { ...calls, lease_id: "c1" })).body.decision.allowed, true);
      const over = await lease("acquire", { ...calls, lease_id: "c2" });
      assert.equal(over.body.decision.allowed, true, "shadow never denies a call");
      assert.ok(over.body.decision.retry_after_ms > 0, "but says it would have");
      assert.ok(over.body.lease, "and the live call holds a lease");
    });

    test("plan and tenant overrides apply, tenant first", async () => {
      const plan = fresh("plan");
      const tenant = fresh("t-over");
      await kv.put(
        `policies:plan:${plan}`,
        JSON.stringify({ principal: { algorithm: "gcra", limit: 600, period_ms: 60_000 } }),
      );
      const planOnly = await check({ policy: "principal", key: `${fresh("x")}/u`, plan });
      assert.equal(planOnly.body.decisions[0].limit, 600);
      await kv.put(
        `policies:tenant:${tenant}`,
        JSON.stringify({ principal: { algorithm: "gcra", limit: 5, period_ms: 60_000 } }),
      );
      const tenantFirst = await check({ policy: "principal", key: `${tenant}/u`, plan, tenant });
      assert.equal(tenantFirst.body.decisions[0].limit, 5);
    });

    test("a malformed policy is logged clearly and the next level applies", async () => {
      const tenant = fresh("t-bad");
      await kv.put(
        `policies:tenant:${tenant}`,
        JSON.stringify({ principal: { algorithm: "gcra", limit: 0, period_ms: 60_000 } }),
      );
      edge.server.clearLogs();
      const answer = await check({ policy: "principal", key: `${tenant}/u`, tenant });
      assert.equal(answer.status, 200);
      assert.equal(answer.body.decisions[0].limit, 60, "the built-in default");
      const line = edge.server.getLogs().find((l) => l.message.includes("malformed"));
      assert.ok(line, "a log line names the problem");
      assert.match(line.message, new RegExp(`policy "principal" in KV policies:tenant:${tenant} is malformed`));
      assert.match(line.message, /`limit` = 0 is outside 1\.\.=/);

      const broken = fresh("t-broken");
      await kv.put(`policies:tenant:${broken}`, "{not json");
      const fallback = await check({ policy: "principal", key: `${broken}/u`, tenant: broken });
      assert.equal(fallback.body.decisions[0].limit, 60);
    });

    test("a policy defined only in KV can be checked; an unknown one is a 400", async () => {
      const tenant = fresh("t-turns");
      await kv.put(
        `policies:tenant:${tenant}`,
        JSON.stringify({ turns: { algorithm: "sliding_window", limit: 50, window_ms: 60_000 } }),
      );
      const turns = await check({ policy: "turns", key: `${tenant}/call-1`, tenant, cost: 10 });
      assert.equal(turns.body.decisions[0].remaining, 40);
      const unknown = await check({ policy: "turns", key: "k" });
      assert.equal(unknown.status, 400);
      assert.equal(unknown.body.error.code, "unknown_policy");
    });
  });

  describe("bad input", () => {
    const cases = [
      ["missing key", { checks: [{ policy: "ip" }] }, 400, "missing_key"],
      ["missing policy", { checks: [{ key: "k" }] }, 400, "missing_policy"],
      ["unknown policy", { checks: [{ policy: "nope", key: "k" }] }, 400, "unknown_policy"],
      ["invalid policy name", { checks: [{ policy: "IP:x", key: "k" }] }, 400, "invalid_policy_name"],
      ["absurd cost", { checks: [{ policy: "ip", key: "k", cost: 1e12 }] }, 400, "cost_too_large"],
      ["cost above the policy", { checks: [{ policy: "ip", key: "k", cost: 101 }] }, 400, "cost_exceeds_capacity"],
      ["negative cost", { checks: [{ policy: "ip", key: "k", cost: -1 }] }, 400, "invalid_cost"],
      ["key too long", { checks: [{ policy: "ip", key: "k".repeat(513) }] }, 400, "key_too_long"],
      ["no checks", { checks: [] }, 400, "no_checks"],
      ["too many checks", { checks: Array(9).fill({ policy: "ip", key: "k" }) }, 400, "too_many_checks"],
      ["a rate check on a lease policy", { checks: [{ policy: "tenant-calls", key: "t" }] }, 400, "wrong_policy_kind"],
      ["a bad tenant", { checks: [{ policy: "ip", key: "k", tenant: "a b" }] }, 400, "invalid_scope"],
      ["not JSON", "{", 400, "invalid_json"],
      ["too large", JSON.stringify({ checks: [{ policy: "ip", key: "k".repeat(20_000) }] }), 413, "body_too_large"],
    ];
    for (const [name, body, status, code] of cases) {
      test(`${name}: ${status} ${code}`, async () => {
        const answer = await post("/check", body);
        assert.equal(answer.status, status, JSON.stringify(answer.body));
        assert.equal(answer.body.error.code, code);
        assert.ok(answer.body.error.request_id.length > 0);
      });
    }

    test("a bad lease id is a 400; wrong method 405; unknown route 404", async () => {
      const bad = await lease("acquire", { policy: "tenant-calls", key: "t", lease_id: "a b" });
      assert.equal(bad.status, 400);
      assert.equal(bad.body.error.code, "invalid_lease_id");
      const get = await limiter.fetch("https://rate-limiter/check");
      assert.equal(get.status, 405);
      assert.equal((await json(get)).error.code, "method_not_allowed");
      const nowhere = await post("/nowhere", {});
      assert.equal(nowhere.status, 404);
    });

    test("the hop's request id is kept", async () => {
      const response = await limiter.fetch("https://rate-limiter/check", {
        method: "POST",
        headers: { "x-request-id": "hop-7" },
        body: "{}",
      });
      assert.equal((await json(response)).error.request_id, "hop-7");
    });
  });

  describe("checks sent straight to an object (voice-router's RATE_LIMITER_OBJECTS)", () => {
    /** Posts `body` to the object named `name` (by default the one for the check's key). */
    async function direct(body, name = objectName(body.policy, body.key)) {
      const env = await limiter.getEnv();
      const response = await env.RATE_LIMITER.getByName(name).fetch("https://rate-limiter.object/check", {
        method: "POST",
        body: typeof body === "string" ? body : JSON.stringify(body),
      });
      return { status: response.status, body: await json(response) };
    }

    test("the object resolves the tenant's policy from KV, answers it with the decision, and counts with /check", async () => {
      const tenant = fresh("t-direct");
      const policy = { algorithm: "gcra", limit: 1, period_ms: 3_600_000, burst: 3 };
      await kv.put(`policies:tenant:${tenant}`, JSON.stringify({ principal: policy }));
      const principal = { policy: "principal", key: `${tenant}/u1`, tenant, plan: "pro" };
      const first = await direct(principal);
      assert.equal(first.status, 200, JSON.stringify(first.body));
      assert.deepEqual(
        { allowed: first.body.decision.allowed, remaining: first.body.decision.remaining, limit: first.body.decision.limit },
        { allowed: true, remaining: 2, limit: 3 },
      );
      assert.deepEqual(first.body.policy, { ...policy, shadow: false, failure_mode: "open" }, "the policy the object applied");
      // The Worker's /check names the same object: one count for both paths.
      const viaWorker = await check({ ...principal, cost: 2 });
      assert.equal(viaWorker.body.decisions[0].remaining, 0);
      const refused = await direct(principal);
      assert.equal(refused.status, 200);
      assert.equal(refused.body.decision.allowed, false);
      assert.ok(refused.body.decision.retry_after_ms > 3_500_000, refused.body.decision.retry_after_ms);
    });

    test("a caller keyed with another secret reaches another object, which refuses: 400 wrong_object, logged", async () => {
      edge.server.clearLogs();
      const key = fresh("198.51.100");
      const otherName = createHmac("sha256", "another-secret-of-enough-length").update(`ip:${key}`).digest("hex");
      const answer = await direct({ policy: "ip", key }, otherName);
      assert.equal(answer.status, 400, JSON.stringify(answer.body));
      assert.equal(answer.body.error.code, "wrong_object");
      assert.match(answer.body.error.message, /RATE_LIMIT_KEY_SECRET/);
      assert.ok(edge.server.getLogs().some((l) => /not named for its policy and key/.test(l.message)));
      // Nothing was counted on the right object either.
      assert.equal((await check({ policy: "ip", key, cost: 0 })).body.decisions[0].remaining, 100);
    });

    const cases = [
      ["not JSON", "{", "invalid_json"],
      ["no policy", { key: "k" }, "missing_policy"],
      ["an unknown policy", { policy: "nope", key: "k" }, "unknown_policy"],
      ["a concurrency policy", { policy: "tenant-calls", key: "t" }, "wrong_policy_kind"],
      ["a cost over the capacity", { policy: "ip", key: "k", cost: 101 }, "cost_exceeds_capacity"],
      ["a negative cost", { policy: "ip", key: "k", cost: -1 }, "invalid_cost"],
    ];
    for (const [what, body, code] of cases) {
      test(`${what}: 400 ${code}, as rate-limiter's /check says it`, async () => {
        const name = typeof body === "string" ? objectName("ip", "k") : undefined;
        const answer = await direct(body, name ?? objectName(body.policy ?? "", body.key));
        assert.equal(answer.status, 400, JSON.stringify(answer.body));
        assert.equal(answer.body.error.code, code);
      });
    }
  });
});

describe("rate-limiter without its secret", () => {
  let edge;
  before(async () => {
    edge = await startWorkers({ secrets: { "rate-limiter": { RATE_LIMIT_KEY_SECRET: "" } } });
  });
  after(async () => {
    await edge?.close();
  });

  test("checks are a 500 misconfigured that names nothing secret; /health still answers", async () => {
    const limiter = edge.worker("rate-limiter");
    edge.server.clearLogs();
    const response = await limiter.fetch("https://rate-limiter/check", {
      method: "POST",
      body: JSON.stringify({ checks: [{ policy: "ip", key: "k" }] }),
    });
    const body = await json(response);
    assert.equal(response.status, 500);
    assert.equal(body.error.code, "misconfigured");
    assert.ok(
      edge.server.getLogs().some((l) => l.message.includes("RATE_LIMIT_KEY_SECRET is not set")),
      "the log says what to fix",
    );
    const health = await limiter.fetch("https://rate-limiter/health");
    assert.equal(health.status, 200);
    await health.body?.cancel();
  });
});

/** The Worker whose `FaultyLimiter` objects stand in for `RateLimiter` (fixtures/faulty-limiter.mjs). */
const FAULTY_LIMITER = {
  config: {
    name: "faulty-limiter",
    main: path.join(root, "tests/e2e/fixtures/faulty-limiter.mjs"),
    compatibility_date: "2026-11-01",
    durable_objects: { bindings: [{ name: "FAULTY", class_name: "FaultyLimiter" }] },
    migrations: [{ tag: "v1", new_sqlite_classes: ["FaultyLimiter"] }],
  },
};

/**
 * rate-limiter alone, its RATE_LIMITER binding pointing at a stand-in object that fails on
 * purpose (tests/e2e/fixtures/faulty-limiter.mjs): the real object has no fault hook.
 */
async function startWithFaultyObjects(vars) {
  const bundles = process.env.WORKER_BUNDLES_DIR;
  if (!bundles) throw new Error("WORKER_BUNDLES_DIR is not set: run the tests through `make test`");
  const original = readFileSync(path.join(root, "wrangler/rate-limiter.toml"), "utf8");
  const binding = 'durable_objects.bindings = [{ name = "RATE_LIMITER", class_name = "RateLimiter" }]';
  assert.ok(original.includes(binding), "the config binds RATE_LIMITER as this test expects");
  const config = original
    .replace(
      'main = "../workers/rate-limiter/build/index.js"',
      `main = ${JSON.stringify(path.join(root, "workers/rate-limiter/build/index.js"))}`,
    )
    .replaceAll(
      binding,
      'durable_objects.bindings = [{ name = "RATE_LIMITER", class_name = "FaultyLimiter", script_name = "faulty-limiter" }]',
    );
  const dir = mkdtempSync(path.join(os.tmpdir(), "faulty-limiter-"));
  const configPath = path.join(dir, "rate-limiter.toml");
  writeFileSync(configPath, config);
  const { createTestHarness } = createRequire(path.join(root, "wrangler/package.json"))("wrangler");
  const server = createTestHarness({
    root,
    workers: [
      {
        configPath,
        env: "development",
        prebuiltWorkerDir: path.join(bundles, "rate-limiter"),
        vars,
        secrets: TEST_SECRETS["rate-limiter"],
      },
      FAULTY_LIMITER,
    ],
  });
  try {
    await server.listen();
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    server,
    limiter: server.getWorker(workerName("rate-limiter")),
    faulty: server.getWorker("faulty-limiter"),
    async close() {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe("rate-limiter when its objects fail (degraded)", () => {
  let stack;
  let kv;
  before(async () => {
    stack = await startWithFaultyObjects({ POLICY_CACHE_TTL_MS: "0", LIMITER_TIMEOUT_MS: "300" });
    kv = (await stack.limiter.getEnv()).RATE_LIMIT_KV;
  });
  after(async () => {
    await stack?.close();
  });

  async function failing(mode) {
    const response = await stack.faulty.fetch("https://faulty/mode", { method: "POST", body: mode });
    assert.equal(await response.text(), mode);
  }
  async function post(pathname, body) {
    const response = await stack.limiter.fetch(`https://rate-limiter${pathname}`, {
      method: "POST",
      body: JSON.stringify(body),
    });
    return { status: response.status, body: await json(response) };
  }

  const modes = { throw: "throws", status: "answers 500", hang: "never answers" };
  for (const [mode, what] of Object.entries(modes)) {
    test(`an object that ${what} fails open by default, marked degraded and logged`, async () => {
      await failing(mode);
      stack.server.clearLogs();
      const started = Date.now();
      const answer = await post("/check", { checks: [{ policy: "ip", key: fresh("203.0.113") }] });
      const elapsed = Date.now() - started;
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.body.allowed, true);
      const [decision] = answer.body.decisions;
      assert.deepEqual(
        { allowed: decision.allowed, degraded: decision.degraded, retry: decision.retry_after_ms, policy: decision.policy },
        { allowed: true, degraded: true, retry: 0, policy: "ip" },
      );
      if (mode === "hang") assert.ok(elapsed >= 250 && elapsed < 5_000, `waited the 300 ms deadline, took ${elapsed} ms`);
      const cause = { throw: /storage unavailable/, status: /answered 500: storage unavailable/, hang: /no answer within 300 ms/ }[mode];
      const logs = stack.server.getLogs().map((l) => l.message);
      assert.ok(
        logs.some((m) => /rate limiter object [0-9a-f]{12} for policy ip failed/.test(m) && cause.test(m) && /failing open/.test(m)),
        JSON.stringify(logs),
      );
    });
  }

  test("fail closed: checks refused with a retry, acquisitions refused, releases degraded", async () => {
    await failing("throw");
    const tenant = fresh("t-closed");
    await kv.put(
      `policies:tenant:${tenant}`,
      JSON.stringify({
        principal: { algorithm: "gcra", limit: 60, period_ms: 60_000, failure_mode: "closed" },
        "tenant-calls": { algorithm: "concurrency", limit: 3, failure_mode: "closed" },
      }),
    );
    const answer = await post("/check", {
      checks: [{ policy: "principal", key: `${tenant}/u1`, tenant }, { policy: "ip", key: fresh("ip") }],
    });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.allowed, false);
    const [principal, ip] = answer.body.decisions;
    assert.deepEqual(
      { allowed: principal.allowed, degraded: principal.degraded, retry: principal.retry_after_ms },
      { allowed: false, degraded: true, retry: 1_000 },
    );
    assert.equal(ip.allowed, true, "the default policy fails open");

    const calls = { policy: "tenant-calls", key: tenant, tenant, lease_id: "CA1" };
    const acquired = await post("/leases/acquire", calls);
    assert.equal(acquired.status, 200);
    assert.equal(acquired.body.decision.allowed, false);
    assert.equal(acquired.body.decision.degraded, true);
    assert.equal(acquired.body.lease, undefined);
    const renewed = await post("/leases/renew", calls);
    assert.equal(renewed.body.decision.allowed, false);
    assert.equal(renewed.body.decision.degraded, true);
    assert.deepEqual((await post("/leases/release", calls)).body, { released: false, degraded: true });
  });

  test("a shadow policy never denies, even degraded and failing closed", async () => {
    await failing("throw");
    const tenant = fresh("t-shadow-closed");
    await kv.put(
      `policies:tenant:${tenant}`,
      JSON.stringify({ principal: { algorithm: "gcra", limit: 1, period_ms: 60_000, shadow: true, failure_mode: "closed" } }),
    );
    const answer = await post("/check", { checks: [{ policy: "principal", key: `${tenant}/u`, tenant }] });
    assert.equal(answer.body.allowed, true);
    assert.equal(answer.body.decisions[0].degraded, true);
    assert.equal(answer.body.decisions[0].shadow, true);
  });
});

/**
 * voice-router's own side of the checks it sends straight to the objects: what it does when
 * its key is not rate-limiter's, when it has none, and when the objects fail. The happy path,
 * exact limits through the public entry, is voice.test.mjs's and read.test.mjs's.
 */
describe("voice-router's checks sent straight to the objects", () => {
  /** The messages of the stack's log lines so far. */
  const messages = (edge) => edge.server.getLogs().map((l) => l.message);

  test("keyed with another secret: every object refuses (wrong_object), voice-router logs it and does not limit", async () => {
    const other = "another-rate-limit-key-secret-0123456789";
    const edge = await startWorkers({ secrets: { "voice-router": { RATE_LIMIT_KEY_SECRET: other } } });
    try {
      edge.server.clearLogs();
      const response = await fetch(`${edge.url}/health`);
      await response.arrayBuffer();
      assert.notEqual(response.status, 429);
      assert.notEqual(response.status, 500);
      assert.equal(response.headers.get("ratelimit-policy"), null, "no decision to advertise");
      const logs = messages(edge);
      assert.ok(
        logs.some((m) => /rate limiter object [0-9a-f]{12} refused the check itself: 400 wrong_object/.test(m)),
        JSON.stringify(logs),
      );
      assert.ok(!logs.some((m) => m.includes(other)), "the secret is never logged");
    } finally {
      await edge.close();
    }
  });

  test("bound without RATE_LIMIT_KEY_SECRET: 500 misconfigured, and the log says what to set", async () => {
    const edge = await startWorkers({ secrets: { "voice-router": { RATE_LIMIT_KEY_SECRET: "" } } });
    try {
      edge.server.clearLogs();
      const response = await fetch(`${edge.url}/health`);
      const body = await json(response);
      assert.equal(response.status, 500);
      assert.equal(body.error.code, "misconfigured");
      assert.ok(
        messages(edge).some((m) => /RATE_LIMITER_OBJECTS is bound but RATE_LIMIT_KEY_SECRET is not set/.test(m)),
        JSON.stringify(messages(edge)),
      );
    } finally {
      await edge.close();
    }
  });

  describe("when the objects fail (degraded)", () => {
    let edge;
    let config;
    before(async () => {
      config = rewrittenConfig("voice-router", [
        [
          '{ name = "RATE_LIMITER_OBJECTS", class_name = "RateLimiter", script_name = "rate-limiter-development" }',
          '{ name = "RATE_LIMITER_OBJECTS", class_name = "FaultyLimiter", script_name = "faulty-limiter" }',
        ],
      ]);
      edge = await startWorkers({
        vars: { "voice-router": { LIMITER_TIMEOUT_MS: "300" } },
        configs: { "voice-router": config.path },
        extra: [FAULTY_LIMITER],
      });
    });
    after(async () => {
      await edge?.close();
      config?.remove();
    });

    async function failing(mode) {
      const response = await edge.server.getWorker("faulty-limiter").fetch("https://faulty/mode", { method: "POST", body: mode });
      assert.equal(await response.text(), mode);
    }

    const modes = { throw: "throws", status: "answers 500", hang: "never answers" };
    for (const [mode, what] of Object.entries(modes)) {
      test(`an object that ${what}: the built-in policy's failure mode (open) before any answer, logged`, async () => {
        await failing(mode);
        edge.server.clearLogs();
        const started = Date.now();
        const response = await fetch(`${edge.url}/health`);
        await response.arrayBuffer();
        const elapsed = Date.now() - started;
        assert.notEqual(response.status, 429);
        if (mode === "hang") assert.ok(elapsed >= 250, `waited the 300 ms deadline, took ${elapsed} ms`);
        const cause = { throw: /storage unavailable/, status: /answered 500: storage unavailable/, hang: /no answer within 300 ms/ }[mode];
        assert.ok(
          messages(edge).some((m) => /rate limiter object [0-9a-f]{12} for policy ip failed/.test(m) && cause.test(m) && /failing open/.test(m)),
          JSON.stringify(messages(edge)),
        );
      });
    }

    test("once an object has answered with a policy that fails closed, its failure is a 429 with a retry", async () => {
      await failing("closed");
      const allowed = await fetch(`${edge.url}/health`);
      await allowed.arrayBuffer();
      assert.notEqual(allowed.status, 429);
      assert.match(allowed.headers.get("ratelimit-policy") ?? "", /"ip";q=50/, "the object's answer is advertised");
      await failing("throw");
      edge.server.clearLogs();
      const refused = await fetch(`${edge.url}/health`);
      const body = await json(refused);
      assert.equal(refused.status, 429, JSON.stringify(body));
      assert.equal(body.error.code, "rate_limited");
      assert.equal(refused.headers.get("retry-after"), "1");
      assert.ok(messages(edge).some((m) => /for policy ip failed .*failing closed/.test(m)), JSON.stringify(messages(edge)));
    });
  });
});
