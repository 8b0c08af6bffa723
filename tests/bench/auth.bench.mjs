// auth-validator inside workerd: verifications per second and CPU per verification for HS256,
// RS256, ES256, API keys, Twilio signatures and session tokens, with the key cache warm; the
// deployed wasm's gzip size. Two builds of the same Worker run side by side: the deployed one
// (RS256/ES256 through the runtime's WebCrypto) and the `rust-crypto` one (pure-Rust `rsa` and
// `p256` in wasm), so both backends are measured in the same run on the same machine.
//
// Raw `workerd serve` with a capnp config (wrangler dev's proxy caps throughput), loopback only.
// KV is a small in-memory JS service speaking workerd's KV binding protocol; the JWKS URL is
// served by another JS service in the same process (the Worker's global outbound).
//
// CPU per request is the workerd process's own CPU time (all threads, /proc/<pid>/task/*/schedstat,
// nanoseconds) over the requests, so the load generator and other processes on the machine do
// not count. CPU per verification = CPU per request of a kind minus that of the baseline request
// (same envelope, no credential: parsed, refused with 401 before any crypto or KV).
//
// Inputs: WORKER_BUNDLES_DIR (release `wrangler deploy --dry-run` bundles, as bench.sh sets it).

import { spawnSync } from "node:child_process";
import { createHash, createHmac, generateKeyPairSync, sign as cryptoSign } from "node:crypto";
import { writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { report } from "./report.mjs";
import { Client, bundleDir, bundleModules, capnp, compatibilityDate, cpuNs, freePort, kvSource, root, startWorkerd, wasmGzipKb } from "./workerd.mjs";

const COMPATIBILITY_DATE = compatibilityDate("auth-validator");
const REQUESTS = Number(process.env.AUTH_BENCH_REQUESTS ?? 4000);
const ROUNDS = 5;
const WARMUP = 300;
const CONCURRENCY = 8;
const CPU_TARGET_US = 1000;
const WASM_TARGET_KB = 400;

// --- Credentials --------------------------------------------------------------------------------

const ISSUER = "https://issuer.bench";
const AUDIENCE = "aybiza-api";
const HS256_SECRET = "bench-hs256-secret-0123456789abcdef-0123";
const SESSION_SECRET = "bench-session-secret-0123456789abcdef-012";
const ACCOUNT = "AC" + "a".repeat(32);
const TWILIO_TOKEN = "bench-twilio-auth-token";
const API_KEY = "ak_live_" + "B".repeat(32);
const b64url = (data) => Buffer.from(data).toString("base64url");
const sha256hex = (text) => createHash("sha256").update(text).digest("hex");
const now = Math.floor(Date.now() / 1000);

const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
const jwks = JSON.stringify({
  keys: [
    { ...rsa.publicKey.export({ format: "jwk" }), kid: "rsa-1", alg: "RS256", use: "sig" },
    { ...ec.publicKey.export({ format: "jwk" }), kid: "ec-1", use: "sig" },
  ],
});

function jwt(header, key) {
  const claims = { iss: ISSUER, aud: AUDIENCE, sub: "user-1", tenant_id: "tenant-bench", scope: "calls:write", iat: now, exp: now + 3600 };
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signature =
    header.alg === "HS256"
      ? createHmac("sha256", key).update(input).digest()
      : cryptoSign("sha256", Buffer.from(input), header.alg === "ES256" ? { key, dsaEncoding: "ieee-p1363" } : key);
  return `${input}.${b64url(signature)}`;
}

const PUBLIC = "https://edge.aybiza.test";
const twilioUrl = `${PUBLIC}/voice/twilio/incoming`;
const twilioParams = { AccountSid: ACCOUNT, CallSid: "CA0001", From: "+14155550100", To: "+18005550101", CallStatus: "ringing" };
const twilioSignature = createHmac("sha1", TWILIO_TOKEN)
  .update(Object.keys(twilioParams).sort().reduce((acc, k) => acc + k + twilioParams[k], twilioUrl))
  .digest("base64");

const envelope = (extra) => JSON.stringify({ method: "POST", url: `${PUBLIC}/api/v1/calls`, ...extra });
const bearer = (token, extra = {}) => envelope({ headers: { authorization: `Bearer ${token}` }, ...extra });

/** Each kind: the envelope and the status every answer must have. */
function scenarios(sessionToken) {
  return [
    { kind: "baseline", label: "no-credential refusal", body: envelope({}), status: 401 },
    { kind: "HS256", body: bearer(jwt({ alg: "HS256" }, HS256_SECRET)), status: 200 },
    { kind: "RS256", body: bearer(jwt({ alg: "RS256", kid: "rsa-1" }, rsa.privateKey)), status: 200 },
    { kind: "ES256", body: bearer(jwt({ alg: "ES256", kid: "ec-1" }, ec.privateKey)), status: 200 },
    { kind: "API key", body: envelope({ headers: { "x-api-key": API_KEY } }), status: 200 },
    {
      kind: "Twilio signature",
      body: envelope({
        url: twilioUrl,
        body: new URLSearchParams(twilioParams).toString(),
        headers: { "x-twilio-signature": twilioSignature, "content-type": "application/x-www-form-urlencoded" },
      }),
      status: 200,
    },
    {
      kind: "session token",
      body: JSON.stringify({ method: "GET", url: `wss://edge.aybiza.test/voice/relay/CA0001?session_token=${sessionToken}`, call_id: "CA0001" }),
      status: 200,
    },
  ];
}

// --- workerd --------------------------------------------------------------------------------

const keysSource = `export default { fetch() { return new Response(${JSON.stringify(jwks)}, { headers: { "content-type": "application/json" } }); } };`;

function writeConfig(dir, bundle, port) {
  const modules = bundleModules(bundle, dir, "auth");
  const record = { key_sha256: sha256hex(API_KEY), tenant_id: "tenant-bench", subject: "key_1", scopes: ["calls:write"], plan: "pro" };
  writeFileSync(path.join(dir, "kv.js"), kvSource([[`apikey:${sha256hex(API_KEY)}`, JSON.stringify(record)]]));
  writeFileSync(path.join(dir, "keys.js"), keysSource);
  const text = {
    JWKS_URL: "http://127.0.0.1/cdn-cgi/access/certs",
    JWT_ISSUER: ISSUER,
    JWT_AUDIENCE: AUDIENCE,
    TWILIO_ACCOUNTS: JSON.stringify({ [ACCOUNT]: { tenant_id: "tenant-twilio", plan: "pro" } }),
    JWT_HS256_SECRET: HS256_SECRET,
    SESSION_TOKEN_SECRET: SESSION_SECRET,
    [`TWILIO_AUTH_TOKEN_${ACCOUNT}`]: TWILIO_TOKEN,
  };
  const bindings = [
    `(name = "AUTH_KV", kvNamespace = "kv")`,
    ...Object.entries(text).map(([name, value]) => `(name = ${capnp(name)}, text = ${capnp(value)})`),
  ];
  const config = `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "auth", worker = (
      modules = [ ${modules} ],
      compatibilityDate = "${COMPATIBILITY_DATE}",
      bindings = [ ${bindings.join(",\n      ")} ],
      globalOutbound = "keys",
    )),
    (name = "kv", worker = (modules = [(name = "kv.js", esModule = embed "kv.js")], compatibilityDate = "${COMPATIBILITY_DATE}")),
    (name = "keys", worker = (modules = [(name = "keys.js", esModule = embed "keys.js")], compatibilityDate = "${COMPATIBILITY_DATE}")),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "auth") ],
);
`;
  writeFileSync(path.join(dir, "config.capnp"), config);
  return path.join(dir, "config.capnp");
}

async function startAuth(bundle) {
  const port = await freePort();
  const client = new Client(port, CONCURRENCY);
  const handle = await startWorkerd({
    name: "auth-bench",
    write: (dir) => writeConfig(dir, bundle, port),
    ready: async () => (await client.request("GET", "/health")).status === 200,
  });
  return {
    client,
    pid: handle.pid,
    stderr: handle.stderr,
    async stop() {
      client.close();
      await handle.stop();
    },
  };
}

async function run(server, scenario, count) {
  const body = Buffer.from(scenario.body);
  let sent = 0;
  const wrong = [];
  const cpuBefore = cpuNs(server.pid);
  const started = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (sent < count) {
        sent += 1;
        const { status, text } = await server.client.request("POST", "/v1/authenticate", { body });
        if (status !== scenario.status && wrong.length < 3) wrong.push(`${status} ${text.slice(0, 200)}`);
      }
    }),
  );
  const wallNs = Number(process.hrtime.bigint() - started);
  const cpu = cpuNs(server.pid) - cpuBefore;
  if (wrong.length > 0) throw new Error(`${scenario.kind}: unexpected answers: ${wrong.join(" | ")}`);
  return { perSecond: count / (wallNs / 1e9), cpuUsPerRequest: cpu / count / 1000 };
}

async function measure(bundle, kinds, requests) {
  const server = await startAuth(bundle);
  try {
    const mint = await server.client.request("POST", "/v1/session-tokens", {
      body: JSON.stringify({ call_id: "CA0001", principal: { tenant_id: "t", subject: "s", scopes: [], plan: "pro", method: "api_key" }, ttl_s: 900 }),
    });
    if (mint.status !== 200) throw new Error(`minting failed: ${mint.status} ${mint.text}`);
    const all = scenarios(JSON.parse(mint.text).token).filter((scenario) => kinds.includes(scenario.kind));
    // Warm every path first: the JWKS cache, imported keys, and V8's optimising tier for the
    // wasm (compiled on background threads whose CPU would otherwise land in the first figures).
    for (const scenario of all) await run(server, scenario, WARMUP);
    for (const scenario of all) await run(server, scenario, WARMUP);
    // Rounds interleave the kinds so drift on a shared machine hits them alike; medians reported.
    const samples = Object.fromEntries(all.map((scenario) => [scenario.kind, []]));
    for (let round = 0; round < ROUNDS; round += 1) {
      for (const scenario of all) samples[scenario.kind].push(await run(server, scenario, Math.ceil(requests / ROUNDS)));
    }
    const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
    return Object.fromEntries(
      Object.entries(samples).map(([kind, runs]) => [
        kind,
        { perSecond: median(runs.map((r) => r.perSecond)), cpuUsPerRequest: median(runs.map((r) => r.cpuUsPerRequest)) },
      ]),
    );
  } catch (error) {
    throw new Error(`${error.message}\nworkerd stderr:\n${server.stderr().slice(-2000)}`);
  } finally {
    await server.stop();
  }
}

// --- The two builds -------------------------------------------------------------------------

const deployedDir = bundleDir("auth-validator");
const rustOut = "build/rust-crypto";
console.log("building the rust-crypto variant of auth-validator (worker-build --release --features rust-crypto)");
const build = spawnSync("worker-build", ["--release", "--out-dir", rustOut, "--features", "rust-crypto"], {
  cwd: path.join(root, "workers/auth-validator"),
  stdio: ["ignore", "ignore", "inherit"],
});
if (build.status !== 0) throw new Error("worker-build of the rust-crypto variant failed");
const rustDir = path.join(root, "workers/auth-validator", rustOut);

console.log(`measuring ${REQUESTS} requests per kind (${ROUNDS} interleaved rounds, medians) at concurrency ${CONCURRENCY}`);
const KINDS = ["baseline", "HS256", "RS256", "ES256", "API key", "Twilio signature", "session token"];
const web = await measure(deployedDir, KINDS, REQUESTS);
// The rust-crypto build differs only in RS256/ES256; HS256 and the baseline anchor the comparison.
const pure = await measure(rustDir, ["baseline", "HS256", "RS256", "ES256"], REQUESTS / 2);

const rows = [];
const deployedKb = wasmGzipKb(deployedDir);
const rustKb = wasmGzipKb(rustDir);
rows.push({ figure: "wasm gzip, deployed build (WebCrypto)", value: deployedKb, unit: "KB", target: `<= ${WASM_TARGET_KB} KB`, met: deployedKb <= WASM_TARGET_KB });
rows.push({ figure: "wasm gzip, rust-crypto build", value: rustKb, unit: "KB", baseline: "deployed build", ratio: rustKb / deployedKb });

const base = web.baseline;
rows.push({ figure: "no-credential refusal (baseline) req/s", value: base.perSecond, unit: "req/s" });
rows.push({ figure: "no-credential refusal (baseline) CPU/request", value: base.cpuUsPerRequest, unit: "µs" });
for (const kind of ["HS256", "RS256", "ES256", "API key", "Twilio signature", "session token"]) {
  const result = web[kind];
  rows.push({ figure: `${kind} verifications/s (HTTP, c=${CONCURRENCY})`, value: result.perSecond, unit: "req/s", baseline: "baseline req/s", ratio: result.perSecond / base.perSecond });
  const asymmetric = kind === "RS256" || kind === "ES256";
  rows.push({
    figure: `${kind} CPU per request (all of it)`,
    value: result.cpuUsPerRequest,
    unit: "µs",
    ...(asymmetric ? { target: `< ${CPU_TARGET_US} µs`, met: result.cpuUsPerRequest < CPU_TARGET_US } : {}),
    baseline: "baseline CPU/request",
    ratio: result.cpuUsPerRequest / base.cpuUsPerRequest,
  });
}
// The RS256/ES256 path equals the HS256 one but for the signature check (an HMAC of a few hundred
// bytes costs a few µs), so the difference is what the asymmetric check itself costs.
const signatureCost = (results, kind) => results[kind].cpuUsPerRequest - results.HS256.cpuUsPerRequest;
for (const kind of ["RS256", "ES256"]) {
  rows.push({ figure: `${kind} signature check CPU (${kind} − HS256 request), WebCrypto`, value: signatureCost(web, kind), unit: "µs" });
}
for (const kind of ["RS256", "ES256"]) {
  rows.push({ figure: `${kind} verifications/s, rust-crypto build`, value: pure[kind].perSecond, unit: "req/s", baseline: `${kind} WebCrypto build`, ratio: pure[kind].perSecond / web[kind].perSecond });
  rows.push({ figure: `${kind} CPU per request, rust-crypto build`, value: pure[kind].cpuUsPerRequest, unit: "µs", baseline: `${kind} WebCrypto build`, ratio: pure[kind].cpuUsPerRequest / web[kind].cpuUsPerRequest });
  rows.push({
    figure: `${kind} signature check CPU (${kind} − HS256 request), rust-crypto`,
    value: signatureCost(pure, kind),
    unit: "µs",
    baseline: "same, WebCrypto",
    ratio: signatureCost(pure, kind) / signatureCost(web, kind),
  });
}

const ok = report("auth", rows, [
  `${os.cpus().length} cores shared with other work; req/s depends on it, CPU per request (workerd's own CPU time) much less`,
  "CPU per request is all of it: HTTP, JSON in and out, the verification; the RS256/ES256 target is met by the whole request",
  "the baseline (no credential, refused with a 401 and a log line before any crypto) is not the cheapest path: it logs",
  "API key includes one KV read through workerd's KV binding (an in-memory JS service here, not Cloudflare's KV)",
  "HS256 is pure Rust in both builds (the rust-crypto feature only changes RS256/ES256)",
]);
process.exit(ok ? 0 : 1);
