// Starts the stack as a client meets it: the origin binary on a free loopback port and the four
// built Workers in workerd (wrangler's test harness over miniflare), wired exactly as their
// wrangler configs say. Inputs come from the test command:
//   ORIGIN_BIN          the origin binary
//   WORKER_BUNDLES_DIR  `wrangler deploy --dry-run` output of the development environment
//   EMULATOR_BIN        the Bedrock emulator (tests/bedrock-emulator), for origin tests
//   DATABASE_URL, REDIS_URL  PostgreSQL and Redis the test command started (optional: without
//                       them an origin gets its own SQLite file and in-process fan-out)

import { spawn } from "node:child_process";
import { createHmac, createHash, randomUUID } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import { createRequire } from "node:module";
import { once } from "node:events";
import net from "node:net";
import { createInterface } from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
// wrangler is pinned in wrangler/package.json; resolve it (and its miniflare) from there.
const requireFromWrangler = createRequire(path.join(root, "wrangler/package.json"));
const { createTestHarness } = requireFromWrangler("wrangler");

// createTestHarness sends every outbound request of the Workers through this process's
// `globalThis.fetch` (Node's undici), which cannot upgrade to a WebSocket; a CallSession opening
// its relay socket to the origin needs exactly that. Upgrades go through miniflare's own `fetch`,
// which returns the 101 response with its socket, as workerd itself would.
const nodeFetch = globalThis.fetch;
const { fetch: upgradingFetch } = requireFromWrangler("miniflare");
globalThis.fetch = (input, init) => {
  const headers = new Headers(init?.headers ?? (input instanceof Request ? input.headers : undefined));
  return headers.get("upgrade")?.toLowerCase() === "websocket" ? upgradingFetch(input, init) : nodeFetch(input, init);
};

export const ENVIRONMENT = "development";
export const WORKERS = ["voice-router", "auth-validator", "rate-limiter", "geo-router"];
/**
 * The regions geo-router's seed tables name (ARCHITECTURE.md, "Seed facts"): a mirror of the
 * Rust const `shared::geo::config::SEED_REGIONS`, checked equal (same order) by its native test
 * `the_e2e_harness_mirrors_the_seed_regions`. Keep it one plain list of quoted names.
 */
export const SEED_REGIONS = [
  "us-east-1",
  "us-west-2",
  "eu-west-2",
  "eu-central-1",
  "eu-north-1",
  "ap-southeast-1",
  "ap-northeast-1",
  "ap-southeast-2",
  "sa-east-1",
];

/**
 * geo-router's GEO_REGIONS var: every seed region, its origin at `originFor(region)` (a URL, or
 * an object of region fields such as `{ origin_url, enabled }`).
 */
export function geoRegions(originFor) {
  const regions = {};
  for (const region of SEED_REGIONS) {
    const origin = originFor(region);
    regions[region] = typeof origin === "string" ? { origin_url: origin } : origin;
  }
  return JSON.stringify(regions);
}

/** Deployed name of a Worker in the test environment, as service bindings refer to it. */
export const workerName = (worker) => `${worker}-${ENVIRONMENT}`;

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests through \`make test\``);
  return value;
}

/**
 * The HMAC key the edge and the origin share in development and tests; the same value is in
 * wrangler/.dev.vars.example (voice-router signs with it) and tests/stack/run.sh.
 */
export const EDGE_SIGNING_SECRET = "development-only-edge-signing-secret-not-for-production";

/**
 * Per-origin isolation: its own PostgreSQL schema and Redis key prefix when the test command
 * started those servers, else its own SQLite file. Static AWS credentials, no instance metadata.
 */
function originDefaults() {
  const id = `e2e_${randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const defaults = {
    EDGE_SIGNING_SECRET,
    AWS_ACCESS_KEY_ID: "AKIDLOCALTEST",
    AWS_SECRET_ACCESS_KEY: "local-test-secret",
    AWS_EC2_METADATA_DISABLED: "true",
  };
  if (process.env.DATABASE_URL?.startsWith("postgres")) {
    defaults.DATABASE_SCHEMA = id;
  } else {
    const dir = mkdtempSync(path.join(os.tmpdir(), "aybiza-origin-"));
    defaults.DATABASE_URL = `sqlite://${path.join(dir, "origin.sqlite3")}?mode=rwc`;
    Object.defineProperty(defaults, "cleanup", { value: () => rmSync(dir, { recursive: true, force: true }) });
  }
  if (process.env.REDIS_URL) defaults.REDIS_KEY_PREFIX = `${id}:`;
  return defaults;
}

/** Starts the origin; resolves once it logged the address it listens on. */
export async function startOrigin(env = {}) {
  const defaults = originDefaults();
  const child = spawn(required("ORIGIN_BIN"), [], {
    env: { ...process.env, LISTEN_ADDR: "127.0.0.1:0", LOG_FORMAT: "json", ...defaults, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const logs = [];
  const lines = createInterface({ input: child.stdout });
  const listening = new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`origin exited with ${code} before listening`)));
    lines.on("line", (line) => {
      logs.push(line);
      let record;
      try {
        record = JSON.parse(line);
      } catch {
        return;
      }
      if (record.message === "origin listening") resolve(record.addr);
    });
  });
  const addr = await withTimeout(listening, 15_000, "origin did not start listening");
  return {
    url: `http://${addr}`,
    logs,
    process: child,
    async stop(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) {
        defaults.cleanup?.();
        return child.exitCode;
      }
      child.kill(signal);
      const [code] = await once(child, "exit");
      defaults.cleanup?.();
      return code;
    },
  };
}

/**
 * Test-only secrets each Worker gets unless a test overrides them (never used by a deploy), so
 * every suite can start the stack without knowing other Workers' secrets.
 */
const RATE_LIMIT_KEY_SECRET = "test-only-rate-limit-key-secret-0123456789";
export const TEST_SECRETS = {
  "rate-limiter": { RATE_LIMIT_KEY_SECRET },
  // voice-router names rate-limiter's objects itself (RATE_LIMITER_OBJECTS): the same key.
  "voice-router": { EDGE_SIGNING_SECRET, RATE_LIMIT_KEY_SECRET },
};

/**
 * Starts the four Workers. `originUrl` is what voice-router forwards to and where geo-router's
 * regions all point (unless `vars["geo-router"].GEO_REGIONS` says otherwise); `vars` and
 * `secrets` override a Worker's vars and secrets, keyed by worker name (e.g.
 * `{ "auth-validator": {...} }`); `configs` replaces a Worker's config file (see
 * `rewrittenConfig`), and `extra` adds Workers (as `createTestHarness` takes them).
 */
export async function startWorkers({ originUrl, vars = {}, secrets = {}, configs = {}, extra = [] } = {}) {
  const bundles = required("WORKER_BUNDLES_DIR");
  // voice-router's static assets (the console) are read from its config's `assets.directory`,
  // which its build fills; the prebuilt bundles do not carry them.
  if (!existsSync(path.join(root, "workers/voice-router/console/dist/console/index.html"))) {
    throw new Error("the console is not built: run `node workers/voice-router/console/build.mjs` (make test and wrangler's build of voice-router do)");
  }
  const workers = WORKERS.map((worker) => ({
    configPath: configs[worker] ?? path.join(root, "wrangler", `${worker}.toml`),
    env: ENVIRONMENT,
    prebuiltWorkerDir: path.join(bundles, worker),
    vars: { ...originVars(worker, originUrl), ...vars[worker] },
    secrets: { ...TEST_SECRETS[worker], ...secrets[worker] },
  }));
  const server = createTestHarness({ root, workers: [...workers, ...extra] });
  const { url } = await server.listen();
  return {
    /** The public entry (voice-router) over real HTTP. */
    url: url.href.replace(/\/$/, ""),
    server,
    /** An internal Worker, reached as a service binding would reach it. */
    worker: (worker) => server.getWorker(workerName(worker)),
    close: () => server.close(),
  };
}

/**
 * A copy of `wrangler/<worker>.toml` with each `[from, to]` replaced (every `from` must occur),
 * beside the original so its relative paths still resolve; `remove()` deletes it.
 */
export function rewrittenConfig(worker, replacements) {
  let text = readFileSync(path.join(root, "wrangler", `${worker}.toml`), "utf8");
  for (const [from, to] of replacements) {
    if (!text.includes(from)) throw new Error(`wrangler/${worker}.toml no longer contains ${from}`);
    text = text.replaceAll(from, to);
  }
  const file = path.join(root, "wrangler", `.test-${worker}-${process.pid}-${randomUUID()}.toml`);
  writeFileSync(file, text);
  return { path: file, remove: () => rmSync(file, { force: true }) };
}

/** The vars that point a Worker at the stack's origin. */
function originVars(worker, originUrl) {
  if (!originUrl) return {};
  if (worker === "voice-router") return { ORIGIN_URL: originUrl };
  if (worker === "geo-router") return { GEO_REGIONS: geoRegions(() => originUrl) };
  return {};
}

/** The whole stack: origin + Workers. */
export async function startStack(options = {}) {
  const origin = await startOrigin(options.originEnv);
  try {
    const edge = await startWorkers({ originUrl: origin.url, vars: options.vars, secrets: options.secrets });
    return {
      origin,
      edge,
      async close() {
        await edge.close();
        await origin.stop();
      },
    };
  } catch (error) {
    await origin.stop();
    throw error;
  }
}

/**
 * Starts the Bedrock emulator (EMULATOR_BIN). `script(model, behaviour)` sets a model's timing,
 * reply and faults; `stats()` returns request/completion/cancellation counts per model.
 */
export async function startEmulator({ ttftMs = 20, interTokenMs = 2 } = {}) {
  const child = spawn(required("EMULATOR_BIN"), ["--ttft-ms", String(ttftMs), "--inter-token-ms", String(interTokenMs)], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const lines = createInterface({ input: child.stdout });
  const listening = new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`emulator exited with ${code} before listening`)));
    lines.on("line", (line) => {
      try {
        const record = JSON.parse(line);
        if (record.message === "bedrock-emulator listening") resolve(record.addr);
      } catch {
        // not a record
      }
    });
  });
  const addr = await withTimeout(listening, 15_000, "emulator did not start listening");
  const url = `http://${addr}`;
  return {
    url,
    process: child,
    async script(model, behaviour) {
      const response = await fetch(`${url}/control/models/${encodeURIComponent(model)}`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(behaviour),
      });
      if (response.status !== 204) throw new Error(`emulator refused the script: ${response.status} ${await response.text()}`);
    },
    async stats() {
      return (await (await fetch(`${url}/control/stats`)).json()).models;
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      await once(child, "exit");
    },
  };
}

/**
 * The edge's signed headers for a request to the origin (shared::signing, mirrored for tests):
 * HMAC-SHA256 over method, path+query, timestamp, nonce (fresh per request unless one is given,
 * to replay it), SHA-256 of the body (or the stream marker for a WebSocket upgrade) and the
 * principal header. `legacy: true` signs as an edge from before the nonce did (`v1=`, no nonce).
 */
export function edgeHeaders({
  method = "GET",
  pathAndQuery,
  body = "",
  principal,
  secret = EDGE_SIGNING_SECRET,
  timestamp = Math.floor(Date.now() / 1000),
  nonce = randomUUID(),
  stream = false,
  legacy = false,
}) {
  const principalHeader = principal ? Buffer.from(JSON.stringify(principal)).toString("base64url") : "";
  const bodyHash = stream ? "STREAMING-BODY" : createHash("sha256").update(body).digest("hex");
  const nonceLine = legacy ? [] : [nonce];
  const canonical = ["AYBIZA-EDGE-HMAC-SHA256", method.toUpperCase(), pathAndQuery, String(timestamp), ...nonceLine, bodyHash, principalHeader].join("\n");
  const headers = {
    "x-edge-timestamp": String(timestamp),
    "x-edge-signature": `${legacy ? "v1" : "v2"}=${createHmac("sha256", secret).update(canonical).digest("hex")}`,
  };
  if (!legacy) headers["x-edge-nonce"] = nonce;
  if (principalHeader) headers["x-edge-principal"] = principalHeader;
  return headers;
}

/** A request to the origin signed as the edge signs it, on behalf of `principal`. */
export async function signedCall(origin, method, pathAndQuery, { body, principal, headers = {} } = {}) {
  const text = body === undefined ? "" : typeof body === "string" ? body : JSON.stringify(body);
  return fetch(`${origin.url}${pathAndQuery}`, {
    method,
    headers: {
      ...edgeHeaders({ method, pathAndQuery, body: text, principal }),
      ...(body === undefined ? {} : { "content-type": "application/json" }),
      ...headers,
    },
    body: body === undefined ? undefined : text,
  });
}

/**
 * Opens a call's relay WebSocket on the origin with the edge's signed headers. Messages wait in
 * a queue for `next(ms)`; `reply()` joins one talk cycle's `text` tokens (every message must be
 * a `text`); `closed()` resolves with the close code.
 */
export async function originRelay(origin, callId, principal) {
  const pathAndQuery = `/v1/calls/${callId}/relay`;
  return relaySocket(`${origin.url.replace("http", "ws")}${pathAndQuery}`, edgeHeaders({ method: "GET", pathAndQuery, principal, stream: true }));
}

/**
 * A ConversationRelay WebSocket client at `url` with handshake `headers` (the origin's signed
 * edge headers, or a carrier's signature through the edge): `send`, `next`, `reply` (one
 * reply's text; every message must be a `text`), `closed` (resolves to the close code), `close`.
 */
export async function relaySocket(url, headers) {
  const client = await wsClient(url, headers, 5_000);
  return {
    ...client,
    async reply() {
      let text = "";
      for (;;) {
        const message = await client.next();
        if (message.type !== "text") throw new Error(`expected a text message, got ${JSON.stringify(message)}`);
        text += message.token;
        if (message.last) return text;
      }
    },
    closed: () => client.whenClosed.then(({ code }) => code),
  };
}

/** Twilio's request signature: HMAC-SHA1 of the URL plus the sorted parameters, base64. */
export function twilioSignature(authToken, url, params = {}) {
  const data = Object.keys(params)
    .sort()
    .reduce((acc, key) => acc + key + params[key], url);
  return createHmac("sha1", authToken).update(data).digest("base64");
}

/**
 * Opens a WebSocket (a call's relay through the edge) with `headers`, waiting `ms` at most for
 * the handshake and for each message. Messages wait in a queue for `next(ms)`; `reply()` returns
 * one talk cycle's `text` tokens up to `last: true` (other messages are skipped); `closed()` is
 * `{code, reason}` once closed, else null; `whenClosed` resolves to it. A refused handshake
 * rejects with the status and body.
 */
export async function wsClient(url, headers = {}, ms = 10_000) {
  // `ws` (pinned through wrangler's lockfile) sends the headers a WebSocket handshake needs.
  const WebSocket = requireFromWrangler("ws");
  const socket = new WebSocket(url, { headers });
  const queue = [];
  const waiters = [];
  let closed = null;
  socket.on("message", (data) => {
    const message = JSON.parse(data.toString());
    const waiter = waiters.shift();
    if (waiter) waiter(message);
    else queue.push(message);
  });
  const whenClosed = new Promise((resolve) =>
    socket.once("close", (code, reason) => {
      closed = { code, reason: reason.toString() };
      resolve(closed);
    }),
  );
  await withTimeout(
    new Promise((resolve, reject) => {
      socket.once("open", resolve);
      socket.once("unexpected-response", (_, response) => {
        let text = "";
        response.on("data", (chunk) => (text += chunk));
        response.on("end", () => reject(Object.assign(new Error(`handshake answered ${response.statusCode}: ${text}`), { status: response.statusCode, body: text })));
      });
      socket.once("error", reject);
    }),
    ms,
    "relay did not open",
  );
  const next = (wait = ms) =>
    withTimeout(queue.length ? Promise.resolve(queue.shift()) : new Promise((resolve) => waiters.push(resolve)), wait, "no relay message");
  return {
    send: (message) => socket.send(JSON.stringify(message)),
    next,
    whenClosed,
    /** The text tokens of one reply, up to and including `last: true`. */
    async reply() {
      const tokens = [];
      for (;;) {
        const message = await next();
        if (message.type !== "text") continue;
        tokens.push(message.token);
        if (message.last) return tokens;
      }
    },
    closed: () => closed,
    close: () => socket.close(),
  };
}

/** A principal of `tenant`, as auth-validator would produce it. */
export function principalOf(tenant, scopes = ["calls:write", "agents:admin"]) {
  return { tenant_id: tenant, subject: "e2e", scopes, plan: "pro", method: "api_key" };
}

/** An HS256 JWT signed with `secret`: `claims` over `iat` now and `exp` in ten minutes. */
export function hs256Jwt(secret, claims) {
  const now = Math.floor(Date.now() / 1000);
  const part = (object) => Buffer.from(JSON.stringify(object)).toString("base64url");
  const signed = `${part({ alg: "HS256", typ: "JWT" })}.${part({ iat: now, exp: now + 600, ...claims })}`;
  return `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`;
}

/** A port on loopback with nothing listening: for "the origin is down". */
export async function closedPortUrl() {
  const net = await import("node:net");
  const server = net.createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address();
  server.close();
  await once(server, "close");
  return `http://127.0.0.1:${port}`;
}

export async function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Polls `predicate` every 50 ms until it returns something truthy, which is returned; fails
 * with `message` (or what `message()` says then) after `ms`.
 */
export async function until(predicate, message, ms = 10_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`${typeof message === "function" ? message() : message}: not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Reads a response as JSON, failing with the text when it is not. */
export async function json(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`expected JSON, got ${response.status}: ${text.slice(0, 300)}`);
  }
}

/** Server-sent events of a whole response body: `[{event, data}]`, data parsed as JSON. */
export function parseSse(text) {
  return text
    .split("\n\n")
    .map((block) => {
      let event = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        if (line.startsWith("data:")) data += line.slice(5).trimStart();
      }
      return data ? { event, data: JSON.parse(data) } : null;
    })
    .filter(Boolean);
}

/**
 * A load balancer in miniature: accepts on a fixed loopback port and pipes each connection to
 * the current backend. Switching the backend sends new connections to it; live ones stay put.
 */
export async function tcpProxy(backendUrl) {
  let backend = new URL(backendUrl);
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(backend.port), backend.hostname);
    sockets.add(client).add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.pipe(upstream).pipe(client);
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
  });
  server.listen(0, "127.0.0.1");
  await new Promise((resolve) => server.once("listening", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    switchTo(url) {
      backend = new URL(url);
    },
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
