// The plain-JavaScript baseline of the edge hop (tests/bench/edge.bench.mjs): what voice-router
// does for an authenticated API request to `/api/v1/agents…`, written in plain JS for workerd.
//
// MODE "chain" (the equivalent): the same stages in the same order over the same service
// bindings to the same Rust internal Workers: route, country firewall, then authentication
// (AUTH) ∥ per-IP check (RATE_LIMITER) ∥ region (GEO_ROUTER), then the per-principal check,
// then the request signed with the edge key (HMAC-SHA256, shared::signing's canonical form) and
// forwarded to the chosen region's origin; the answer carries the security and rate-limit
// headers. Only what this one request needs: no other route, no failover to another region, no
// CORS, no body (GET). So it is a floor for a JS voice-router, not a full one.
//
// MODE "warm": voice-router's warm path in plain JS. The principal auth-validator answered is
// remembered per credential (30 s) and geo-router's decision per caller location (5 s), as the
// Rust isolate does, so a warm request makes one in-order call to rate-limiter for both limits
// (`"in_order": true`) and the origin's: the like-for-like baseline of the Rust edge's warm path.
//
// MODE "warm-direct": "warm", but both limits are decided by the RateLimiter objects bound
// directly (LIMITER_OBJECTS, the rate-limiter script's namespace), one after the other, named as
// rate-limiter names them (HMAC-SHA256 of `policy:key` with RATE_LIMIT_KEY_SECRET, hex) and sent
// the check itself (the object resolves its policy): voice-router's path with its
// RATE_LIMITER_OBJECTS binding, in JS. Its keys are prefixed `direct/`, so its objects are its
// own.
//
// MODE "proxy": no service calls at all; a fixed principal, signed and forwarded to ORIGIN_URL.
// The floor of any edge hop in workerd: a request in, a signed subrequest out.
//
// Bindings: MODE, ORIGIN_URL, EDGE_SIGNING_SECRET; for "chain" and the warm modes AUTH,
// RATE_LIMITER, GEO_ROUTER; for "warm-direct" also LIMITER_OBJECTS and RATE_LIMIT_KEY_SECRET.

const SECURITY = [
  ["x-content-type-options", "nosniff"],
  ["x-frame-options", "DENY"],
  ["referrer-policy", "no-referrer"],
  ["strict-transport-security", "max-age=63072000; includeSubDomains"],
  ["content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"],
];
const PASSED = ["content-type", "cache-control", "retry-after", "location", "etag"];
const API_COUNTRIES = new Set(["US", "CA", "GB", "AU", "DE", "FR", "NL", "SE", "NO", "DK"]);
const PROXY_PRINCIPAL = { tenant_id: "bench", subject: "proxy", scopes: ["agents:admin"], plan: "pro", method: "jwt" };
const encoder = new TextEncoder();

let signingKey;
async function key(secret) {
  signingKey ??= crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return signingKey;
}

const hex = (buffer) => [...new Uint8Array(buffer)].map((b) => b.toString(16).padStart(2, "0")).join("");
const base64url = (text) => btoa(String.fromCharCode(...encoder.encode(text))).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");

function refuse(status, code, message, requestId, headers = {}) {
  return new Response(JSON.stringify({ error: { code, message, request_id: requestId } }), {
    status,
    headers: { "content-type": "application/json", ...headers },
  });
}

async function call(binding, path, body, requestId) {
  const response = await binding.fetch(`https://internal${path}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-request-id": requestId },
    body: JSON.stringify(body),
  });
  return { status: response.status, json: await response.json(), headers: response.headers };
}

async function signedFetch(env, origin, method, pathAndQuery, principal, country, region, requestId) {
  const principalHeader = base64url(JSON.stringify(principal));
  const timestamp = String(Math.floor(Date.now() / 1000));
  const nonce = crypto.randomUUID();
  const bodyHash = hex(await crypto.subtle.digest("SHA-256", new Uint8Array(0)));
  const canonical = ["AYBIZA-EDGE-HMAC-SHA256", method, pathAndQuery, timestamp, nonce, bodyHash, principalHeader].join("\n");
  const signature = hex(await crypto.subtle.sign("HMAC", await key(env.EDGE_SIGNING_SECRET), encoder.encode(canonical)));
  const headers = {
    "x-request-id": requestId,
    "x-cf-region": region,
    "x-edge-principal": principalHeader,
    "x-edge-timestamp": timestamp,
    "x-edge-nonce": nonce,
    "x-edge-signature": `v2=${signature}`,
  };
  if (country) headers["x-cf-country"] = country;
  return fetch(`${origin}${pathAndQuery}`, { method, headers });
}

function rateLimitHeaders(decisions) {
  const shown = decisions.filter((d) => !d.shadow && !d.degraded);
  if (shown.length === 0) return {};
  const window = (d) => Math.max(1, Math.ceil((d.window_ms ?? 0) / 1000));
  const reset = (d) => Math.ceil((d.allowed ? d.reset_after_ms : d.retry_after_ms) / 1000);
  const governing = shown.reduce((a, b) => (b.remaining < a.remaining ? b : a));
  return {
    "ratelimit-policy": shown.map((d) => `"${d.policy}";q=${d.limit};w=${window(d)}`).join(", "),
    ratelimit: shown.map((d) => `"${d.policy}";r=${d.remaining};t=${reset(d)}`).join(", "),
    "ratelimit-limit": String(governing.limit),
    "ratelimit-remaining": String(governing.remaining),
    "ratelimit-reset": String(reset(governing)),
  };
}

async function answer(origin, extra) {
  const headers = new Headers();
  for (const name of PASSED) {
    const value = origin.headers.get(name);
    if (value !== null) headers.set(name, value);
  }
  for (const [name, value] of SECURITY) headers.set(name, value);
  for (const [name, value] of Object.entries(extra)) headers.set(name, value);
  return new Response(origin.body, { status: origin.status, headers });
}

/**
 * The route and firewall stages, and what the later ones need from the request: `{ refusal }`
 * when the request goes no further.
 */
function gate(request, requestId) {
  const url = new URL(request.url);
  if (request.method !== "GET" || !url.pathname.startsWith("/api/v1/agents")) return { refusal: refuse(404, "not_found", "no such route", requestId) };
  const cf = request.cf ?? {};
  if (!API_COUNTRIES.has(cf.country)) return { refusal: refuse(403, "country_blocked", "the API is not offered in this country", requestId) };
  const ip = request.headers.get("cf-connecting-ip") ?? "unknown";
  const headers = {};
  for (const name of ["authorization", "x-api-key", "x-twilio-signature", "content-type"]) {
    const value = request.headers.get(name);
    if (value !== null) headers[name] = value;
  }
  const caller = { country: cf.country, region_code: cf.regionCode, continent: cf.continent, latitude: cf.latitude, longitude: cf.longitude, colo: cf.colo };
  return { url, cf, ip, headers, caller };
}

async function chain(request, env, requestId) {
  const { refusal, url, cf, ip, headers, caller } = gate(request, requestId);
  if (refusal) return refusal;
  const [auth, ipCheck, route] = await Promise.all([
    call(env.AUTH, "/v1/authenticate", { method: request.method, url: request.url, headers, body: null, required_scopes: ["agents:admin"], call_id: null }, requestId),
    call(env.RATE_LIMITER, "/check", { checks: [{ policy: "ip", key: ip }] }, requestId),
    call(env.GEO_ROUTER, "/v1/route", { caller, pin: null }, requestId),
  ]);
  const decisions = [...ipCheck.json.decisions];
  if (!ipCheck.json.allowed) return refuse(429, "rate_limited", "too many requests", requestId, rateLimitHeaders(decisions));
  if (auth.status !== 200) return refuse(auth.status, auth.json.error.code, auth.json.error.message, requestId);
  const principal = auth.json;
  const principalCheck = await call(env.RATE_LIMITER, "/check", { checks: [{ policy: "principal", key: `${principal.tenant_id}/${principal.subject}`, tenant: principal.tenant_id, plan: principal.plan }] }, requestId);
  decisions.push(...principalCheck.json.decisions);
  if (!principalCheck.json.allowed) return refuse(429, "rate_limited", "too many requests", requestId, rateLimitHeaders(decisions));
  if (route.status !== 200) return refuse(503, "service_unavailable", "no region", requestId);
  const originPath = url.pathname.replace(/^\/api/, "") + url.search;
  const origin = await signedFetch(env, route.json.origin_url.replace(/\/$/, ""), "GET", originPath, principal, cf.country, route.json.region, requestId);
  return answer(origin, rateLimitHeaders(decisions));
}

const remembered = { principals: new Map(), routes: new Map() };
const PRINCIPAL_MS = 30_000;
const ROUTE_MS = 5_000;

/** `fetch()`'s answer for `key` from `cache`, kept for `ms`; only successes are kept. */
async function recall(cache, key, ms, fetch) {
  const now = Date.now();
  const kept = cache.get(key);
  if (kept && kept.until > now) return kept.answer;
  const answer = await fetch();
  if (answer.status === 200) cache.set(key, { answer, until: now + ms });
  return answer;
}

let limiterKey;
/** The RateLimiter object's name for `key` under `policy`, as rate-limiter derives it. */
async function objectName(env, policy, key) {
  limiterKey ??= crypto.subtle.importKey("raw", encoder.encode(env.RATE_LIMIT_KEY_SECRET), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return hex(await crypto.subtle.sign("HMAC", await limiterKey, encoder.encode(`${policy}:${key}`)));
}

/** The checks decided by their objects, in order, stopping at the first refusal. */
async function checkObjects(env, checks) {
  const decisions = [];
  for (const check of checks) {
    const key = `direct/${check.key}`;
    const stub = env.LIMITER_OBJECTS.get(env.LIMITER_OBJECTS.idFromName(await objectName(env, check.policy, key)));
    const response = await stub.fetch("https://rate-limiter.object/check", {
      method: "POST",
      body: JSON.stringify({ ...check, key }),
    });
    if (response.status !== 200) throw new Error(`object for ${check.policy} answered ${response.status}: ${await response.text()}`);
    const reply = await response.json();
    decisions.push(reply.decision);
    if (!reply.decision.allowed) break;
  }
  return { allowed: decisions.every((d) => d.allowed), decisions };
}

async function warm(request, env, requestId, direct) {
  const { refusal, url, cf, ip, headers, caller } = gate(request, requestId);
  if (refusal) return refusal;
  const [auth, route] = await Promise.all([
    recall(remembered.principals, headers.authorization ?? headers["x-api-key"] ?? "", PRINCIPAL_MS, () =>
      call(env.AUTH, "/v1/authenticate", { method: request.method, url: request.url, headers, body: null, required_scopes: ["agents:admin"], call_id: null }, requestId),
    ),
    recall(remembered.routes, JSON.stringify(caller), ROUTE_MS, () => call(env.GEO_ROUTER, "/v1/route", { caller, pin: null }, requestId)),
  ]);
  if (auth.status !== 200) return refuse(auth.status, auth.json.error.code, auth.json.error.message, requestId);
  const principal = auth.json;
  const checks = [
    { policy: "ip", key: ip },
    { policy: "principal", key: `${principal.tenant_id}/${principal.subject}`, tenant: principal.tenant_id, plan: principal.plan },
  ];
  const limits = direct ? await checkObjects(env, checks) : (await call(env.RATE_LIMITER, "/check", { checks, in_order: true }, requestId)).json;
  if (!limits.allowed) return refuse(429, "rate_limited", "too many requests", requestId, rateLimitHeaders(limits.decisions));
  if (route.status !== 200) return refuse(503, "service_unavailable", "no region", requestId);
  const originPath = url.pathname.replace(/^\/api/, "") + url.search;
  const origin = await signedFetch(env, route.json.origin_url.replace(/\/$/, ""), "GET", originPath, principal, cf.country, route.json.region, requestId);
  return answer(origin, rateLimitHeaders(limits.decisions));
}

async function proxy(request, env, requestId) {
  const url = new URL(request.url);
  const originPath = url.pathname.replace(/^\/api/, "") + url.search;
  const origin = await signedFetch(env, env.ORIGIN_URL, request.method, originPath, PROXY_PRINCIPAL, request.cf?.country, "default", requestId);
  return answer(origin, {});
}

export default {
  async fetch(request, env) {
    const requestId = request.headers.get("cf-ray") ?? crypto.randomUUID();
    try {
      switch (env.MODE) {
        case "proxy":
          return await proxy(request, env, requestId);
        case "warm":
          return await warm(request, env, requestId, false);
        case "warm-direct":
          return await warm(request, env, requestId, true);
        default:
          return await chain(request, env, requestId);
      }
    } catch (error) {
      console.error(`request ${requestId}: ${error.stack ?? error}`);
      return refuse(500, "internal", "internal error", requestId);
    }
  },
};
