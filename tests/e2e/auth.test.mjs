// auth-validator as voice-router meets it over the AUTH service binding: the built Worker in
// workerd answering real requests with every credential kind (JWT with JWKS from a local key
// server, API keys from KV, Twilio signatures, call-bound session tokens) and every failure.
// Tokens and signatures are made here with node:crypto, independently of the Rust code.

import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { createHash, createHmac, generateKeyPairSync, sign as cryptoSign } from "node:crypto";
import { createServer } from "node:http";
import { once } from "node:events";
import { json, startWorkers } from "./harness.mjs";

const WORKER = "auth-validator";
const ISSUER = "https://issuer.test";
const AUDIENCE = "aybiza-api";
const HS256_SECRET = "e2e-hs256-secret-0123456789abcdef-0123";
const SESSION_SECRET = "e2e-session-secret-0123456789abcdef-0123";
const ACCOUNT_A = "AC" + "a".repeat(32);
const ACCOUNT_B = "AC" + "b".repeat(32);
const TOKEN_A = "twilio-auth-token-a";
const TOKEN_B = "twilio-auth-token-b";
const PUBLIC_BASE = "https://edge.aybiza.test";

// --- Credentials, made independently of the Rust code -------------------------------------

const b64url = (data) => Buffer.from(data).toString("base64url");
const nowS = () => Math.floor(Date.now() / 1000);

function signJwt(header, claims, key) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  let signature;
  switch (header.alg) {
    case "HS256":
      signature = createHmac("sha256", key).update(input).digest();
      break;
    case "RS256":
      signature = cryptoSign("sha256", Buffer.from(input), key);
      break;
    case "ES256":
      signature = cryptoSign("sha256", Buffer.from(input), { key, dsaEncoding: "ieee-p1363" });
      break;
    default:
      signature = Buffer.alloc(0);
  }
  return `${input}.${b64url(signature)}`;
}

function claims(overrides = {}) {
  const now = nowS();
  return {
    iss: ISSUER,
    aud: AUDIENCE,
    sub: "user-1",
    tenant_id: "tenant-jwt",
    plan: "pro",
    scope: "calls:write calls:read",
    iat: now - 5,
    exp: now + 300,
    ...overrides,
  };
}

function rsaKey(kid) {
  const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  return { kid, privateKey, publicKey, jwk: { ...publicKey.export({ format: "jwk" }), kid, alg: "RS256", use: "sig" } };
}

function ecKey(kid) {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
  return { kid, privateKey, publicKey, jwk: { ...publicKey.export({ format: "jwk" }), kid, use: "sig" } };
}

function twilioSignature(token, url, params = {}) {
  const data = Object.keys(params)
    .sort()
    .reduce((acc, name) => acc + name + params[name], url);
  return createHmac("sha1", token).update(Buffer.from(data, "utf8")).digest("base64");
}

const sha256hex = (text) => createHash("sha256").update(text).digest("hex");

/** A session token in the documented format, signed here (to test expiry without waiting). */
function sessionToken(payload, secret = SESSION_SECRET) {
  const body = b64url(JSON.stringify(payload));
  const mac = createHmac("sha256", secret).update(`aybiza-session-token-v1.${body}`).digest();
  return `st_${body}.${b64url(mac)}`;
}

// --- A key server on loopback: serves the current JWKS, counts fetches, can fail ----------

async function startKeyServer(initialKeys) {
  const state = { keys: initialKeys, fetches: 0, status: 200 };
  const server = createServer((req, res) => {
    state.fetches += 1;
    if (state.status !== 200) {
      res.writeHead(state.status).end("down");
      return;
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ keys: state.keys.map((key) => key.jwk) }));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  state.url = `http://127.0.0.1:${server.address().port}/cdn-cgi/access/certs`;
  state.close = () => new Promise((resolve) => server.close(resolve));
  return state;
}

// --- Calling the Worker as voice-router does ------------------------------------------------

function authenticate(edge, envelope, requestId = "req-auth-e2e") {
  return edge.worker(WORKER).fetch("https://auth-validator/v1/authenticate", {
    method: "POST",
    headers: { "content-type": "application/json", "x-request-id": requestId },
    body: JSON.stringify(envelope),
  });
}

function envelope({ headers = {}, url = `${PUBLIC_BASE}/api/v1/calls`, method = "POST", ...rest } = {}) {
  return { method, url, headers, ...rest };
}

const bearer = (token, extra = {}) => envelope({ headers: { authorization: `Bearer ${token}` }, ...extra });

async function expectPrincipal(response, expected) {
  const body = await json(response);
  assert.equal(response.status, 200, JSON.stringify(body));
  for (const [field, value] of Object.entries(expected)) {
    assert.deepEqual(body[field], value, `${field} in ${JSON.stringify(body)}`);
  }
  return body;
}

async function expectRefusal(response, status, code, { challenge } = {}) {
  const body = await json(response);
  assert.equal(response.status, status, JSON.stringify(body));
  assert.equal(body.error?.code, code, JSON.stringify(body));
  assert.equal(body.error.request_id, response.headers.get("x-request-id"));
  assert.ok(body.error.message.length > 0);
  const header = response.headers.get("www-authenticate");
  if (challenge === null) assert.equal(header, null, "no challenge expected");
  else if (challenge) assert.match(header ?? "", challenge);
  return body;
}

const INVALID_TOKEN = /^Bearer realm="aybiza", error="invalid_token", error_description="[^"]+"$/;

function config(keyServer, extraVars = {}) {
  return {
    vars: {
      [WORKER]: {
        JWKS_URL: keyServer.url,
        JWT_ISSUER: ISSUER,
        JWT_AUDIENCE: `${AUDIENCE}, aybiza-relay`,
        JWT_LEEWAY_S: "30",
        TWILIO_ACCOUNTS: JSON.stringify({
          [ACCOUNT_A]: { tenant_id: "tenant-a", plan: "pro" },
          [ACCOUNT_B]: { tenant_id: "tenant-b", plan: "enterprise", scopes: ["voice:carrier", "voice:relay"] },
        }),
        ...extraVars,
      },
    },
    secrets: {
      [WORKER]: {
        JWT_HS256_SECRET: HS256_SECRET,
        SESSION_TOKEN_SECRET: SESSION_SECRET,
        [`TWILIO_AUTH_TOKEN_${ACCOUNT_A}`]: TOKEN_A,
        [`TWILIO_AUTH_TOKEN_${ACCOUNT_B}`]: TOKEN_B,
      },
    },
  };
}

// ----------------------------------------------------------------------------------------------

describe("auth-validator: every credential, every refusal", () => {
  const rsa1 = rsaKey("rsa-1");
  const rsa2 = rsaKey("rsa-2");
  const ec1 = ecKey("ec-1");
  let keyServer;
  let edge;

  before(async () => {
    keyServer = await startKeyServer([rsa1, ec1]);
    // Refetch on an unknown kid at once: this instance tests rotation; throttling is tested below.
    edge = await startWorkers(config(keyServer, { JWKS_REFETCH_MIN_INTERVAL_S: "0" }));
  });
  after(async () => {
    await edge?.close();
    await keyServer?.close();
  });

  test("RS256 from the JWKS: a principal, the request id through, keys cached across requests", async () => {
    const token = signJwt({ alg: "RS256", kid: "rsa-1", typ: "JWT" }, claims(), rsa1.privateKey);
    const response = await authenticate(edge, bearer(token), "hop-123");
    assert.equal(response.headers.get("x-request-id"), "hop-123");
    await expectPrincipal(response, {
      tenant_id: "tenant-jwt",
      subject: "user-1",
      scopes: ["calls:write", "calls:read"],
      plan: "pro",
      method: "jwt",
    });
    const fetchesAfterFirst = keyServer.fetches;
    assert.equal(fetchesAfterFirst, 1, "one fetch for a cold isolate");
    for (let i = 0; i < 5; i += 1) {
      await expectPrincipal(await authenticate(edge, bearer(token)), { subject: "user-1" });
    }
    assert.equal(keyServer.fetches, fetchesAfterFirst, "the hot path does not fetch");

    // The fetched set is also kept in KV for other isolates.
    const env = await edge.worker(WORKER).getEnv();
    const storageKey = `jwks:v1:${sha256hex(keyServer.url).slice(0, 32)}`;
    let stored = null;
    for (let i = 0; i < 100 && stored === null; i += 1) {
      stored = await env.AUTH_KV.get(storageKey);
      if (stored === null) await new Promise((resolve) => setImmediate(resolve));
    }
    assert.ok(stored, "JWKS cached in KV");
    const parsed = JSON.parse(stored);
    assert.ok(parsed.fetched_at_ms > 0);
    assert.deepEqual(JSON.parse(parsed.jwks).keys.map((k) => k.kid), ["rsa-1", "ec-1"]);
  });

  test("ES256 from the JWKS and HS256 with the configured secret", async () => {
    const es = signJwt({ alg: "ES256", kid: "ec-1" }, claims({ aud: ["other", "aybiza-relay"] }), ec1.privateKey);
    await expectPrincipal(await authenticate(edge, bearer(es)), { method: "jwt", tenant_id: "tenant-jwt" });
    const hs = signJwt({ alg: "HS256" }, claims({ sub: "svc-7", plan: undefined }), HS256_SECRET);
    await expectPrincipal(await authenticate(edge, bearer(hs)), { subject: "svc-7", plan: "free" });
  });

  test("key rotation: an unknown kid fetches the set again and verifies", async () => {
    keyServer.keys = [rsa2, ec1];
    const before = keyServer.fetches;
    const token = signJwt({ alg: "RS256", kid: "rsa-2" }, claims(), rsa2.privateKey);
    await expectPrincipal(await authenticate(edge, bearer(token)), { subject: "user-1" });
    assert.equal(keyServer.fetches, before + 1);
    // The rotated-out key is gone after the refetch.
    const old = signJwt({ alg: "RS256", kid: "rsa-1" }, claims(), rsa1.privateKey);
    await expectRefusal(await authenticate(edge, bearer(old)), 401, "token_unknown_kid", { challenge: INVALID_TOKEN });
  });

  test("every JWT refusal has its own code and a Bearer invalid_token challenge", async (t) => {
    const good = (overrides, header = { alg: "RS256", kid: "rsa-2" }) => signJwt(header, claims(overrides), rsa2.privateKey);
    const publicPem = rsa2.publicKey.export({ type: "spki", format: "pem" });
    const valid = good();
    const [h, p, s] = valid.split(".");
    const cases = [
      ["expired", good({ exp: nowS() - 120 }), "token_expired"],
      ["not yet valid", good({ nbf: nowS() + 600 }), "token_not_yet_valid"],
      ["issued in the future", good({ iat: nowS() + 600 }), "token_issued_in_future"],
      ["wrong issuer", good({ iss: "https://evil.test" }), "token_wrong_issuer"],
      ["wrong audience", good({ aud: "someone-else" }), "token_wrong_audience"],
      ["no exp", good({ exp: undefined }), "token_missing_claim"],
      ["no tenant", good({ tenant_id: undefined }), "token_missing_claim"],
      ["alg none", `${b64url('{"alg":"none"}')}.${p}.`, "token_alg_none"],
      ["unsupported alg", signJwt({ alg: "HS512" }, claims(), HS256_SECRET), "token_alg_unsupported"],
      ["HS256 with the RSA public key as secret", signJwt({ alg: "HS256", kid: "rsa-2" }, claims(), publicPem), "token_alg_confusion"],
      ["RS256 aimed at the EC key", signJwt({ alg: "RS256", kid: "ec-1" }, claims(), rsa2.privateKey), "token_alg_key_mismatch"],
      ["signed by another key", signJwt({ alg: "RS256", kid: "rsa-2" }, claims(), rsa1.privateKey), "token_bad_signature"],
      ["tampered claims", `${h}.${b64url(JSON.stringify(claims({ tenant_id: "tenant-evil" })))}.${s}`, "token_bad_signature"],
      ["truncated signature", `${h}.${p}.${s.slice(0, 40)}`, "token_bad_signature_length"],
      ["two segments", `${h}.${p}`, "token_malformed"],
      ["bad base64", `${h}.${p}.${s}=`, "token_bad_encoding"],
      ["header not JSON", `${b64url("alg=RS256")}.${p}.${s}`, "token_bad_header"],
      ["crit header", signJwt({ alg: "RS256", kid: "rsa-2", crit: ["x"], x: 1 }, claims(), rsa2.privateKey), "token_crit_unsupported"],
      ["oversized", `${h}.${b64url("x".repeat(9000))}.${s}`, "token_too_large"],
      ["unknown kid even after a refetch", signJwt({ alg: "RS256", kid: "nobody" }, claims(), rsa2.privateKey), "token_unknown_kid"],
    ];
    for (const [name, token, code] of cases) {
      await t.test(name, async () => {
        const body = await expectRefusal(await authenticate(edge, bearer(token)), 401, code, { challenge: INVALID_TOKEN });
        assert.ok(!body.error.message.includes(token.slice(-20)), "the message does not echo the token");
      });
    }
  });

  test("API keys: stored as SHA-256 in KV; unknown, revoked, expired and malformed are distinct", async () => {
    const env = await edge.worker(WORKER).getEnv();
    const keys = {
      live: "ak_live_" + "L".repeat(24),
      revoked: "ak_live_" + "R".repeat(24),
      expired: "ak_live_" + "E".repeat(24),
    };
    const record = (key, extra = {}) =>
      JSON.stringify({ key_sha256: sha256hex(key), tenant_id: "tenant-k", subject: "key_1", scopes: ["calls:write"], plan: "team", ...extra });
    await env.AUTH_KV.put(`apikey:${sha256hex(keys.live)}`, record(keys.live));
    await env.AUTH_KV.put(`apikey:${sha256hex(keys.revoked)}`, record(keys.revoked, { revoked_at: nowS() - 10 }));
    await env.AUTH_KV.put(`apikey:${sha256hex(keys.expired)}`, record(keys.expired, { expires_at: nowS() - 10 }));

    const expected = { tenant_id: "tenant-k", subject: "key_1", scopes: ["calls:write"], plan: "team", method: "api_key" };
    await expectPrincipal(await authenticate(edge, bearer(keys.live)), expected);
    await expectPrincipal(await authenticate(edge, envelope({ headers: { "x-api-key": keys.live } })), expected);

    await expectRefusal(await authenticate(edge, bearer("ak_live_" + "U".repeat(24))), 401, "api_key_unknown", { challenge: INVALID_TOKEN });
    await expectRefusal(await authenticate(edge, envelope({ headers: { "x-api-key": keys.revoked } })), 401, "api_key_revoked", {
      challenge: /^Bearer realm="aybiza"$/,
    });
    await expectRefusal(await authenticate(edge, bearer(keys.expired)), 401, "api_key_expired");
    await expectRefusal(await authenticate(edge, bearer("ak_short")), 401, "api_key_malformed");
    // A key lacking the route's scope: authenticated but forbidden.
    await expectRefusal(
      await authenticate(edge, envelope({ headers: { "x-api-key": keys.live }, required_scopes: ["agents:admin"] })),
      403,
      "insufficient_scope",
      { challenge: null },
    );
  });

  test("Twilio form webhook, JSON webhook (bodySHA256) and relay handshake", async () => {
    const url = `${PUBLIC_BASE}/voice/twilio/incoming?tenant=a`;
    const params = { AccountSid: ACCOUNT_A, CallSid: "CA0001", From: "+14155550100", To: "+18005550101", SpeechResult: "hi there & more" };
    const body = new URLSearchParams(params).toString();
    const form = (signature, extra = {}) =>
      envelope({
        url,
        body,
        headers: { "x-twilio-signature": signature, "content-type": "application/x-www-form-urlencoded" },
        required_scopes: ["voice:carrier"],
        ...extra,
      });
    await expectPrincipal(await authenticate(edge, form(twilioSignature(TOKEN_A, url, params))), {
      tenant_id: "tenant-a",
      subject: ACCOUNT_A,
      scopes: ["voice:carrier"],
      plan: "pro",
      method: "twilio_signature",
    });

    const jsonBody = JSON.stringify({ AccountSid: ACCOUNT_B, event: "call.completed" });
    const jsonUrl = `${PUBLIC_BASE}/voice/twilio/status?bodySHA256=${sha256hex(jsonBody)}`;
    await expectPrincipal(
      await authenticate(
        edge,
        envelope({
          url: jsonUrl,
          body: jsonBody,
          headers: { "x-twilio-signature": twilioSignature(TOKEN_B, jsonUrl), "content-type": "application/json" },
        }),
      ),
      { tenant_id: "tenant-b", plan: "enterprise" },
    );

    // The relay handshake names no account: every configured token is tried.
    const relay = `wss://edge.aybiza.test/voice/relay/CA0001`;
    await expectPrincipal(
      await authenticate(
        edge,
        envelope({ method: "GET", url: relay, call_id: "CA0001", headers: { "x-twilio-signature": twilioSignature(TOKEN_B, relay) }, required_scopes: ["voice:relay"] }),
      ),
      { tenant_id: "tenant-b", method: "twilio_signature" },
    );
  });

  test("Twilio refusals", async (t) => {
    const url = `${PUBLIC_BASE}/voice/twilio/incoming`;
    const params = { AccountSid: ACCOUNT_A, CallSid: "CA0002", Digits: "1234" };
    const body = new URLSearchParams(params).toString();
    const signature = twilioSignature(TOKEN_A, url, params);
    const form = (overrides) =>
      envelope({ url, body, headers: { "x-twilio-signature": signature, "content-type": "application/x-www-form-urlencoded" }, ...overrides });
    const cases = [
      ["signed with another account's token", form({ headers: { "x-twilio-signature": twilioSignature(TOKEN_B, url, params), "content-type": "application/x-www-form-urlencoded" } }), 401, "twilio_bad_signature"],
      ["a tampered parameter", form({ body: body.replace("1234", "9999") }), 401, "twilio_bad_signature"],
      ["the internal URL instead of the public one", form({ url: "https://voice-router.internal/voice/twilio/incoming" }), 401, "twilio_bad_signature"],
      ["an account that is not configured", form({ body: body.replace(ACCOUNT_A, "AC" + "c".repeat(32)) }), 401, "twilio_unknown_account"],
      ["not base64", form({ headers: { "x-twilio-signature": "%%%", "content-type": "application/x-www-form-urlencoded" } }), 401, "twilio_signature_malformed"],
      ["a JSON body no signature covers", form({ body: "{}", headers: { "x-twilio-signature": signature, "content-type": "application/json" } }), 401, "twilio_body_unsigned"],
      [
        "a JSON body that does not match bodySHA256",
        envelope({ url: `${url}?bodySHA256=${sha256hex("{}")}`, body: '{"x":1}', headers: { "x-twilio-signature": twilioSignature(TOKEN_A, `${url}?bodySHA256=${sha256hex("{}")}`), "content-type": "application/json" } }),
        401,
        "twilio_body_hash_mismatch",
      ],
      ["a carrier lacking the route's scope", form({ required_scopes: ["agents:admin"] }), 403, "insufficient_scope"],
    ];
    for (const [name, request, status, code] of cases) {
      await t.test(name, async () => {
        await expectRefusal(await authenticate(edge, request), status, code);
      });
    }
  });

  test("session tokens: minted for one call, refused for another call, after expiry, off call routes", async () => {
    const principal = { tenant_id: "tenant-k", subject: "key_1", scopes: ["calls:write"], plan: "team", method: "api_key" };
    const minted = await edge.worker(WORKER).fetch("https://auth-validator/v1/session-tokens", {
      method: "POST",
      body: JSON.stringify({ call_id: "CA0100", principal, scopes: ["voice:relay"], ttl_s: 60 }),
    });
    const token = await json(minted);
    assert.equal(minted.status, 200, JSON.stringify(token));
    assert.match(token.token, /^st_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    assert.equal(token.call_id, "CA0100");
    assert.ok(token.expires_at > nowS() && token.expires_at <= nowS() + 61);

    const relay = (call, tokenValue = token.token) =>
      envelope({ method: "GET", url: `wss://edge.aybiza.test/voice/relay/${call}?session_token=${tokenValue}`, call_id: call, required_scopes: ["voice:relay"] });
    await expectPrincipal(await authenticate(edge, relay("CA0100")), {
      tenant_id: "tenant-k",
      subject: "key_1",
      scopes: ["voice:relay"],
      method: "session_token",
    });
    await expectRefusal(await authenticate(edge, relay("CA0200")), 401, "session_token_wrong_call", { challenge: INVALID_TOKEN });
    const unbound = envelope({ url: `${PUBLIC_BASE}/api/v1/calls?session_token=${token.token}` });
    await expectRefusal(await authenticate(edge, unbound), 401, "session_token_not_call_bound");
    const expired = sessionToken({ v: 1, cid: "CA0100", tid: "tenant-k", sub: "key_1", pln: "team", scp: ["voice:relay"], iat: nowS() - 600, exp: nowS() - 1 });
    await expectRefusal(await authenticate(edge, relay("CA0100", expired)), 401, "session_token_expired");
    const forged = sessionToken({ v: 1, cid: "CA0100", tid: "tenant-evil", sub: "x", pln: "team", scp: ["voice:relay"], iat: nowS(), exp: nowS() + 60 }, "not-the-secret-not-the-secret-not-the-secret");
    await expectRefusal(await authenticate(edge, relay("CA0100", forged)), 401, "session_token_bad_signature");
    // Also accepted as a bearer token on the call's own routes.
    await expectPrincipal(await authenticate(edge, bearer(token.token, { call_id: "CA0100" })), { method: "session_token" });

    const badCall = await edge.worker(WORKER).fetch("https://auth-validator/v1/session-tokens", {
      method: "POST",
      body: JSON.stringify({ call_id: "../../etc", principal }),
    });
    await expectRefusal(badCall, 400, "invalid_call_id");
  });

  test("scope checks: 403 with an insufficient_scope challenge for bearer credentials", async () => {
    const token = signJwt({ alg: "RS256", kid: "rsa-2" }, claims(), rsa2.privateKey);
    await expectPrincipal(await authenticate(edge, bearer(token, { required_scopes: ["calls:write"] })), { subject: "user-1" });
    const body = await expectRefusal(await authenticate(edge, bearer(token, { required_scopes: ["calls:write", "agents:admin"] })), 403, "insufficient_scope", {
      challenge: /^Bearer realm="aybiza", error="insufficient_scope", scope="agents:admin"$/,
    });
    assert.match(body.error.message, /agents:admin/);
  });

  test("requests without exactly one usable credential", async (t) => {
    const token = signJwt({ alg: "HS256" }, claims(), HS256_SECRET);
    const cases = [
      ["no credential", envelope(), 401, "missing_credential", /^Bearer realm="aybiza"$/],
      ["Basic credentials", envelope({ headers: { authorization: "Basic dXNlcjpwYXNz" } }), 401, "unsupported_auth_scheme", /^Bearer realm="aybiza"$/],
      ["an empty bearer", envelope({ headers: { authorization: "Bearer " } }), 400, "empty_credential", /error="invalid_request"/],
      ["two credentials", envelope({ headers: { authorization: `Bearer ${token}`, "x-api-key": "ak_live_" + "L".repeat(24) } }), 400, "multiple_credentials", /error="invalid_request"/],
      ["a relative URL", bearer(token, { url: "/api/v1/calls" }), 400, "invalid_url", undefined],
    ];
    for (const [name, request, status, code, challenge] of cases) {
      await t.test(name, async () => {
        await expectRefusal(await authenticate(edge, request), status, code, { challenge });
      });
    }
  });

  test("envelopes that are not one: 400, 413, 405, 404", async () => {
    const worker = edge.worker(WORKER);
    const notJson = await worker.fetch("https://auth-validator/v1/authenticate", { method: "POST", body: "{nope" });
    await expectRefusal(notJson, 400, "invalid_request");
    const noUrl = await worker.fetch("https://auth-validator/v1/authenticate", { method: "POST", body: '{"method":"GET"}' });
    await expectRefusal(noUrl, 400, "invalid_request");
    const huge = await worker.fetch("https://auth-validator/v1/authenticate", {
      method: "POST",
      body: JSON.stringify(envelope({ body: "x".repeat(300 * 1024) })),
    });
    await expectRefusal(huge, 413, "payload_too_large");
    await expectRefusal(await worker.fetch("https://auth-validator/v1/authenticate"), 405, "method_not_allowed");
    await expectRefusal(await worker.fetch("https://auth-validator/v1/nothing", { method: "POST" }), 404, "not_found");
  });
});

describe("voice-router remembers a verified principal: the revocation delay of an API key", () => {
  // docs/operations.md: a revoked API key is refused within PRINCIPAL_CACHE_SECS (30 s by
  // default, the most allowed). Two seconds here, so the test waits out the whole delay.
  const DELAY_S = 2;
  const NEW_YORK = JSON.stringify({ country: "US", regionCode: "NY", continent: "NA", latitude: "40.71", longitude: "-74.01", colo: "EWR" });
  let edge;
  before(async () => {
    edge = await startWorkers({ vars: { "voice-router": { PRINCIPAL_CACHE_SECS: String(DELAY_S) } } });
  });
  after(async () => edge?.close());

  test("a key revoked in KV is refused through the edge within the documented delay, and stays refused", async () => {
    const env = await edge.worker(WORKER).getEnv();
    const key = "ak_live_" + "C".repeat(24);
    const record = (extra = {}) =>
      JSON.stringify({ key_sha256: sha256hex(key), tenant_id: "tenant-c", subject: "key_c", scopes: ["calls:read"], plan: "team", ...extra });
    await env.AUTH_KV.put(`apikey:${sha256hex(key)}`, record());
    // An unknown call of an authenticated client is a 404; a refused key is a 401 before that.
    const read = () => fetch(`${edge.url}/api/v1/calls/call_nope`, { headers: { "x-api-key": key, "mf-cf-blob": NEW_YORK } });

    const verifiedAt = Date.now();
    const first = await read();
    assert.equal(first.status, 404, await first.text());
    await env.AUTH_KV.put(`apikey:${sha256hex(key)}`, record({ revoked_at: nowS() - 1 }));
    // The key was verified once and is remembered; a request for another route's scope is not
    // served from memory: auth-validator answers it (and refuses the revoked key at once).
    const write = await fetch(`${edge.url}/api/v1/calls`, {
      method: "POST",
      headers: { "x-api-key": key, "mf-cf-blob": NEW_YORK, "content-type": "application/json" },
      body: JSON.stringify({ agent_id: "ava" }),
    });
    assert.equal(write.status, 401, "a scope the remembered principal lacks goes to auth-validator");

    let refusedAt;
    while (Date.now() - verifiedAt < (DELAY_S + 5) * 1000) {
      const answer = await read();
      if (answer.status === 401) {
        assert.equal((await answer.json()).error.code, "api_key_revoked");
        refusedAt = Date.now();
        break;
      }
      assert.equal(answer.status, 404, "until refused, the remembered key is served as before");
      await answer.body?.cancel();
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    assert.ok(refusedAt, "the revoked key was never refused");
    assert.ok(refusedAt - verifiedAt <= DELAY_S * 1000 + 500, `refused ${refusedAt - verifiedAt} ms after it was verified`);
    for (let i = 0; i < 3; i++) assert.equal((await read()).status, 401, "refused from then on");
  });
});

describe("auth-validator: the JWKS refetch is rate-limited", () => {
  const rsa1 = rsaKey("rsa-1");
  const rsa2 = rsaKey("rsa-2");
  let keyServer;
  let edge;

  before(async () => {
    keyServer = await startKeyServer([rsa1]);
    edge = await startWorkers(config(keyServer, { JWKS_REFETCH_MIN_INTERVAL_S: "3600" }));
  });
  after(async () => {
    await edge?.close();
    await keyServer?.close();
  });

  test("unknown kids right after a fetch do not reach the key server", async () => {
    const first = signJwt({ alg: "RS256", kid: "rsa-1" }, claims(), rsa1.privateKey);
    await expectPrincipal(await authenticate(edge, bearer(first)), { subject: "user-1" });
    assert.equal(keyServer.fetches, 1);
    keyServer.keys = [rsa2];
    for (const kid of ["rsa-2", "invented-1", "invented-2", "invented-3"]) {
      const token = signJwt({ alg: "RS256", kid }, claims(), rsa2.privateKey);
      await expectRefusal(await authenticate(edge, bearer(token)), 401, "token_unknown_kid");
    }
    assert.equal(keyServer.fetches, 1, "throttled: no refetch within JWKS_REFETCH_MIN_INTERVAL_S");
  });
});

describe("auth-validator: keys from KV when the key server is down", () => {
  const rsa1 = rsaKey("rsa-1");
  let keyServer;
  let edge;

  before(async () => {
    keyServer = await startKeyServer([rsa1]);
    keyServer.status = 503;
    edge = await startWorkers(config(keyServer));
  });
  after(async () => {
    await edge?.close();
    await keyServer?.close();
  });

  test("nothing cached and the key server failing: one attempt, then the kid is unknown", async () => {
    const token = signJwt({ alg: "RS256", kid: "rsa-1" }, claims(), rsa1.privateKey);
    // The configured HS256 key keeps the set non-empty, so this is a 401, not a 503.
    await expectRefusal(await authenticate(edge, bearer(token)), 401, "token_unknown_kid");
    assert.equal(keyServer.fetches, 1);
  });

  test("a copy another isolate stored in KV is used without a fetch", async () => {
    const env = await edge.worker(WORKER).getEnv();
    const storageKey = `jwks:v1:${sha256hex(keyServer.url).slice(0, 32)}`;
    await env.AUTH_KV.put(storageKey, JSON.stringify({ fetched_at_ms: Date.now(), jwks: JSON.stringify({ keys: [rsa1.jwk] }) }));
    const fetches = keyServer.fetches;
    const token = signJwt({ alg: "RS256", kid: "rsa-1" }, claims(), rsa1.privateKey);
    await expectPrincipal(await authenticate(edge, bearer(token)), { subject: "user-1" });
    assert.equal(keyServer.fetches, fetches, "served from KV");
  });
});

describe("auth-validator: JWT only from a key server that is down", () => {
  const rsa1 = rsaKey("rsa-1");
  let keyServer;
  let edge;

  before(async () => {
    keyServer = await startKeyServer([rsa1]);
    keyServer.status = 500;
    const settings = config(keyServer);
    // Empty counts as unset (and overrides a developer's wrangler/.dev.vars).
    settings.secrets[WORKER].JWT_HS256_SECRET = "";
    edge = await startWorkers(settings);
  });
  after(async () => {
    await edge?.close();
    await keyServer?.close();
  });

  test("nothing fetched and nothing cached: 503 jwks_unavailable", async () => {
    const token = signJwt({ alg: "RS256", kid: "rsa-1" }, claims(), rsa1.privateKey);
    await expectRefusal(await authenticate(edge, bearer(token)), 503, "jwks_unavailable");
  });
});

describe("auth-validator: configuration", () => {
  test("with nothing configured, only API keys are accepted", async () => {
    // Empty values count as unset (and override a developer's wrangler/.dev.vars).
    const edge = await startWorkers({
      vars: { [WORKER]: { TWILIO_ACCOUNTS: "" } },
      secrets: { [WORKER]: { JWT_HS256_SECRET: "", SESSION_TOKEN_SECRET: "" } },
    });
    try {
      const token = signJwt({ alg: "HS256" }, claims(), HS256_SECRET);
      await expectRefusal(await authenticate(edge, bearer(token)), 401, "auth_method_not_enabled");
      const twilio = envelope({ headers: { "x-twilio-signature": twilioSignature(TOKEN_A, `${PUBLIC_BASE}/x`) } });
      await expectRefusal(await authenticate(edge, twilio), 401, "auth_method_not_enabled");
      const mint = await edge.worker(WORKER).fetch("https://auth-validator/v1/session-tokens", {
        method: "POST",
        body: JSON.stringify({ call_id: "CA1", principal: { tenant_id: "t", subject: "s", plan: "p", method: "jwt" } }),
      });
      await expectRefusal(mint, 401, "auth_method_not_enabled");
    } finally {
      await edge.close();
    }
  });

  test("invalid configuration: every problem in /health, 500 misconfigured, no secret in either", async () => {
    const edge = await startWorkers({
      vars: { [WORKER]: { JWKS_URL: "http://keys.example.com/certs", JWT_LEEWAY_S: "soon", TWILIO_ACCOUNTS: "[]" } },
      secrets: { [WORKER]: { JWT_HS256_SECRET: "too-short-secret-xyz", SESSION_TOKEN_SECRET: "also-too-short-abc" } },
    });
    try {
      const health = await edge.worker(WORKER).fetch("https://auth-validator/health");
      const report = await json(health);
      assert.equal(health.status, 503, JSON.stringify(report));
      assert.equal(report.bindings.AUTH_KV.ok, true);
      const problems = report.bindings.CONFIG.error;
      for (const name of ["JWT_HS256_SECRET", "JWKS_URL", "JWT_LEEWAY_S", "SESSION_TOKEN_SECRET", "TWILIO_ACCOUNTS"]) {
        assert.ok(problems.includes(name), `${name} in ${problems}`);
      }
      assert.ok(!problems.includes("too-short-secret-xyz") && !problems.includes("also-too-short-abc"), problems);
      const body = await expectRefusal(await authenticate(edge, bearer("x.y.z")), 500, "misconfigured");
      assert.ok(!JSON.stringify(body).includes("too-short"), JSON.stringify(body));
    } finally {
      await edge.close();
    }
  });
});
