// The edge as the workerd benchmarks run it: the four release Workers (and the plain-JS
// baseline Worker) as capnp services with their vars, KV stand-ins, Durable Object storage on
// tmpfs and service bindings, and a client's credential. Shared by edge.bench.mjs and
// voice.bench.mjs so both measure the same edge.

import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createHmac } from "node:crypto";
import os from "node:os";
import path from "node:path";
import { EDGE_SIGNING_SECRET, SEED_REGIONS } from "../e2e/harness.mjs";
import { Client, bundleDir, bundleModules, capnp, compatibilityDate, kvSource, root, startWorkerd } from "./workerd.mjs";

export const WORKERS = ["voice-router", "auth-validator", "rate-limiter", "geo-router"];
export const TENANT = "bench";
const ISSUER = "https://auth.aybiza.dev";
const AUDIENCE = "aybiza-edge";
const HS256_SECRET = "bench-only-hs256-secret-0123456789abcdef";
/** A caller in New York: us-east-1 by the seed's region-code map. */
export const CF = JSON.stringify({ country: "US", regionCode: "NY", continent: "NA", latitude: "40.71", longitude: "-74.01", colo: "EWR" });
/** Limits raised so no benchmark request is refused. */
const POLICIES = {
  ip: { algorithm: "sliding_window", limit: 1_000_000, window_ms: 60_000 },
  principal: { algorithm: "gcra", limit: 1_000_000, period_ms: 60_000, burst: 1_000_000 },
  "tenant-calls": { algorithm: "concurrency", limit: 10_000, lease_ttl_ms: 60_000 },
};

const b64url = (data) => Buffer.from(data).toString("base64url");
/** An HS256 JWT of `subject` in the bench tenant, as auth-validator is configured to accept. */
export function jwt(subject, scope = "agents:admin") {
  const now = Math.floor(Date.now() / 1000);
  const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const claims = b64url(JSON.stringify({ iss: ISSUER, aud: AUDIENCE, sub: subject, tenant_id: TENANT, scope, iat: now, exp: now + 3600 }));
  return `${header}.${claims}.${createHmac("sha256", HS256_SECRET).update(`${header}.${claims}`).digest("base64url")}`;
}

const RATE_LIMIT_KEY_SECRET = "bench-only-rate-limit-key-secret-0123";
const DEV_VARS = {
  "voice-router": (originUrl) => ({ ORIGIN_URL: originUrl, EDGE_SIGNING_SECRET, RATE_LIMIT_KEY_SECRET, LIMITER_TIMEOUT_MS: "1000" }),
  "auth-validator": () => ({
    JWT_ISSUER: ISSUER,
    JWT_AUDIENCE: AUDIENCE,
    JWT_DEFAULT_PLAN: "pro",
    JWT_HS256_SECRET: HS256_SECRET,
    SESSION_TOKEN_SECRET: "bench-only-session-token-secret-0123456789",
  }),
  "rate-limiter": () => ({ RATE_LIMIT_KEY_SECRET, POLICY_CACHE_TTL_MS: "60000", LIMITER_TIMEOUT_MS: "1000" }),
  "geo-router": (originUrl) => ({ GEO_REGIONS: JSON.stringify(Object.fromEntries(SEED_REGIONS.map((r) => [r, { origin_url: originUrl }]))) }),
};
const KV = {
  "auth-validator": ["AUTH_KV", []],
  "rate-limiter": ["RATE_LIMIT_KV", [["policies:global", JSON.stringify(POLICIES)]]],
  "geo-router": ["GEO_KV", []],
};
const OBJECTS = { "voice-router": ["CALL_SESSION", "CallSession"], "rate-limiter": ["RATE_LIMITER", "RateLimiter"] };
const SERVICES = { AUTH: "auth-validator", RATE_LIMITER: "rate-limiter", GEO_ROUTER: "geo-router" };

const textBindings = (vars) => Object.entries(vars).map(([name, value]) => `(name = ${capnp(name)}, text = ${capnp(value)})`);

/**
 * The capnp service entries of one Rust Worker (its KV stand-in and storage included); `bind`
 * names the service each of voice-router's bindings reaches. `name` runs a second copy under
 * another service name; `objects: false` leaves voice-router without RATE_LIMITER_OBJECTS (its
 * checks then go through rate-limiter's /check).
 */
export function rustWorker(worker, dir, originUrl, bind = (service) => service, { name = worker, objects = true } = {}) {
  const entries = [];
  const bindings = textBindings(DEV_VARS[worker](originUrl));
  const extra = [];
  if (KV[worker]) {
    const [binding, seed] = KV[worker];
    writeFileSync(path.join(dir, `kv-${worker}.js`), kvSource(seed));
    bindings.push(`(name = ${capnp(binding)}, kvNamespace = ${capnp(`kv-${worker}`)})`);
    entries.push(`(name = ${capnp(`kv-${worker}`)}, worker = (modules = [(name = "kv.js", esModule = embed ${capnp(`kv-${worker}.js`)})], compatibilityDate = ${capnp(compatibilityDate(worker))}))`);
  }
  if (OBJECTS[worker]) {
    const [binding, className] = OBJECTS[worker];
    bindings.push(`(name = ${capnp(binding)}, durableObjectNamespace = ${capnp(className)})`);
    extra.push(`durableObjectNamespaces = [(className = ${capnp(className)}, uniqueKey = ${capnp(`${name}-bench`)}, enableSql = true)]`);
    extra.push(`durableObjectStorage = (localDisk = "storage")`);
  }
  if (worker === "voice-router") {
    for (const [binding, service] of Object.entries(SERVICES)) bindings.push(`(name = ${capnp(binding)}, service = ${capnp(bind(service))})`);
    // rate-limiter's RateLimiter namespace, as wrangler/voice-router.toml binds it, when
    // rate-limiter runs in the same workerd (a namespace cannot be bound across processes;
    // without it voice-router checks through rate-limiter's /check).
    const [, className] = OBJECTS["rate-limiter"];
    if (objects && bind("rate-limiter") === "rate-limiter") bindings.push(`(name = "RATE_LIMITER_OBJECTS", durableObjectNamespace = (className = ${capnp(className)}, serviceName = ${capnp(bind("rate-limiter"))}))`);
    extra.push(`globalOutbound = "origin"`);
  }
  entries.push(`(name = ${capnp(name)}, worker = (
      modules = [
        ${bundleModules(bundleDir(worker), dir, name)}
      ],
      compatibilityDate = ${capnp(compatibilityDate(worker))},
      bindings = [
        ${bindings.join(",\n        ")}
      ],
      ${extra.join(",\n      ")}
    ))`);
  return entries;
}

/** The JS baseline Worker as a service named `name`, in `mode` (see tests/bench/edge-js-worker.js). */
export function jsWorker(name, mode, dir, originUrl, bind = (service) => service) {
  copyFileSync(path.join(root, "tests/bench/edge-js-worker.js"), path.join(dir, "edge-js-worker.js"));
  const bindings = textBindings({ MODE: mode, ORIGIN_URL: originUrl, EDGE_SIGNING_SECRET });
  if (mode !== "proxy") {
    for (const [binding, service] of Object.entries(SERVICES)) bindings.push(`(name = ${capnp(binding)}, service = ${capnp(bind(service))})`);
  }
  if (mode === "warm-direct") {
    // The rate-limiter script's own RateLimiter namespace, as a cross-script binding would be.
    const [, className] = OBJECTS["rate-limiter"];
    bindings.push(`(name = "LIMITER_OBJECTS", durableObjectNamespace = (className = ${capnp(className)}, serviceName = "rate-limiter"))`);
    bindings.push(...textBindings({ RATE_LIMIT_KEY_SECRET }));
  }
  return `(name = ${capnp(name)}, worker = (
      modules = [(name = "worker.js", esModule = embed "edge-js-worker.js")],
      compatibilityDate = ${capnp(compatibilityDate("voice-router"))},
      bindings = [
        ${bindings.join(",\n        ")}
      ],
      globalOutbound = "origin",
    ))`;
}

/**
 * The plain-JS relay floor (tests/bench/voice-js-relay.js) as a service named `name`: a Worker
 * and its `JsRelay` Durable Object on the same storage as the Rust objects, reaching the origin
 * through the `origin` service as voice-router does.
 */
export function jsRelay(name, dir) {
  copyFileSync(path.join(root, "tests/bench/voice-js-relay.js"), path.join(dir, "voice-js-relay.js"));
  return `(name = ${capnp(name)}, worker = (
      modules = [(name = "relay.js", esModule = embed "voice-js-relay.js")],
      compatibilityDate = ${capnp(compatibilityDate("voice-router"))},
      bindings = [(name = "RELAY", durableObjectNamespace = "JsRelay")],
      durableObjectNamespaces = [(className = "JsRelay", uniqueKey = ${capnp(`${name}-bench`)}, enableSql = true)],
      durableObjectStorage = (localDisk = "storage"),
      globalOutbound = "origin",
    ))`;
}

export const externalService = (name, port) => `(name = ${capnp(name)}, external = (address = ${capnp(`127.0.0.1:${port}`)}, http = ()))`;

function writeConfig(dir, services, sockets) {
  const storage = mkdtempSync(path.join(existsSync("/dev/shm") ? "/dev/shm" : os.tmpdir(), "edge-bench-objects-"));
  services.push(`(name = "storage", disk = (path = ${capnp(storage)}, writable = true))`);
  const socketList = sockets.map(
    ({ name, port, service }) => `(name = ${capnp(name)}, address = ${capnp(`127.0.0.1:${port}`)}, http = (cfBlobHeader = "cf-blob"), service = ${capnp(service)})`,
  );
  writeFileSync(
    path.join(dir, "config.capnp"),
    `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    ${services.join(",\n    ")}
  ],
  sockets = [
    ${socketList.join(",\n    ")}
  ],
);
`,
  );
  writeFileSync(path.join(dir, "storage-path"), storage);
  return path.join(dir, "config.capnp");
}

/** Starts a workerd serving `sockets`; resolves once each answers HTTP. */
export async function workerd(name, build, sockets, inspectorPort) {
  const probes = sockets.map(({ port }) => new Client(port, 1));
  const handle = await startWorkerd({
    name: `edge-bench-${name}`,
    inspectorPort,
    write: (dir) => writeConfig(dir, build(dir), sockets),
    ready: async () => (await Promise.all(probes.map((p) => p.request("GET", "/__ready").then(() => true)))).every(Boolean),
  });
  for (const probe of probes) probe.close();
  const stop = handle.stop;
  handle.stop = async () => {
    const storage = readFileSync(path.join(handle.dir, "storage-path"), "utf8");
    await stop();
    rmSync(storage, { recursive: true, force: true });
  };
  return handle;
}
