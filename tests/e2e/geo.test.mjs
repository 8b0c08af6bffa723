// geo-router as voice-router meets it: callers from every seed country and region code land
// where the seed says (through the JSON body and through request.cf), unlisted countries go to
// the nearest region, the Cron Trigger moves traffic away from a stopped origin and back after
// hysteresis, reports are bounded, every-region-down still answers, bad input and bad config fail
// as JSON.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { once } from "node:events";
import { closedPortUrl, geoRegions, json, SEED_REGIONS, startOrigin, startWorkers } from "./harness.mjs";

// The seed (ARCHITECTURE.md, "Seed facts to honour"), restated here as the expectation.
const SEED_REGION_CODES = {
  "US-CA": "us-west-2", "US-WA": "us-west-2", "US-OR": "us-west-2",
  "US-TX": "us-east-1", "US-FL": "us-east-1", "US-NY": "us-east-1", "US-VA": "us-east-1",
  "CA-ON": "us-east-1", "CA-QC": "us-east-1",
  "GB-ENG": "eu-west-2", "IE-L": "eu-west-2",
  "DE-HE": "eu-central-1", "NL-NH": "eu-central-1", "FR-IDF": "eu-central-1",
  "SE-AB": "eu-north-1", "NO-03": "eu-north-1", "DK-84": "eu-north-1",
  "SG-01": "ap-southeast-1", "MY-14": "ap-southeast-1",
  "JP-13": "ap-northeast-1", "KR-11": "ap-northeast-1",
  "AU-NSW": "ap-southeast-2", "AU-VIC": "ap-southeast-2",
  "BR-SP": "sa-east-1", "AR-C": "sa-east-1", "CL-RM": "sa-east-1",
};
const SEED_COUNTRIES = { US: "us-east-1", CA: "us-east-1", GB: "eu-west-2", DE: "eu-west-2", FR: "eu-west-2" };

// A point in the South Pacific, far from every region: a distance rule cannot agree with the
// tables by accident.
const NOWHERE = { latitude: "-48.9", longitude: "-123.4" };
const CALIFORNIAN = { country: "US", region_code: "CA", latitude: 37.77, longitude: -122.42 };

/** POST /v1/route straight to geo-router, as voice-router's service binding would. */
async function route(geo, body, init = {}) {
  const response = await geo.fetch("https://geo-router/v1/route", {
    method: "POST",
    body: body === undefined ? undefined : JSON.stringify(body),
    ...init,
  });
  return { status: response.status, body: await json(response), headers: response.headers };
}

async function report(geo, region, client) {
  const response = await geo.fetch("https://geo-router/v1/report", {
    method: "POST",
    body: JSON.stringify({ region, client }),
  });
  return { status: response.status, body: await json(response) };
}

async function regions(geo) {
  const response = await geo.fetch("https://geo-router/v1/regions");
  const body = await json(response);
  assert.equal(response.status, 200, JSON.stringify(body));
  return Object.fromEntries(body.regions.map((region) => [region.region, region]));
}

async function cron(geo) {
  const result = await geo.scheduled({ cron: "* * * * *" });
  assert.equal(result.outcome, "ok");
}

const where = ({ body }) => [body.region, body.reason];

describe("geo-router places callers by the seed's tables", () => {
  let origin;
  let edge;
  let geo;
  before(async () => {
    origin = await startOrigin();
    edge = await startWorkers({ originUrl: origin.url });
    geo = edge.worker("geo-router");
  });
  after(async () => {
    await edge?.close();
    await origin?.stop();
  });

  test("every seed region-code row, in the body as voice-router sends it", async () => {
    for (const [key, expected] of Object.entries(SEED_REGION_CODES)) {
      const [country, code] = key.split("-");
      const answer = await route(geo, { caller: { country, region_code: code, ...NOWHERE } });
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.deepEqual(where(answer), [expected, "region-code"], key);
      assert.equal(answer.body.origin_url, origin.url);
      assert.equal(answer.body.healthy, true);
    }
  });

  test("every seed region-code row, from the request's own request.cf", async () => {
    for (const [key, expected] of Object.entries(SEED_REGION_CODES)) {
      const [country, regionCode] = key.split("-");
      const answer = await route(geo, undefined, { cf: { country, regionCode, ...NOWHERE } });
      assert.deepEqual(where(answer), [expected, "region-code"], key);
    }
  });

  test("every seed country row, with a region code the finer map does not list", async () => {
    for (const [country, expected] of Object.entries(SEED_COUNTRIES)) {
      const viaBody = await route(geo, { caller: { country, regionCode: "ZZZ", ...NOWHERE } });
      assert.deepEqual(where(viaBody), [expected, "country"], `${country} (body)`);
      const viaCf = await route(geo, {}, { cf: { country, regionCode: "ZZZ", ...NOWHERE } });
      assert.deepEqual(where(viaCf), [expected, "country"], `${country} (cf)`);
    }
  });

  test("the MF-CF-Blob header carries request.cf too", async () => {
    const answer = await route(geo, undefined, {
      headers: { "MF-CF-Blob": JSON.stringify({ country: "JP", regionCode: "13", ...NOWHERE }) },
    });
    assert.deepEqual(where(answer), ["ap-northeast-1", "region-code"]);
  });

  test("unlisted countries go to the nearest region by great-circle distance", async () => {
    const cases = [
      ["IN", "19.08", "72.88", "ap-southeast-1"], // Mumbai
      ["CZ", "50.08", "14.44", "eu-central-1"], // Prague
      ["FI", "60.17", "24.94", "eu-north-1"], // Helsinki
      ["NZ", "-36.85", "174.76", "ap-southeast-2"], // Auckland
      ["PE", "-12.05", "-77.04", "sa-east-1"], // Lima
      ["MX", "19.43", "-99.13", "us-east-1"], // Mexico City
    ];
    for (const [country, latitude, longitude, expected] of cases) {
      const answer = await route(geo, undefined, { cf: { country, regionCode: "XX", latitude, longitude } });
      assert.deepEqual(where(answer), [expected, "nearest"], country);
      assert.equal(answer.body.fallbacks.length, SEED_REGIONS.length - 1);
    }
  });

  test("without coordinates the continent decides, then the default", async () => {
    const cases = [
      [{ country: "IN", continent: "AS" }, "ap-southeast-1", "continent"],
      [{ country: "KE", continent: "AF" }, "eu-west-2", "continent"],
      [{ country: "AQ", continent: "AN" }, "us-east-1", "default"],
      [{}, "us-east-1", "default"],
    ];
    for (const [caller, expected, reason] of cases) {
      assert.deepEqual(where(await route(geo, { caller })), [expected, reason], JSON.stringify(caller));
    }
  });

  test("a pinned call stays on its region", async () => {
    const answer = await route(geo, { caller: CALIFORNIAN, pin: "eu-north-1" });
    assert.deepEqual(where(answer), ["eu-north-1", "pinned"]);
    assert.deepEqual(answer.body.fallbacks.slice(0, 2).map((f) => f.region), ["us-west-2", "us-east-1"]);
  });

  test("GET /v1/regions lists every region with its config before any probe", async () => {
    const table = await regions(geo);
    assert.deepEqual(Object.keys(table).sort(), [...SEED_REGIONS].sort());
    assert.equal(table["us-west-2"].bedrock_region, "us-east-1");
    assert.equal(table["eu-central-1"].bedrock_region, "eu-west-1");
    assert.equal(table["ap-northeast-1"].bedrock_region, "ap-northeast-1");
    assert.equal(table["us-east-1"].state, "unknown");
    assert.equal(table["us-east-1"].healthy, true);
  });

  test("bad requests are JSON errors carrying the request id", async () => {
    const cases = [
      [{ method: "POST", body: "{not json" }, "/v1/route", 400, "invalid_request"],
      [{ method: "POST", body: JSON.stringify({ caller: "US" }) }, "/v1/route", 400, "invalid_request"],
      [{ method: "POST", body: JSON.stringify({ pin: "x".repeat(20_000) }) }, "/v1/route", 413, "payload_too_large"],
      [{ method: "GET" }, "/v1/route", 405, "method_not_allowed"],
      [{ method: "POST", body: JSON.stringify({ region: "us-east-1" }) }, "/v1/report", 400, "invalid_request"],
      [{ method: "POST", body: JSON.stringify({ region: "us-east-1", client: "" }) }, "/v1/report", 400, "invalid_request"],
      [{ method: "POST", body: JSON.stringify({ region: "mars-1", client: "t1" }) }, "/v1/report", 400, "unknown_region"],
      [{ method: "DELETE" }, "/v1/regions", 405, "method_not_allowed"],
      [{ method: "GET" }, "/v2/route", 404, "not_found"],
    ];
    for (const [init, path, status, code] of cases) {
      const response = await geo.fetch(`https://geo-router${path}`, {
        ...init,
        headers: { "x-request-id": "hop-7" },
      });
      const body = await json(response);
      assert.equal(response.status, status, `${init.method} ${path}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, code);
      assert.equal(body.error.request_id, "hop-7");
    }
  });

  test("one client cannot take a region down; distinct clients can, until the next good probe", async () => {
    await cron(geo); // every region up

    for (let i = 0; i < 5; i++) {
      const answer = await report(geo, "us-west-2", "tenant-noisy");
      assert.equal(answer.status, 200, JSON.stringify(answer.body));
      assert.equal(answer.body.outcome, i === 0 ? "counted" : "duplicate");
      assert.equal(answer.body.state, "up");
    }
    assert.deepEqual(where(await route(geo, { caller: CALIFORNIAN })), ["us-west-2", "region-code"]);

    assert.equal((await report(geo, "us-west-2", "tenant-b")).body.outcome, "counted");
    const third = await report(geo, "us-west-2", "tenant-c");
    assert.deepEqual(
      [third.body.outcome, third.body.state, third.body.threshold],
      ["marked_down", "reported_down", 3],
    );
    assert.equal((await report(geo, "us-west-2", "tenant-d")).body.outcome, "already_down");

    const moved = await route(geo, { caller: CALIFORNIAN });
    assert.deepEqual(where(moved), ["us-east-1", "failover"]);
    assert.deepEqual(moved.body.fallbacks.at(-1), {
      region: "us-west-2",
      origin_url: origin.url,
      bedrock_region: "us-east-1",
      healthy: false,
    });
    assert.equal((await regions(geo))["us-west-2"].state, "reported_down");
    const stored = JSON.parse(await (await geo.getEnv()).GEO_KV.get("health:v1"));
    assert.equal(stored.regions["us-west-2"].state, "reported_down", "the report reached KV");

    // The origin is in fact fine: the next probe overrules the reports.
    await cron(geo);
    assert.deepEqual(where(await route(geo, { caller: CALIFORNIAN })), ["us-west-2", "region-code"]);
  });
});

describe("failover follows the origins' health, with hysteresis", () => {
  let main;
  let west;
  let westAddr;
  let edge;
  let geo;
  before(async () => {
    main = await startOrigin();
    west = await startOrigin();
    westAddr = west.url.replace("http://", "");
    edge = await startWorkers({
      originUrl: main.url,
      vars: {
        "geo-router": {
          GEO_REGIONS: geoRegions((region) => (region === "us-west-2" ? west.url : main.url)),
          GEO_HEALTH_FALL: "2",
          GEO_HEALTH_RISE: "2",
          // Every decision reads KV, as an isolate that did not run the cron would.
          GEO_HEALTH_CACHE_MS: "0",
        },
      },
    });
    geo = edge.worker("geo-router");
  });
  after(async () => {
    await edge?.close();
    await main?.stop();
    await west?.stop();
  });

  test("a stopped origin loses its callers after two failed probes and gets them back after two good ones", async () => {
    const californian = () => route(geo, { caller: CALIFORNIAN });
    await cron(geo);
    let table = await regions(geo);
    assert.equal(table["us-west-2"].state, "up");
    assert.equal(table["us-west-2"].last_probe.status, 200);
    assert.ok(table["us-west-2"].last_probe.latency_ms >= 0);
    assert.deepEqual(where(await californian()), ["us-west-2", "region-code"]);

    await west.stop();
    await cron(geo);
    table = await regions(geo);
    assert.equal(table["us-west-2"].state, "up", "one failed probe moves nothing");
    assert.equal(table["us-west-2"].consecutive_failures, 1);
    assert.equal(table["us-west-2"].last_probe.ok, false);
    // workerd answers a refused connection with a 5xx, as Cloudflare's edge does (521).
    assert.match(table["us-west-2"].last_probe.error, /^(unreachable|answered HTTP 5\d\d)/);
    assert.deepEqual(where(await californian()), ["us-west-2", "region-code"]);

    await cron(geo);
    assert.equal((await regions(geo))["us-west-2"].state, "down");
    const moved = await californian();
    assert.deepEqual(where(moved), ["us-east-1", "failover"]);
    assert.equal(moved.body.origin_url, main.url);
    assert.equal(moved.body.healthy, true);
    assert.deepEqual(where(await route(geo, { caller: CALIFORNIAN, pin: "us-west-2" })), ["us-east-1", "failover"]);
    // Callers the seed sends elsewhere are untouched.
    assert.deepEqual(where(await route(geo, { caller: { country: "JP", region_code: "13" } })), ["ap-northeast-1", "region-code"]);

    west = await startOrigin({ LISTEN_ADDR: westAddr });
    await cron(geo);
    table = await regions(geo);
    assert.equal(table["us-west-2"].state, "down", "one good probe is not enough to come back");
    assert.equal(table["us-west-2"].consecutive_successes, 1);
    assert.deepEqual(where(await californian()), ["us-east-1", "failover"]);

    await cron(geo);
    assert.equal((await regions(geo))["us-west-2"].state, "up");
    assert.deepEqual(where(await californian()), ["us-west-2", "region-code"]);
  });

  test("a health table written to KV by another isolate steers decisions here", async () => {
    const env = await geo.getEnv();
    const table = JSON.parse(await env.GEO_KV.get("health:v1"));
    table.regions["eu-west-2"].state = "down";
    table.updated_at_ms = Date.now() + 1000;
    await env.GEO_KV.put("health:v1", JSON.stringify(table));
    const londoner = await route(geo, { caller: { country: "GB", region_code: "ENG", latitude: 51.5, longitude: -0.12 } });
    assert.deepEqual(where(londoner), ["eu-central-1", "failover"]);
  });
});

describe("when every origin is down", () => {
  let edge;
  let geo;
  let hung;
  const held = new Set();
  before(async () => {
    // Accepts connections and never answers: the probe must give up at its deadline.
    hung = net.createServer((socket) => {
      held.add(socket);
      socket.on("close", () => held.delete(socket));
    });
    hung.listen(0, "127.0.0.1");
    await once(hung, "listening");
    const hungUrl = `http://127.0.0.1:${hung.address().port}`;
    const closed = await closedPortUrl();
    edge = await startWorkers({
      vars: {
        "geo-router": {
          GEO_REGIONS: geoRegions((region) => (region === "eu-north-1" ? hungUrl : closed)),
          GEO_HEALTH_FALL: "1",
          GEO_PROBE_TIMEOUT_MS: "300",
        },
      },
    });
    geo = edge.worker("geo-router");
  });
  after(async () => {
    await edge?.close();
    for (const socket of held) socket.destroy();
    hung?.close();
  });

  test("decisions still answer, with the least bad region, flagged unhealthy", async () => {
    await cron(geo);
    const table = await regions(geo);
    for (const region of SEED_REGIONS) {
      assert.equal(table[region].state, "down", `${region}: ${JSON.stringify(table[region])}`);
      assert.equal(table[region].healthy, false);
    }
    assert.equal(table["eu-north-1"].last_probe.error, "no answer within 300 ms");
    assert.ok(table["eu-north-1"].last_probe.latency_ms >= 250, JSON.stringify(table["eu-north-1"]));

    const answer = await route(geo, { caller: CALIFORNIAN });
    assert.equal(answer.status, 200);
    assert.equal(answer.body.healthy, false);
    assert.deepEqual(where(answer), ["us-west-2", "region-code"]);
    assert.ok(answer.body.fallbacks.every((fallback) => !fallback.healthy));
  });
});

describe("geo-router's configuration", () => {
  test("the development config (TOML tables) points every seed region at the local origin", async () => {
    const edge = await startWorkers();
    try {
      const table = await regions(edge.worker("geo-router"));
      assert.deepEqual(Object.keys(table).sort(), [...SEED_REGIONS].sort());
      for (const region of Object.values(table)) {
        assert.equal(region.origin_url, "http://127.0.0.1:4000");
        assert.equal(region.enabled, true);
      }
    } finally {
      await edge.close();
    }
  });

  test("invalid vars make every decision a 500 and name each problem in the log; the cron stores nothing", async () => {
    const edge = await startWorkers({
      vars: {
        "geo-router": {
          GEO_REGIONS: JSON.stringify({ "us-east-1": { origin_url: "ftp://origin.test" } }),
          GEO_HEALTH_FALL: "0",
        },
      },
    });
    try {
      const geo = edge.worker("geo-router");
      const answer = await route(geo, {}, { headers: { "x-request-id": "cfg-1" } });
      assert.equal(answer.status, 500);
      assert.equal(answer.body.error.code, "misconfigured");
      assert.equal(answer.body.error.request_id, "cfg-1");
      assert.doesNotMatch(answer.body.error.message, /ftp|GEO_/, "causes stay in the log");
      const logs = JSON.stringify(edge.server.getLogs());
      assert.match(logs, /origin_url \\"ftp:\/\/origin.test\\"/);
      assert.match(logs, /GEO_HEALTH_FALL=\\"0\\"/);

      await cron(geo);
      assert.equal(await (await geo.getEnv()).GEO_KV.get("health:v1"), null);
      // /health is about bindings and still answers.
      assert.equal((await geo.fetch("https://geo-router/health")).status, 200);
    } finally {
      await edge.close();
    }
  });
});
